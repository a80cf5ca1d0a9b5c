"""Attention patterns: where each head looks, and the scores that summarise the mechanism's attention."""

import torch
from jaxtyping import Float
from torch import Tensor

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.figures import heatmap


def mean_patterns(run: ProbeRun) -> Float[Tensor, "layer head dest src"]:
    return torch.stack([run.cache["pattern", l].mean(0) for l in range(run.n_layers)])


def bos_decay_score(bos_weight: Float[Tensor, "pos"]) -> float:
    """Fraction of consecutive positions (1..) where BOS attention falls: 1 = strictly decreasing (counting)."""
    return (bos_weight[2:] < bos_weight[1:-1]).float().mean().item() if bos_weight.shape[0] > 2 else 0.0


def attention_scores(pattern: Float[Tensor, "dest src"]) -> dict[str, float]:
    """Mean attention to the previous token, to itself and to BOS, over destinations i >= 1."""
    return {
        "prev_token_score": pattern.diagonal(-1).mean().item(),
        "self_score": pattern.diagonal()[1:].mean().item(),
        "bos_score": pattern[1:, 0].mean().item(),
        "bos_decay_score": bos_decay_score(pattern[:, 0]),
    }


def head_scores(patterns: Float[Tensor, "layer head dest src"]) -> dict[tuple[int, int], dict[str, float]]:
    """attention_scores of every (layer, head)'s mean pattern."""
    layers, heads = patterns.shape[:2]
    return {(l, h): attention_scores(patterns[l, h]) for l in range(layers) for h in range(heads)}


def prev_token_head(scores: dict[tuple[int, int], dict[str, float]]) -> tuple[int, int]:
    """(layer, head) of the head that attends most to the previous token, in any layer: layer 1's head in the
    default model, another of layer 1's with several heads, layer 0's with learned positions."""
    return max(scores, key=lambda head: scores[head]["prev_token_score"])


def counting_head(scores: dict[tuple[int, int], dict[str, float]]) -> tuple[int, int]:
    """(0, head) of the layer-0 head that attends most to BOS: the one that counts from it."""
    return max((head for head in scores if head[0] == 0), key=lambda head: scores[head]["bos_score"])


class AttentionPatterns(AnalysisPlugin):
    """Each head's mean attention pattern over the probe and on one example, with its summary scores.

    Args:
        example: Index of the probe sequence drawn as the single example.
    """

    def __init__(self, example: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.example = example

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        patterns = mean_patterns(run)
        scores = head_scores(patterns)
        labels = run.pos_labels
        probe_size = run.tokens.shape[0]
        shows_example = -probe_size <= self.example < probe_size
        if shows_example:
            example_labels = [f"{lab}={t}" for lab, t in zip(labels, run.tokens[self.example].tolist())]
        else:  # the scores and mean patterns still stand
            self.skip("attention/example_pattern", f"example={self.example} is not a sequence of the probe (it has "
                      f"{probe_size}): no single-example figure; pick one below the probe's size", findings)
        for l, h in run.heads():
            head = f"L{l}H{h}"
            for name, value in scores[l, h].items():
                findings.scalar(f"attention/{name}/{head}", value)
            for pos in range(1, patterns.shape[-1]):
                findings.scalar(f"attention/bos_by_pos/{head}/pos{pos}", patterns[l, h, pos, 0])
            findings.figure(f"attention/mean_pattern/{head}", heatmap, matrix=patterns[l, h],
                            title=f"{head} mean attention over probe", x_labels=labels, y_labels=labels,
                            xlabel="source position", ylabel="destination position", colorbar_label="attention")
            if shows_example:
                findings.figure(f"attention/example_pattern/{head}", heatmap,
                                matrix=run.cache["pattern", l][self.example, h],
                                title=f"{head} attention, one example", x_labels=example_labels,
                                y_labels=example_labels, xlabel="source", ylabel="destination",
                                colorbar_label="attention")
        # Tags every model has, so that the HPARAMS table compares models of any shape:
        looking_back, counting = scores[prev_token_head(scores)], scores[counting_head(scores)]
        findings.scalar("attention/prev_token_score/prev_token_head", looking_back["prev_token_score"])
        findings.scalar("attention/bos_score/counting_head", counting["bos_score"])
        return findings
