"""Build the HookedTransformer: one place for every TransformerLens setting, so a checkpoint rebuilds exactly."""

import warnings
from typing import Literal

import torch

with warnings.catch_warnings():
    # TransformerLens 3.9 warns that HookedTransformer is deprecated in favour of 4.x; we pin 3.x on purpose.
    warnings.simplefilter("ignore", DeprecationWarning)
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.components import Embed

from prevpos.errors import ConfigError

Positional = Literal["none", "learned"]


class LookupEmbed(Embed):
    """TransformerLens's Embed, with its lookup W_E[tokens] done by F.embedding: the same values and gradients
    (up to the order of float sums). On CUDA its backward sums each row's repeats by segments, where indexing's
    backward adds them one after another, and every sequence repeats BOS: at batch 4096 that kernel was 48% of
    an H100 step's GPU time (scripts/profile_step.py). Measured on one H100, alternating (scripts/embedding_ab.py):
    the fast path at batch 4096 ran 380 instead of 211 steps/s (0.99 in 0.33 instead of 0.53 s); eager steps and
    batch 256, bound by Python rather than the GPU, showed no difference beyond the noise."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = torch.nn.functional.embedding(tokens, self.W_E)
        return self.ln(embedded) if self.cfg.post_embedding_ln else embedded


def check_shape(n_layers: int, n_heads: int, d_model: int, d_head: int, n_ctx: int, d_vocab: int) -> None:
    """Raise ConfigError with the setting to fix for a model shape that cannot work."""
    if n_layers < 1:
        raise ConfigError(f"model.n_layers={n_layers}: need at least 1 layer")
    if n_heads < 1:
        raise ConfigError(f"model.n_heads={n_heads}: need at least 1 head")
    if d_model < 1 or d_head < 1:
        raise ConfigError(f"model.d_model={d_model}, model.d_head={d_head}: both must be positive")
    if n_ctx < 2:
        raise ConfigError(f"model.n_ctx={n_ctx}: need at least 2 positions (BOS and one token to look back at)")
    if d_vocab < 3:
        raise ConfigError(f"model.d_vocab={d_vocab}: need at least 3 (two tokens and BOS)")


def build_transformer(
    n_layers: int = 2,
    n_heads: int = 1,
    d_model: int = 128,
    d_head: int = 128,
    n_ctx: int = 10,
    d_vocab: int = 101,
    attn_only: bool = True,
    positional: Positional = "none",
    seed: int | None = 0,
) -> HookedTransformer:
    """The tutorial's model: attention only, no LayerNorm, no biases and (by default) no positional embedding.

    TransformerLens has no "no positional embedding" option, so W_pos is zeroed and frozen; likewise every
    bias. Frozen parameters never change: the optimizer never sees them, so weight decay cannot touch them.
    """
    check_shape(n_layers, n_heads, d_model, d_head, n_ctx, d_vocab)
    cfg = HookedTransformerConfig(
        n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head, n_ctx=n_ctx, d_vocab=d_vocab,
        attn_only=attn_only, normalization_type=None, act_fn=None if attn_only else "relu",
        d_mlp=None if attn_only else 4 * d_model, device="cpu", seed=None,
    )
    # cfg.seed would reseed the global RNGs as a side effect; a local fork keeps init reproducible without it.
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = HookedTransformer(cfg)
    # Swapping the class keeps the module, its W_E and every name, hook and state_dict key exactly as they were.
    model.embed.__class__ = LookupEmbed
    for name, param in model.named_parameters():
        if name.split(".")[-1].startswith("b_") or (name == "pos_embed.W_pos" and positional == "none"):
            param.requires_grad_(False)
            param.data.zero_()
    return model


def frozen_parameter_names(model: HookedTransformer) -> list[str]:
    return [name for name, p in model.named_parameters() if not p.requires_grad]
