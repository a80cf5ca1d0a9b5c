"""Length generalization: the trained weights run, unchanged, on sequences 2x and 4x longer than in training."""

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.analysis.probe import position_labels
from prevpos.errors import ConfigError
from prevpos.figures import lines
from prevpos.loss import correct_predictions, previous_token_loss
from prevpos.transformer import build_transformer


def has_positions(model: HookedTransformer) -> bool:
    """A non-zero W_pos ties the model to its trained length; a zero one means it has none."""
    return bool(model.W_pos.any())


def with_context(model: HookedTransformer, n_ctx: int) -> HookedTransformer:
    """The same weights in a HookedTransformer of context n_ctx (W_pos must be zero: it stays zero, longer)."""
    cfg = model.cfg
    longer = build_transformer(cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, n_ctx, cfg.d_vocab, cfg.attn_only,
                               "none", seed=0)
    missing, unexpected = longer.load_state_dict(_weights(model), strict=False)
    assert missing == ["pos_embed.W_pos"] and not unexpected, (missing, unexpected)
    longer.cfg.device = cfg.device  # TransformerLens sends inputs to cfg.device
    if longer.W_E.device != model.W_E.device:
        longer.to(model.W_E.device)
    return longer.eval()


def _weights(model: HookedTransformer) -> dict[str, Tensor]:
    """Every weight but W_pos, whose shape is tied to n_ctx (and which is zero here)."""
    return {k: v for k, v in model.state_dict().items() if k != "pos_embed.W_pos"}


def resample(tokens: Int[Tensor, "batch pos"], batch: int, n_ctx: int, seed: int = 0) -> Int[Tensor, "sequences n_ctx"]:
    """`batch` sequences of length n_ctx drawn from the probe's own tokens: column 0 from its column 0 (BOS), the
    rest from its other columns, so the token distribution is the probe's whatever the data settings."""
    generator = torch.Generator().manual_seed(seed)
    first, rest = tokens[:, 0].cpu(), tokens[:, 1:].flatten().cpu()
    columns = [first[torch.randint(0, len(first), (batch, 1), generator=generator)],
               rest[torch.randint(0, len(rest), (batch, n_ctx - 1), generator=generator)]]
    return torch.cat(columns, 1).to(tokens.device)


def accuracy_by_position(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]
                         ) -> tuple[float, Float[Tensor, "pos_minus_1"]]:
    logits = model(tokens)
    return previous_token_loss(logits, tokens).item(), correct_predictions(logits, tokens).float().mean(0)


class LengthGeneralization(AnalysisPlugin):
    """Accuracy on sequences `multiples` x the trained length, with the trained weights (no positions to extend).

    Prediction from the mechanism: layer 0's BOS weight ~1/(1 + c*i) tells position i from i - 1 by a gap that
    shrinks like 1/i^2, and layer 1's "recent" score is built from it, so past the trained length the previous
    token should lose out to its neighbours and accuracy should fall with position (attention "distraction").
    A model with learned positions cannot run past its length: those lengths are skipped with a note.

    Args:
        multiples: Lengths to test, as multiples of the trained n_ctx.
        sequences: Sequences per length, resampled from the probe's tokens (the 4x forward costs the most).
        every_n_epochs: Run every N epochs (default 10: this checks the finished mechanism).
        dense_epochs: Run after each of the first N epochs (default 0).
    """

    def __init__(self, multiples: tuple[int, ...] = (1, 2, 4), sequences: int = 256, every_n_epochs: int = 10,
                 dense_epochs: int = 0, **kwargs):
        # A test of the finished mechanism, not of its formation: no dense early phase.
        super().__init__(every_n_epochs=every_n_epochs, dense_epochs=dense_epochs, **kwargs)
        if not multiples or min(multiples) < 1 or sequences < 1:
            raise ConfigError(f"LengthGeneralization: multiples={multiples} must be >= 1, sequences={sequences} >= 1")
        self.multiples, self.sequences = tuple(multiples), sequences
        self._rebuilt: dict[tuple[int, str], HookedTransformer] = {}

    def _model_at(self, model: HookedTransformer, n_ctx: int) -> HookedTransformer:
        if n_ctx == model.cfg.n_ctx:
            return model
        key = (n_ctx, str(model.W_E.device))
        if key not in self._rebuilt:  # building costs more than copying the weights in again
            self._rebuilt[key] = with_context(model, n_ctx)
        self._rebuilt[key].load_state_dict(_weights(model), strict=False)
        return self._rebuilt[key]

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        trained = run.model.cfg.n_ctx
        by_position = {}
        for n_ctx in (m * trained for m in self.multiples):
            if n_ctx > trained and has_positions(run.model):
                findings.text("length/skipped", f"lengths over {trained} skipped: the model has learned positions")
                continue
            tokens = resample(run.tokens, self.sequences, n_ctx)
            loss, acc = accuracy_by_position(self._model_at(run.model, n_ctx), tokens)
            findings.scalar(f"length/acc_len{n_ctx}", acc.mean())
            findings.scalar(f"length/loss_len{n_ctx}", loss)
            by_position[f"length {n_ctx}"] = acc
        if not by_position:
            return findings
        longest = max(len(acc) for acc in by_position.values()) + 1
        findings.figure("length/acc_by_position", lines, series=by_position, title="accuracy by position",
                        xlabel="position (trained up to a_{})".format(trained - 1), ylabel="accuracy",
                        x_labels=position_labels(longest)[1:])
        return findings
