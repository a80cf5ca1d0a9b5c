"""Exact decompositions of an attention-only, LayerNorm-free model without query/key biases, checked against its own
activations."""

from typing import TYPE_CHECKING, Callable, Hashable, Iterable, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from prevpos.loss import previous_token_losses

if TYPE_CHECKING:
    from prevpos.analysis.probe import ProbeRun

QK_TERMS = ("direct", "k_comp", "q_comp", "qk_comp")


def decomposable(model: HookedTransformer) -> str | None:
    """None if the four-term split is exact for this model, else the one-line reason it is not."""
    cfg = model.cfg
    if not cfg.attn_only:
        return "the model has MLPs, so earlier layers' output is not only attention"
    if cfg.normalization_type is not None:
        return f"the model has {cfg.normalization_type} normalization"
    if cfg.n_layers < 2:
        return "the model has one layer, so there is no composition to split"
    biased = [f"{name}[{layer}]" for layer in range(1, cfg.n_layers) for name, bias in
              (("b_Q", model.b_Q[layer]), ("b_K", model.b_K[layer])) if bias.any()]
    if biased:  # prevpos's own models hold them at zero; a loaded state_dict may not (prevpos/weights.py)
        return (f"the model has query/key biases ({', '.join(biased[:2])}), which add score terms the four-term "
                "split leaves out")
    return None


def qk_terms(model: HookedTransformer, cache: ActivationCache, layer: int, head: int
             ) -> dict[str, Float[Tensor, "batch dest src"]]:
    """Split head (layer, head)'s attention scores into direct, k_comp, q_comp and qk_comp (query side first).

    e = the embedding (token plus positional, zero here) and c = everything earlier layers added, so queries and
    keys are both read from e + c and the scores are bilinear in them. Scaled like the model (1/sqrt(d_head)).
    """
    e = cache["resid_pre", 0]
    c = cache["resid_pre", layer] - e
    W_QK = model.QK[layer, head]
    scale = model.blocks[layer].attn.attn_scale

    def term(query_side: Tensor, key_side: Tensor) -> Tensor:
        return (query_side @ W_QK.A) @ (key_side @ W_QK.B.mT).mT / scale

    return {"direct": term(e, e), "k_comp": term(e, c), "q_comp": term(c, e), "qk_comp": term(c, c)}


def lower_triangle(scores: Float[Tensor, "... dest src"]) -> Float[Tensor, "n"]:
    """The entries the causal mask keeps (src <= dest), flattened."""
    n = scores.shape[-1]
    keep = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    return scores[..., keep]


def run_with_edited_scores(model: HookedTransformer, tokens: Tensor, layer: int,
                           edit: Callable[[Float[Tensor, "batch head dest src"]], Tensor],
                           resid_pre: Float[Tensor, "batch pos d_model"] | None = None) -> Tensor:
    """Logits when layer `layer`'s attention scores are replaced by edit(scores), causal mask re-applied.

    Pass `resid_pre` (the cached input of `layer` for these tokens) to skip recomputing the earlier layers.
    """
    return run_with_score_edits(model, tokens, layer, {"edited": edit}, resid_pre)["edited"]


def run_with_score_edits(model: HookedTransformer, tokens: Tensor, layer: int,
                         edits: dict[Hashable, Callable[[Float[Tensor, "batch head dest src"]], Tensor]],
                         resid_pre: Float[Tensor, "batch pos d_model"] | None = None) -> dict[Hashable, Tensor]:
    """run_with_edited_scores for several edits at once: one forward pass over the batch repeated per edit.

    Each edit sees (and returns) the scores of its own copy of the batch. One pass instead of one per edit: an
    analysis costs TransformerLens's Python per forward pass more than arithmetic, on a GPU above all.
    """
    attention, names = model.blocks[layer].attn, list(edits)

    def hook(scores: Tensor, hook) -> Tensor:
        parts = scores.chunk(len(names))
        return attention.apply_causal_mask(torch.cat([edits[name](part.clone()) for name, part in zip(names, parts)]))

    start = resid_pre if resid_pre is not None else tokens
    hooks = [(get_act_name("attn_scores", layer), hook)]
    logits = model.run_with_hooks(start.repeat(len(names), *[1] * (start.dim() - 1)), fwd_hooks=hooks,
                                  start_at_layer=layer if resid_pre is not None else None)
    return dict(zip(names, logits.chunk(len(names))))


# Sequences in one batched pass of score edits. The default probe's eight QK-term ablations (8 x 256) take one pass;
# a larger probe takes fewer edits a pass (one at least), so memory grows with the probe, not with probe x edits:
# analyze with QKTermImportance alone on an 8,192-sequence probe peaked at 4.1 GB with all eight in one pass.
EDITED_SEQUENCES_PER_PASS = 4096


def losses_with_score_edits(model: HookedTransformer, tokens: Tensor, layer: int,
                            edits: dict[Hashable, Callable[[Float[Tensor, "batch head dest src"]], Tensor]],
                            resid_pre: Float[Tensor, "batch pos d_model"] | None = None) -> dict[Hashable, float]:
    """previous_token_loss of `tokens` under each edit: run_with_score_edits, as few edits a pass as keep it within
    EDITED_SEQUENCES_PER_PASS sequences."""
    names, per_pass = list(edits), max(1, EDITED_SEQUENCES_PER_PASS // len(tokens))
    losses = {}
    for first in range(0, len(names), per_pass):
        group = {name: edits[name] for name in names[first:first + per_pass]}
        losses.update(previous_token_losses(run_with_score_edits(model, tokens, layer, group, resid_pre), tokens))
    return losses


def cached_qk_terms(run: "ProbeRun", layer: int, head: int) -> dict[str, Float[Tensor, "batch dest src"]]:
    """qk_terms on the probe run, computed once per step however many plugins ask (kept in run.extras)."""
    key = ("qk_terms", layer, head)
    if key not in run.extras:
        run.extras[key] = qk_terms(run.model, run.cache, layer, head)
    return run.extras[key]


def ablate_terms(model: HookedTransformer, tokens: Tensor, layer: int, head: int,
                 terms: dict[str, Float[Tensor, "batch dest src"]], names: Iterable[str],
                 how: Literal["zero", "mean"] = "zero", resid_pre: Tensor | None = None
                 ) -> Float[Tensor, "batch pos vocab"]:
    """Logits with the named terms of one head's scores removed ("zero") or replaced by their batch mean ("mean").

    `terms` must come from the same tokens (e.g. cached_qk_terms on the probe run); other heads are untouched.
    `resid_pre`: as in run_with_edited_scores (e.g. run.cache["resid_pre", layer]; about halves the cost).
    """
    return run_with_score_edits(model, tokens, layer, {"ablated": term_ablation(head, terms, names, how)},
                                resid_pre)["ablated"]


def term_ablation(head: int, terms: dict[str, Float[Tensor, "batch dest src"]], names: Iterable[str],
                  how: Literal["zero", "mean"] = "zero") -> Callable[[Tensor], Tensor]:
    """The score edit of ablate_terms, for run_with_score_edits (several ablations in one forward pass)."""
    delta = sum((terms[n] - terms[n].mean(0, keepdim=True) if how == "mean" else terms[n]) for n in names)

    def edit(scores: Tensor) -> Tensor:
        scores[:, head] -= delta
        return scores

    return edit
