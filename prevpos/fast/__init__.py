"""Speed: the CPU thread setting, a captured training step for GPUs, and the pieces of `python -m prevpos bench`."""
