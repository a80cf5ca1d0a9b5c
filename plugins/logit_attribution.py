"""Direct logit attribution: how much each part of the residual stream (the embedding, each head, each MLP) adds to
the correct token's logit, above the mean logit (opt-in: `--trainer.callbacks+=LogitAttribution`)."""

import torch
from jaxtyping import Float
from torch import Tensor

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.figures import bars, lines
from prevpos.loss import targets


def residual_parts(run: ProbeRun) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """The final residual stream split into what each component wrote, from the probe's cache. Without LayerNorm
    (prevpos builds none) they add up to it exactly; biases (zero and frozen in prevpos's models) are one part."""
    model, cache = run.model, run.cache
    parts = {"embed": cache["embed"], "pos_embed": cache["pos_embed"]}
    biases = torch.zeros_like(cache["embed"])
    for l in range(model.cfg.n_layers):
        for h in range(model.cfg.n_heads):
            parts[f"L{l}H{h}"] = cache["z", l][:, :, h] @ model.W_O[l, h]
        biases = biases + model.b_O[l]
        if not model.cfg.attn_only:
            parts[f"L{l} mlp"] = cache["mlp_out", l]
    parts["biases"] = biases
    return parts


def correct_direction(run: ProbeRun) -> Float[Tensor, "batch pos-1 d_model"]:
    """W_U's column of each position's correct token (the previous one) minus W_U's mean column: a residual vector's
    dot product with it is what it adds to the correct logit above the mean logit."""
    W_U = run.model.W_U
    return (W_U - W_U.mean(1, keepdim=True)).T[targets(run.tokens)]


def attributions(run: ProbeRun) -> dict[str, Float[Tensor, "batch pos-1"]]:
    """Each part's share of the correct logit above the mean one, at positions 1.. (the unembedding's bias is in
    "biases")."""
    direction = correct_direction(run)
    shares = {name: (part[:, 1:] * direction).sum(-1) for name, part in residual_parts(run).items()}
    b_U = run.model.b_U
    shares["biases"] = shares["biases"] + (b_U - b_U.mean())[targets(run.tokens)]
    return shares


def logit_above_mean(logits: Float[Tensor, "batch pos vocab"], tokens) -> Float[Tensor, "batch pos-1"]:
    """The model's own correct logit minus its mean logit, at positions 1..: what the attributions must add up to."""
    correct = logits[:, 1:].gather(-1, targets(tokens).unsqueeze(-1)).squeeze(-1)
    return correct - logits[:, 1:].mean(-1)


class LogitAttribution(AnalysisPlugin):
    """Direct logit attribution: each component's mean contribution to the correct logit above the mean logit.

    Logs `dla/<part>` for the embedding, each head (`L1H0`), each MLP and the biases (parts that are zero in every
    run of this model, a positional embedding it does not have, are left out), and `dla/sum_check_max_abs_err`: how
    far their sum is from the model's own logits (float32 rounding). Direct only: what a head writes through later
    layers (layer 0's count, read by layer 1) is not in it; `HeadAblation` measures that.
    """

    dashboard = {"direct logit attribution": {
        "contribution to the correct logit": [r"dla/(embed|pos_embed|biases|L\d+H\d+|L\d+_mlp)$"]}}

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        shares = attributions(run)
        total = torch.stack(list(shares.values())).sum(0)
        findings.scalar("dla/sum_check_max_abs_err", (total - logit_above_mean(run.logits, run.tokens)).abs().max())
        kept = {name: share for name, share in shares.items() if share.abs().max() > 0}
        for name, share in kept.items():
            findings.scalar(f"dla/{name.replace(' ', '_')}", share.mean())
        findings.figure("dla/by_part", bars, values={name: share.mean().item() for name, share in kept.items()},
                        title="direct contribution to the correct logit (above the mean logit)", ylabel="logit")
        findings.figure("dla/by_position", lines, series={name: share.mean(0) for name, share in kept.items()},
                        title="direct contribution to the correct logit, by position", xlabel="position",
                        ylabel="logit", x_labels=run.pos_labels[1:])
        return findings
