"""Refuse a probe that cannot fit in the device's memory before analysing it: the OS kills a process that runs out
(with no message, as a bare "Killed"), and a fit that asks for such a probe dies at its first analysis."""

from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from prevpos.errors import ConfigError

# Peak memory of the default analyses per probe sequence: 1.3x what run_with_cache holds per sequence plus 3.7x the
# logits' bytes (vocabulary-sized arrays per position, which the plugins' edited runs make again), fitted to the
# growth of `analyze`'s peak resident memory with the probe on our 2-core CPU. Measured against estimated, kB a
# sequence: the default model 130 (probes of 4,096 and 32,768) against 135; and, measured by a reviewer from 1,024 to
# 4,096 sequences: d_vocab 3,001 677-713 (to 8,192) against 715, n_ctx 40 508 against 567, MLPs 272 against 269,
# 4 heads of 32 123 against 142. (The cache alone, x1.4, said 292 for d_vocab 3,001 and let through twice the memory.)
PEAK_PER_CACHED_BYTE = 1.3
PEAK_PER_LOGIT_BYTE = 3.7


def refuse_a_probe_too_big(model: HookedTransformer, probe_size: int, device: torch.device, setting: str) -> None:
    """ConfigError naming `setting` when the analyses of `probe_size` sequences would need more memory than the
    device has in all (not only what is free now: a probe refused here could never be analysed on it)."""
    total = memory_of(device)
    if total is None:
        return
    per_sequence = peak_bytes_per_sequence(model)
    need = probe_size * per_sequence
    if need > total:
        where = "GPU" if device.type == "cuda" else "machine"
        raise ConfigError(
            f"{setting}={probe_size}: analysing {probe_size:,} sequences would hold ~{_size(need)} of activations "
            f"({_size(per_sequence)} a sequence for this model), more than this {where}'s {_size(total)} of memory; "
            f"use at most ~{int(total // per_sequence):,} (the default is 256)")


def peak_bytes_per_sequence(model: HookedTransformer) -> float:
    """What the default analyses' peak memory grows by per probe sequence of this model (the fit above)."""
    cached, logits = bytes_per_sequence(model)
    return cached * PEAK_PER_CACHED_BYTE + logits * PEAK_PER_LOGIT_BYTE


def bytes_per_sequence(model: HookedTransformer) -> tuple[int, int]:
    """(bytes run_with_cache holds for one sequence of this model, the bytes of its logits)."""
    tokens = torch.zeros(1, model.cfg.n_ctx, dtype=torch.long, device=model.cfg.device)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return (sum(activation.numel() * activation.element_size() for activation in cache.values()),
            logits.numel() * logits.element_size())


def memory_of(device: torch.device) -> int | None:
    """The device's memory in bytes: a GPU's, or the machine's for the CPU (Linux); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _size(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"
