"""The pieces of `python -m prevpos bench`: the plain-PyTorch baseline, the timed runs and what they measure."""
