"""A probe too big for the device's memory is refused before it is analysed (prevpos/analysis/probe_memory.py)."""

import pytest
import torch

from prevpos.analysis import probe_memory
from prevpos.analysis.probe_memory import bytes_per_sequence, peak_bytes_per_sequence, refuse_a_probe_too_big
from prevpos.errors import ConfigError
from prevpos.transformer import build_transformer


def test_the_bytes_per_sequence_are_what_run_with_cache_holds_for_a_batch():
    model = build_transformer()
    logits, cache = model.run_with_cache(torch.zeros(3, model.cfg.n_ctx, dtype=torch.long))
    held = sum(activation.numel() * activation.element_size() for activation in cache.values())
    assert bytes_per_sequence(model) == (held / 3, logits.numel() * 4 / 3) == (92680, 4040)  # float32 logits


def test_a_probe_beyond_the_memory_is_refused_naming_the_setting(monkeypatch):
    model = build_transformer()
    monkeypatch.setattr(probe_memory, "memory_of", lambda device: 10**9)  # a 1 GB machine
    per_sequence = peak_bytes_per_sequence(model)
    fits = int(10**9 // per_sequence)
    refuse_a_probe_too_big(model, fits, torch.device("cpu"), "data.probe_size")  # the most it takes: no error
    with pytest.raises(ConfigError, match=rf"^data.probe_size={fits + 1}: .* more than this machine's 1.0 GB of "
                                          rf"memory; use at most ~{fits:,} \(the default is 256\)$"):
        refuse_a_probe_too_big(model, fits + 1, torch.device("cpu"), "data.probe_size")


def test_a_large_vocabulary_counts_its_logits():
    """d_vocab 3,001 peaked at ~700 kB a sequence in `analyze` (helper-20); the cache alone x 1.4 said 292 kB, so a
    probe it let through needed twice the machine's memory."""
    assert 650e3 < peak_bytes_per_sequence(build_transformer(d_vocab=3001)) < 800e3


def test_the_default_probe_fits_and_a_device_of_unknown_memory_is_not_checked():
    model = build_transformer()
    refuse_a_probe_too_big(model, 256, torch.device("cpu"), "data.probe_size")
    refuse_a_probe_too_big(model, 10**15, torch.device("meta"), "data.probe_size")  # no memory to compare with
