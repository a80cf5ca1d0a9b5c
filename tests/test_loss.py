import math

import torch

from prevpos.loss import correct_predictions, previous_token_loss


def one_hot_logits(tokens: torch.Tensor, d_vocab: int, value: float) -> torch.Tensor:
    """Logits that put `value` on the previous token at every position >= 1."""
    logits = torch.zeros(*tokens.shape, d_vocab)
    logits[:, 1:].scatter_(-1, tokens[:, :-1, None], value)
    return logits


def test_uniform_logits_give_log_vocab():
    tokens = torch.tensor([[4, 0, 1, 2]])
    assert math.isclose(previous_token_loss(torch.zeros(1, 4, 5), tokens).item(), math.log(5), rel_tol=1e-12)


def test_loss_matches_hand_computed_softmax():
    tokens = torch.tensor([[4, 0, 1], [4, 3, 3]])
    logits = one_hot_logits(tokens, 5, 2.0)
    expected = -math.log(math.exp(2) / (math.exp(2) + 4))
    assert math.isclose(previous_token_loss(logits, tokens).item(), expected, rel_tol=1e-12)


def test_loss_is_float64_and_ignores_position_zero():
    tokens = torch.tensor([[4, 0, 1]])
    logits = one_hot_logits(tokens, 5, 30.0)
    logits[:, 0] = torch.randn(5) * 100  # position 0 has no target
    loss = previous_token_loss(logits, tokens)
    assert loss.dtype == torch.float64 and loss.item() < 1e-10


def test_accuracy_counts_positions_from_one():
    tokens = torch.tensor([[4, 0, 1, 2]])
    logits = one_hot_logits(tokens, 5, 1.0)
    logits[0, 2, 3] = 5.0  # wrong at position 2 only
    assert correct_predictions(logits, tokens).tolist() == [[True, False, True]]
