"""Is the explanation sufficient and necessary? Loss recovered by the explanation's parts and by the algorithm."""

from typing import Callable

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from prevpos.algorithm import algorithm_logits, algorithm_patterns, read_params
from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.circuits import cached_qk_terms, decomposable, losses_with_score_edits, term_ablation
from prevpos.figures import heatmap
from prevpos.loss import previous_token_loss

EXPLAINED = ("direct", "qk_comp")  # "not my own token" + "recent": what the explanation says layer 1 uses
UNEXPLAINED = ("k_comp", "q_comp")


def recovered(base: float, x: float, model: float) -> float:
    """Fraction of the loss gap closed, as in causal scrubbing: 1 at the model's loss, 0 at the baseline's."""
    return (base - x) / (base - model)


def not_applicable(model: HookedTransformer) -> str | None:
    """None if the explanation is about this model's shape, else why not (one line)."""
    reason = decomposable(model)
    if reason is None and model.cfg.n_layers != 2:
        reason = f"it explains 2 layers, not {model.cfg.n_layers}"
    return reason


def algorithm_unfit(model: HookedTransformer, bos: bool = True) -> str | None:
    """None if the hand-written algorithm (prevpos.algorithm) is about this model, trained on data with BOS or
    without (`bos`), else why not (one line)."""
    if not bos:  # its scores are of BOS at position 0: here an untrained token
        return "its hand-written algorithm, which counts from BOS, and the run's sequences have none"
    if model.cfg.n_heads != 1:
        return f"its hand-written algorithm, which has the numbers of one head per layer, not {model.cfg.n_heads}"
    if model.W_pos.any():  # the algorithm reads W_E alone: exact only where W_pos is zero
        return "its hand-written algorithm, which reads no positional embedding, and this model has learned ones"
    biased = [name for name, weight in model.named_parameters() if name.rsplit(".", 1)[-1].startswith("b_")
              and weight.any()]  # zero in prevpos's models; a loaded state_dict may hold them
    if biased:
        return f"its hand-written algorithm, which reads no biases, and this model has non-zero {', '.join(biased[:2])}"
    return None


def in_every_head(edits: list[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    """One score edit made of one per head (each edits its own head's scores in place)."""
    def edit(scores: Tensor) -> Tensor:
        for head_edit in edits:
            scores = head_edit(scores)
        return scores
    return edit


def explanation_losses(model: HookedTransformer, tokens: Tensor, terms: dict[int, dict[str, Tensor]],
                       resid_pre: Tensor | None = None, n_tokens: int | None = None,
                       bos: bool = True) -> dict[str, float]:
    """Losses with every layer-1 head's scores kept to the explained terms (the others zero-ablated), kept to the
    other terms, made uniform (base: zero scores, so the causal softmax spreads attention evenly); and the
    algorithm's, for a model it is about (algorithm_unfit).
    `terms`: {head: qk_terms(model, cache of tokens, 1, head)} for every layer-1 head; `resid_pre`: that cache's
    layer-1 input, to skip layer 0; `n_tokens`, `bos`: the data's (the algorithm reads its numbers over those
    tokens, and counts from BOS)."""
    def kept_to(names: tuple[str, ...]) -> Callable[[Tensor], Tensor]:
        return in_every_head([term_ablation(head, head_terms, names) for head, head_terms in terms.items()])

    edits = {"restricted": kept_to(UNEXPLAINED), "excluded": kept_to(EXPLAINED), "base": torch.zeros_like}
    losses = losses_with_score_edits(model, tokens, 1, edits, resid_pre)  # one forward pass for the three, at most
    if algorithm_unfit(model, bos) is None:
        params = read_params(model, n_tokens)
        losses["algorithm"] = previous_token_loss(algorithm_logits(params, tokens, model.cfg.d_vocab), tokens).item()
    return losses


class Explanation(AnalysisPlugin):
    """% of the loss gap (uniform layer-1 attention -> the model) recovered by the explanation.

    `restricted`: every layer-1 head keeps only the direct and qk_comp score terms (sufficiency: ~1 if they suffice;
    the default run, 0.95); `excluded`: only k_comp and q_comp (necessity: ~0 if nothing else carries the signal;
    the default run keeps 0.73, so they are redundant, not useless); `algorithm`: prevpos.algorithm's 16 numbers
    read off the weights, nothing else (one head per layer, BOS in the data, no learned positions or biases).
    Skips, with a one-line note, models that are not 2-layer attention-only.
    The losses are logged from step 0; the fractions only once the gap is at least `min_gap` (at random init
    both losses are ~ln(vocab) and their ratio is noise over noise, e.g. 1638).

    Args:
        min_gap: Smallest L_base - L_model (nats) at which the recovered fractions mean something.
    """

    def __init__(self, min_gap: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.min_gap = min_gap

    def analyze(self, run: ProbeRun) -> Findings:
        reason = not_applicable(run.model)
        if reason is not None:
            return self.skip("explanation/skipped", reason)
        findings = Findings()
        terms = {h: cached_qk_terms(run, 1, h) for h in range(run.model.cfg.n_heads)}
        losses = explanation_losses(run.model, run.tokens, terms, run.cache["resid_pre", 1], run.n_tokens, run.bos)
        losses["model"] = run.loss
        for name, value in losses.items():
            findings.scalar(f"explanation/{name}_loss", value)
        for name in ("restricted", "excluded", "algorithm"):
            if name in losses and losses["base"] - losses["model"] >= self.min_gap:
                fraction = recovered(losses["base"], losses[name], losses["model"])
                findings.scalar(f"explanation/{name}_recovered", fraction)
        reason = algorithm_unfit(run.model, run.bos)
        if reason is None:
            self._algorithm_findings(findings, run)
            return findings
        return self.skip("explanation/skipped", reason, findings)

    def _algorithm_findings(self, findings: Findings, run: ProbeRun) -> None:
        params = read_params(run.model, run.n_tokens)
        _, layer1 = algorithm_patterns(params, run.tokens, run.model.cfg.d_vocab - 1)
        findings.figure("explanation/algorithm_pattern_L1", heatmap, matrix=layer1.mean(0),
                        title="layer 1 attention predicted by the algorithm", x_labels=run.pos_labels,
                        y_labels=run.pos_labels, xlabel="source position", ylabel="destination position",
                        colorbar_label="attention")
        findings.text("explanation/algorithm_params", params.table())
