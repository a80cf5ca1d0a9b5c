"""Head ablation: the probe loss with one head's output removed, to see which heads the model needs (opt-in:
`--trainer.callbacks+=HeadAblation`)."""

from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.figures import bars
from prevpos.loss import correct_predictions, previous_token_loss

HOW = ("zero", "mean")


def ablated_logits(run: ProbeRun, layer: int, head: int, how: str) -> Float[Tensor, "batch pos vocab"]:
    """The probe's logits with head `head` of `layer` writing nothing ("zero") or its mean output over the probe at
    each position ("mean"), by editing its z (its attention-weighted values, before W_O) in a hook."""
    clean_z = run.cache["z", layer][:, :, head]

    def edit(z: Float[Tensor, "batch pos head d_head"], hook: HookPoint) -> Tensor:
        z = z.clone()
        z[:, :, head] = 0.0 if how == "zero" else clean_z.mean(0)
        return z

    return run.model.run_with_hooks(run.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", edit)])


class HeadAblation(AnalysisPlugin):
    """Each head's output zero- and mean-ablated in turn: the probe loss and accuracy without it.

    A head whose ablation leaves the loss near the clean one is not needed (or is redundant: another head does the
    same). Mean-ablation keeps what the head writes on average, so it removes only what depends on the sequence.
    """

    dashboard = {"head ablation (loss and accuracy without each head)": {
        "probe loss, one head ablated": [r"head_ablation/\w+_loss/"],
        "probe accuracy, one head ablated": [r"head_ablation/\w+_acc/"]}}

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        losses = {}
        for l, h in run.heads():
            for how in HOW:
                logits = ablated_logits(run, l, h, how)
                loss = previous_token_loss(logits, run.tokens).item()
                findings.scalar(f"head_ablation/{how}_loss/L{l}H{h}", loss)
                findings.scalar(f"head_ablation/{how}_acc/L{l}H{h}",
                                correct_predictions(logits, run.tokens).float().mean())
                losses[f"{how} L{l}H{h}"] = loss
        findings.figure("head_ablation/losses", bars, values=losses, reference=run.loss, reference_label="clean loss",
                        title="probe loss with one head ablated", ylabel="probe loss")
        return findings
