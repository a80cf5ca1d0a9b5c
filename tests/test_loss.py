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


def test_held_out_metrics_match_torchmetrics_over_unequal_batches():
    """HeldOutMetrics' one update per batch gives what the 11 torchmetrics objects it replaced gave: a weighted mean
    loss, MulticlassAccuracy (micro), and a mean per position; NaN stays NaN; reset starts over."""
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy

    from prevpos.metrics import HeldOutMetrics

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(size, 6, 7, generator=generator) * 3, torch.randint(0, 7, (size, 6), generator=generator))
               for size in (5, 3, 8)]
    metrics, loss, accuracy = HeldOutMetrics(n_ctx=6), MeanMetric(), MulticlassAccuracy(7, average="micro")
    by_position = [MeanMetric() for _ in range(5)]
    for logits, tokens in batches:
        metrics.update(logits, tokens)
        loss.update(previous_token_loss(logits, tokens), weight=tokens.shape[0])
        accuracy.update(logits[:, 1:].argmax(-1), tokens[:, :-1])
        for pos, mean in enumerate(by_position):
            mean.update(correct_predictions(logits, tokens)[:, pos].float())
    scores = metrics.compute()
    assert list(scores) == ["loss", "acc", "acc_pos1", "acc_pos2", "acc_pos3", "acc_pos4", "acc_pos5"]
    assert math.isclose(scores["loss"].item(), loss.compute().item(), rel_tol=1e-6)
    assert 0.05 < scores["acc"].item() < 0.95 and scores["acc"].item() == accuracy.compute().item()
    for pos, mean in enumerate(by_position, start=1):
        assert math.isclose(scores[f"acc_pos{pos}"].item(), mean.compute().item(), rel_tol=1e-6)

    metrics.reset()
    logits, tokens = batches[0]
    metrics.update(torch.full_like(logits, float("nan")), tokens)
    assert math.isnan(metrics.compute()["loss"].item())
