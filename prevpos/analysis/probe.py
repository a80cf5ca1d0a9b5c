"""One forward pass with cache on the fixed probe batch, shared by every plugin at a given step."""

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from prevpos.loss import correct_predictions, previous_token_loss
from prevpos.sequences import used_tokens


@dataclass
class ProbeRun:
    """The model, the probe tokens and their cached activations, in float32 with autocast off.

    Plugins read from it and never change the model. `step` is the global training step (0 before training).
    `n_tokens` is the data's: ordinary tokens are 0 .. n_tokens - 1 (data.n_tokens; by default every token but
    BOS, d_vocab - 1), for a plugin that builds inputs of its own from the distribution the model was trained on.
    `bos`: whether the data begins each sequence with BOS (data.bos); by default read off the probe, which the data
    drew.
    """

    model: HookedTransformer
    tokens: Tensor
    step: int = 0
    epoch: int = 0  # epochs trained at `step`: 0 at step 0, 1 after the first
    extras: dict = field(default_factory=dict)  # for plugins to share derived results within one step
    n_tokens: int | None = None
    bos: bool | None = None

    def __post_init__(self):
        if self.n_tokens is None:
            self.n_tokens = self.model.cfg.d_vocab - 1
        if self.bos is None:
            self.bos = bool(self.tokens[:, 0].eq(self.model.cfg.d_vocab - 1).all())

    @cached_property
    def _forward(self) -> tuple[Tensor, ActivationCache]:
        with torch.no_grad():  # shared by every plugin: no graph, even if the first to ask is taking gradients
            return self.model.run_with_cache(self.tokens)

    @property
    def logits(self) -> Tensor:
        return self._forward[0]

    @property
    def cache(self) -> ActivationCache:
        return self._forward[1]

    def shared_versions(self) -> list[int | None]:
        """torch's version counters of the shared logits and cache: an in-place change to any of them bumps its own.
        (None under torch.inference_mode, whose tensors have none, and cannot be changed in place outside it.)"""
        shared = [self.logits, *self.cache.values()]
        return [tensor._version if not tensor.is_inference() else None for tensor in shared]

    def discard_forward(self) -> None:
        """Drop the shared logits and cache: whoever asks next runs the forward again."""
        self.__dict__.pop("_forward", None)

    @property
    def loss(self) -> float:
        return previous_token_loss(self.logits, self.tokens).item()

    @property
    def acc(self) -> float:
        return correct_predictions(self.logits, self.tokens).float().mean().item()

    @property
    def used_tokens(self) -> Tensor:
        """Token ids the data uses (0 .. n_tokens - 1, then BOS if it has one): index circuits over the vocabulary
        with them."""
        return used_tokens(self.model.cfg.d_vocab, self.n_tokens, self.bos).to(self.tokens.device)

    @property
    def n_layers(self) -> int:
        return self.model.cfg.n_layers

    def heads(self) -> list[tuple[int, int]]:
        return [(l, h) for l in range(self.model.cfg.n_layers) for h in range(self.model.cfg.n_heads)]

    @property
    def pos_labels(self) -> list[str]:
        return position_labels(self.tokens.shape[1], self.bos)


def position_labels(n_ctx: int, bos: bool = True) -> list[str]:
    """BOS, a_1, a_2, ...; without BOS, position 0 holds an ordinary token, a_0."""
    return ["BOS" if bos else "a_0"] + [f"a_{i}" for i in range(1, n_ctx)]


@contextmanager
def left_as_found(model: HookedTransformer):
    """The model after the block as it was before, for whatever runs on it next (the next plugin, the next step):
    hooks the block left on it (permanent ones too) removed, gradients cleared, weights it changed put back. Yields
    a list that names, after the block, the weights it had changed."""
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    changed: list[str] = []
    try:
        yield changed
    finally:
        model.reset_hooks(including_permanent=True)
        model.zero_grad(set_to_none=True)
        after = model.state_dict()
        changed += [name for name, tensor in before.items() if not same_values(after[name], tensor)]
        if changed:
            model.load_state_dict(before)


def same_values(a: Tensor, b: Tensor) -> bool:
    """torch.equal, but NaN equal to NaN: a model with NaN weights was put back and its plugin blamed at every step."""
    return torch.equal(a, b) or (a.is_floating_point() and a.shape == b.shape
                                 and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))


@contextmanager
def analysis_mode(model: HookedTransformer):
    """No grad, eval mode, autocast off: analyses run in float32 whatever the training precision."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(torch.device(model.cfg.device).type, enabled=False):
            yield
    finally:
        model.train(was_training)


def analyze_on(plugin, run: ProbeRun, figures: bool):
    """plugin.analyze_checked(run) in analysis_mode with run's device current; its figures dropped unless `figures`.
    What an analysed step does for each plugin, in the analysis thread or the analysis process."""
    device = run.tokens.device
    with torch.cuda.device(device) if device.type == "cuda" else nullcontext(), analysis_mode(run.model):
        findings = plugin.analyze_checked(run)
    if not figures:
        findings.figures.clear()
    return findings
