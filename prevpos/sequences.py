"""Random sequences [BOS, a_1, ..., a_{n_ctx-1}]: the task's only data."""

import torch
from jaxtyping import Int
from torch import Tensor


def random_sequences(
    batch: int, n_ctx: int, d_vocab: int, n_tokens: int, generator: torch.Generator,
    device: torch.device | str = "cpu", bos: bool = True,
) -> Int[Tensor, "batch pos"]:
    """a_i uniform in [0, n_tokens); BOS = d_vocab - 1 at position 0 (unless bos=False)."""
    tokens = torch.randint(0, n_tokens, (batch, n_ctx), generator=generator, device=device)
    if bos:
        tokens[:, 0] = d_vocab - 1
    return tokens


def used_tokens(d_vocab: int, n_tokens: int | None = None, bos: bool = True) -> Int[Tensor, "tokens"]:
    """The token ids the data shows the model: the ordinary 0 .. n_tokens - 1 (default: all but BOS), then BOS (not
    in data without BOS, unless its tokens are drawn from the whole vocabulary). The others keep their random initial
    embeddings, and a circuit's score over them would measure that noise."""
    bos_id = d_vocab - 1
    ordinary = torch.arange(min(n_tokens or bos_id, bos_id))
    return torch.cat([ordinary, torch.tensor([bos_id])]) if bos or (n_tokens or 0) >= d_vocab else ordinary


def seeded_sequences(batch: int, n_ctx: int, d_vocab: int, n_tokens: int, seed: int, bos: bool = True) -> Tensor:
    """The same CPU batch for the same seed, whatever the device or the global RNG state."""
    return random_sequences(batch, n_ctx, d_vocab, n_tokens, torch.Generator().manual_seed(seed), bos=bos)


def notebook_sequences(batch: int, n_ctx: int, d_vocab: int, seed: int) -> Tensor:
    """Exactly the public tutorial's sample: manual_seed(seed), randint(0, d_vocab) (so BOS can appear
    mid-sequence), column 0 = BOS. Uses and restores the global CPU RNG, as the notebook did."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokens = torch.randint(0, d_vocab, (batch, n_ctx))
    tokens[:, 0] = d_vocab - 1
    return tokens


def probe_tokens(size: int, n_ctx: int, d_vocab: int, n_tokens: int, seed: int, notebook: bool = False,
                 bos: bool = True) -> Tensor:
    """The fixed batch every analysis reads; `notebook` reproduces the tutorial's sample exactly."""
    if notebook:
        return notebook_sequences(size, n_ctx, d_vocab, seed)
    return seeded_sequences(size, n_ctx, d_vocab, n_tokens, seed, bos)
