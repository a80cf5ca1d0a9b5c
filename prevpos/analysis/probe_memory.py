"""Refuse a probe that cannot fit in the device's memory before analysing it: the OS kills a process that runs out
(with no message, as a bare "Killed"), and a fit that asks for such a probe dies at its first analysis."""

from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from prevpos.errors import ConfigError

# The default analyses' peak memory grows by 1.4x the bytes run_with_cache holds per sequence: `analyze` of the
# default model (92.7 kB cached per sequence) peaked at 1.17 GB with a probe of 4,096 sequences and 4.91 GB with
# 32,768 (peak resident memory on our 2-core CPU): 130 kB a sequence.
PEAK_PER_CACHED_BYTE = 1.4


def refuse_a_probe_too_big(model: HookedTransformer, probe_size: int, device: torch.device, setting: str) -> None:
    """ConfigError naming `setting` when the analyses of `probe_size` sequences would need more memory than the
    device has in all (not only what is free now: a probe refused here could never be analysed on it)."""
    total = memory_of(device)
    if total is None:
        return
    per_sequence = cache_bytes_per_sequence(model) * PEAK_PER_CACHED_BYTE
    need = probe_size * per_sequence
    if need > total:
        where = "GPU" if device.type == "cuda" else "machine"
        raise ConfigError(
            f"{setting}={probe_size}: analysing {probe_size:,} sequences would hold ~{_size(need)} of activations "
            f"({_size(per_sequence)} a sequence for this model), more than this {where}'s {_size(total)} of memory; "
            f"use at most ~{int(total // per_sequence):,} (the default is 256)")


def cache_bytes_per_sequence(model: HookedTransformer) -> int:
    """Bytes run_with_cache holds for one sequence of this model (every hook's activation)."""
    tokens = torch.zeros(1, model.cfg.n_ctx, dtype=torch.long, device=model.cfg.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return sum(activation.numel() * activation.element_size() for activation in cache.values())


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
