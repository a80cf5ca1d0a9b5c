"""Is the explanation sufficient and necessary? Loss recovered by the explanation's parts and by the algorithm."""

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from prevpos.algorithm import algorithm_logits, algorithm_patterns, read_params
from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.circuits import cached_qk_terms, decomposable, run_with_score_edits, term_ablation
from prevpos.figures import heatmap
from prevpos.loss import previous_token_losses

EXPLAINED = ("direct", "qk_comp")  # "not my own token" + "recent": what the explanation says layer 1 uses
UNEXPLAINED = ("k_comp", "q_comp")


def recovered(base: float, x: float, model: float) -> float:
    """Fraction of the loss gap closed, as in causal scrubbing: 1 at the model's loss, 0 at the baseline's."""
    return (base - x) / (base - model)


def not_applicable(model: HookedTransformer) -> str | None:
    """None if the explanation is about this model's shape, else why not (one line)."""
    reason = decomposable(model)
    if reason is None and (model.cfg.n_layers != 2 or model.cfg.n_heads != 1):
        reason = f"it explains 2 layers of 1 head, not {model.cfg.n_layers} layers of {model.cfg.n_heads}"
    return reason


def explanation_losses(model: HookedTransformer, tokens: Tensor, terms: dict[str, Tensor],
                       resid_pre: Tensor | None = None) -> dict[str, float]:
    """Losses with layer 1's scores kept to the explained terms (the others zero-ablated), kept to the other
    terms, made uniform (base: zero scores, so the causal softmax spreads attention evenly); and the algorithm's.
    `terms`: qk_terms(model, cache of tokens, 1, 0); `resid_pre`: that cache's layer-1 input, to skip layer 0."""
    edits = {"restricted": term_ablation(0, terms, UNEXPLAINED), "excluded": term_ablation(0, terms, EXPLAINED),
             "base": torch.zeros_like}
    logits = run_with_score_edits(model, tokens, 1, edits, resid_pre)  # one forward pass for the three
    logits["algorithm"] = algorithm_logits(read_params(model), tokens, model.cfg.d_vocab)
    return previous_token_losses(logits, tokens)


class Explanation(AnalysisPlugin):
    """% of the loss gap (uniform layer-1 attention -> the model) recovered by the explanation.

    `restricted`: layer 1 keeps only the direct and qk_comp score terms (sufficiency, expect ~1);
    `excluded`: only k_comp and q_comp (necessity, expect ~0); `algorithm`: prevpos.algorithm's 16 numbers
    read off the weights, nothing else. Skips, with a one-line note, models that are not 2x1-head attention-only.
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
        losses = explanation_losses(run.model, run.tokens, cached_qk_terms(run, 1, 0), run.cache["resid_pre", 1])
        losses["model"] = run.loss
        for name, value in losses.items():
            findings.scalar(f"explanation/{name}_loss", value)
        for name in ("restricted", "excluded", "algorithm"):
            if losses["base"] - losses["model"] >= self.min_gap:
                fraction = recovered(losses["base"], losses[name], losses["model"])
                findings.scalar(f"explanation/{name}_recovered", fraction)
        params = read_params(run.model)
        _, layer1 = algorithm_patterns(params, run.tokens, run.model.cfg.d_vocab - 1)
        findings.figure("explanation/algorithm_pattern_L1", heatmap, matrix=layer1.mean(0),
                        title="layer 1 attention predicted by the algorithm", x_labels=run.pos_labels,
                        y_labels=run.pos_labels, xlabel="source position", ylabel="destination position",
                        colorbar_label="attention")
        findings.text("explanation/algorithm_params", params.table())
        return findings
