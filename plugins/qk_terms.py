"""Which parts of a later head's attention score matter: the exact four-term split, ablated one term at a time."""

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix, HookedTransformer

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.circuits import (QK_TERMS, cached_qk_terms, decomposable, losses_with_score_edits, lower_triangle,
                              term_ablation)
from prevpos.figures import bars, heatmap, heatmap_grid


def sum_check_error(terms: dict[str, Tensor], scores: Float[Tensor, "batch dest src"]) -> float:
    """Largest |sum of the four terms - real scores| where the causal mask keeps the scores."""
    return (lower_triangle(sum(terms.values())) - lower_triangle(scores)).abs().max().item()


def ablation_losses(run: ProbeRun, layer: int, head: int) -> dict[tuple[str, str], float]:
    """Probe loss with each term ablated on its own, {(how, term): loss}; "zero": removed, "mean": replaced by its
    batch mean. All eight in one forward pass from the cached input of `layer` (a large probe takes several)."""
    terms = cached_qk_terms(run, layer, head)
    edits = {(how, name): term_ablation(head, terms, [name], how) for how in ("zero", "mean") for name in QK_TERMS}
    return losses_with_score_edits(run.model, run.tokens, layer, edits, run.cache["resid_pre", layer])


def full_qk_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix:
    """W_E W_QK W_Eᵀ [dest token, src token]: the score a token gives another through embeddings alone."""
    return model.W_E @ model.QK[layer, head] @ model.W_E.T


def composition_circuit(model: HookedTransformer, layer: int, head: int, src_layer: int, src_head: int
                        ) -> FactoredMatrix:
    """W_E W_OV' W_QK W_OV'ᵀ W_Eᵀ: the score when the earlier head OV' moved token y to the query, x to the key."""
    moved = model.W_E @ model.OV[src_layer, src_head]
    return moved @ model.QK[layer, head] @ moved.T


def mean_lower(term: Float[Tensor, "batch dest src"]) -> Float[Tensor, "dest src"]:
    """Batch mean, with the masked (src > dest) entries set to NaN so figures leave them blank."""
    mean = term.mean(0)
    return mean.masked_fill(torch.ones_like(mean, dtype=torch.bool).triu(1), float("nan"))


class QKTermImportance(AnalysisPlugin):
    """Split each layer>=1 head's attention scores into direct, k_comp, q_comp and qk_comp; ablate each.

    Only exact for attention-only models without LayerNorm and with 2+ layers; other shapes are skipped (noted once
    as TensorBoard text). With one analysed head the tags are qk_terms/<kind>/<term>, else .../<term>/L{l}H{h}.
    """

    def analyze(self, run: ProbeRun) -> Findings:
        reason = decomposable(run.model)
        if reason is not None:
            return self.skip("qk_terms/skipped", reason)
        findings = Findings()
        heads = [(l, h) for l, h in run.heads() if l >= 1]
        errors = []
        for l, h in heads:
            suffix = "" if len(heads) == 1 else f"/L{l}H{h}"
            terms = cached_qk_terms(run, l, h)
            errors.append(sum_check_error(terms, run.cache["attn_scores", l][:, h]))
            losses = {}
            for (how, name), loss in ablation_losses(run, l, h).items():
                findings.scalar(f"qk_terms/{how}_ablation_loss/{name}{suffix}", loss)
                losses[f"{how} {name}"] = loss
            self._term_figures(findings, run, l, h, terms, losses)
        findings.scalar("qk_terms/sum_check_max_abs_err", max(errors))
        findings.scalar("qk_terms/clean_loss", run.loss)
        self._circuit_figures(findings, run)
        return findings

    def _term_figures(self, findings: Findings, run: ProbeRun, l: int, h: int, terms: dict, losses: dict) -> None:
        head = f"L{l}H{h}"
        findings.figure(f"qk_terms/ablation_losses/{head}", bars, values=losses, reference=run.loss,
                        reference_label="clean loss", title=f"{head} loss with one score term ablated",
                        ylabel="probe loss")
        findings.figure(f"qk_terms/mean_terms/{head}", heatmap_grid, matrices={n: mean_lower(t) for n, t in terms.items()},
                        labels={n: run.pos_labels for n in terms}, title=f"{head} mean score term over the probe",
                        xlabel="source position", ylabel="destination position", centered=True,
                        colorbar_label="score")

    def _circuit_figures(self, findings: Findings, run: ProbeRun) -> None:
        tokens = [str(t) for t in range(run.model.cfg.d_vocab - 1)] + ["BOS"]
        axes = dict(x_labels=tokens, y_labels=tokens, centered=True, colorbar_label="score")
        for l, h in run.heads():
            findings.figure(f"qk_terms/full_qk_circuit/L{l}H{h}", heatmap, matrix=full_qk_circuit(run.model, l, h).AB,
                            title=f"L{l}H{h} full QK circuit W_E W_QK W_Eᵀ", xlabel="source token",
                            ylabel="destination token", **axes)
            for sl, sh in [(sl, sh) for sl, sh in run.heads() if sl < l]:
                circuit = composition_circuit(run.model, l, h, sl, sh).AB
                findings.figure(f"qk_terms/composition_circuit/L{l}H{h}_from_L{sl}H{sh}", heatmap, matrix=circuit,
                                title=f"L{l}H{h} K+Q composition via L{sl}H{sh}: W_E W_OV W_QK W_OVᵀ W_Eᵀ",
                                xlabel=f"token moved to source by L{sl}H{sh}",
                                ylabel=f"token moved to destination by L{sl}H{sh}", **axes)
