"""prevpos: train a transformer without positional embeddings to output the previous token, and watch how."""

__version__ = "0.1.0"
