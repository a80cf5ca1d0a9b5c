"""Inputs the mechanism says should hurt: repeated tokens, no BOS, one token everywhere, a second BOS mid-sequence."""

import torch
from jaxtyping import Int
from torch import Tensor

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.figures import heatmap_grid
from prevpos.loss import correct_predictions, previous_token_loss

CASES = ("clean", "repeated_pairs", "no_bos", "all_same", "bos_mid")
WITH_BOS_ONLY = ("no_bos", "bos_mid")  # the cases that take BOS away or add one: no test of a model trained without


def adversarial_batch(case: str, size: int, n_ctx: int, d_vocab: int, seed: int,
                      n_tokens: int | None = None, with_bos: bool = True) -> Int[Tensor, "batch pos"]:
    """`size` sequences of one case; ordinary tokens from [0, n_tokens) as in training (default: every token but
    BOS), BOS = d_vocab - 1 first (with_bos; the data's data.bos). Seeded per case."""
    bos = d_vocab - 1
    generator = torch.Generator().manual_seed(seed + 7919 * CASES.index(case))
    # Tokens the model never saw would make every case, "clean" first, a test of something else.
    tokens = torch.randint(0, n_tokens or bos, (size, n_ctx), generator=generator)
    if case == "repeated_pairs":  # the tutorial's example: [BOS, a, b, b, c, c, ...]
        tokens = tokens[:, : (n_ctx + 1) // 2].repeat_interleave(2, dim=1)[:, :n_ctx]
    elif case == "all_same":
        tokens = tokens[:, :1].expand(size, n_ctx).clone()
    elif case == "bos_mid":
        tokens[:, n_ctx // 2] = bos
    if with_bos and case != "no_bos":
        tokens[:, 0] = bos
    return tokens


def token_labels(tokens: Int[Tensor, "pos"], bos: int) -> list[str]:
    return [f"{'BOS' if t == bos else t}_{i}" for i, t in enumerate(tokens.tolist())]


class AdversarialExamples(AnalysisPlugin):
    """Loss and accuracy on inputs built to break the mechanism, and the last layer's attention on one of each.

    Args:
        size: Sequences per case (None: the probe size). 256, as in the tutorial: the effects are many standard
            errors wide, and the five cases run as one batch of 5 x size.
        seed: Seed of the adversarial batches (the same batches every time the plugin runs).
        every_n_epochs: Run every N epochs (default 10: this checks the finished mechanism).
        dense_epochs: Run after each of the first N epochs (default 0).
    """

    def __init__(self, size: int | None = 256, seed: int = 0, every_n_epochs: int = 10, dense_epochs: int = 0,
                 **kwargs):
        # A test of the finished mechanism, not of its formation: no dense early phase.
        super().__init__(every_n_epochs=every_n_epochs, dense_epochs=dense_epochs, **kwargs)
        self.size, self.seed = size, seed

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        cfg = run.model.cfg
        last = cfg.n_layers - 1
        size = self.size or run.tokens.shape[0]
        cases = CASES if run.bos else tuple(case for case in CASES if case not in WITH_BOS_ONLY)
        tokens = torch.cat([adversarial_batch(case, size, cfg.n_ctx, cfg.d_vocab, self.seed, run.n_tokens, run.bos)
                            for case in cases])
        tokens = tokens.to(cfg.device)
        # One forward pass for the five cases: an analysis costs TransformerLens's Python per pass, not arithmetic.
        logits, cache = run.model.run_with_cache(tokens, names_filter=f"blocks.{last}.attn.hook_pattern")
        patterns, labels = {}, {}
        for case, case_logits, case_tokens, pattern in zip(cases, logits.split(size), tokens.split(size),
                                                           cache["pattern", last].split(size)):
            findings.scalar(f"adversarial/{case}/loss", previous_token_loss(case_logits, case_tokens))
            findings.scalar(f"adversarial/{case}/acc", correct_predictions(case_logits, case_tokens).float().mean())
            patterns[case] = pattern[0]
            labels[case] = token_labels(case_tokens[0], cfg.d_vocab - 1)
        for h in range(cfg.n_heads):
            findings.figure(f"adversarial/patterns/L{last}H{h}", heatmap_grid,
                            matrices={case: p[h] for case, p in patterns.items()}, labels=labels,
                            title=f"L{last}H{h} attention on one example of each case", xlabel="source",
                            ylabel="destination", colorbar_label="attention")
        if not run.bos:  # its "clean" begins with BOS no more than the run's data did
            return self.skip("adversarial/skipped", "the run's sequences have no BOS, so its clean case has none, and "
                             f"the cases {' and '.join(WITH_BOS_ONLY)}, which take BOS away or add one, do not apply",
                             findings)
        return findings
