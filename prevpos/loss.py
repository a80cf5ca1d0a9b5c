"""The task's loss and accuracy: at position i >= 1 predict the token at i - 1 (position 0 has no target)."""

import torch
from jaxtyping import Float, Int
from torch import Tensor


def targets(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos-1"]:
    return tokens[:, :-1]


def previous_token_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Cross entropy averaged over batch and positions 1.., with log-softmax in float64 (the tutorial's loss)."""
    log_probs = logits[:, 1:].to(torch.float64).log_softmax(dim=-1)
    return -log_probs.gather(-1, targets(tokens)[..., None]).mean()


def previous_token_losses(logits: dict, tokens: Int[Tensor, "batch pos"]) -> dict:
    """previous_token_loss of each logits in `logits` (same tokens), as floats read in one host read (GPU sync)."""
    losses = torch.stack([previous_token_loss(value, tokens) for value in logits.values()]).tolist()
    return dict(zip(logits, losses))


def correct_predictions(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Boolean [batch, pos-1]: was the argmax at position i the token at i - 1?"""
    return logits[:, 1:].argmax(-1) == targets(tokens)
