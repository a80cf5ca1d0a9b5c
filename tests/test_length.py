"""Length generalization: the rebuilt longer model is the same function, and the plugin's numbers."""

import torch

from prevpos.analysis import ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos.sequences import probe_tokens
from prevpos.transformer import build_transformer
from prevpos_plugins.length import LengthGeneralization, resample, with_context

PROBE = probe_tokens(256, 10, 101, 100, seed=3)


def test_longer_rebuild_reproduces_the_logits_exactly_at_the_trained_length(trained_module):
    model = trained_module.model
    longer = with_context(model, 40)
    assert longer.cfg.n_ctx == 40 and not longer.W_pos.any()
    with torch.no_grad():
        assert torch.equal(longer(PROBE), model(PROBE))


def test_resample_keeps_bos_first_and_the_probe_tokens():
    tokens = resample(PROBE, 64, 40)
    assert tokens.shape == (64, 40) and (tokens[:, 0] == 100).all()
    assert set(tokens[:, 1:].unique().tolist()) <= set(PROBE[:, 1:].unique().tolist())
    assert torch.equal(tokens, resample(PROBE, 64, 40))  # the same sequences every epoch


def test_plugin_on_a_trained_model(trained_module):
    model = trained_module.model
    with analysis_mode(model):
        findings = LengthGeneralization(strict=True).analyze(ProbeRun(model, PROBE))
    scalars = findings.scalars
    assert set(scalars) == {f"length/{k}_len{n}" for k in ("acc", "loss") for n in (10, 20, 40)}
    assert scalars["length/acc_len10"] > 0.95
    assert all(0 <= scalars[f"length/acc_len{n}"] <= 1 for n in (20, 40))
    series = findings.figures["length/acc_by_position"].data["series"]
    assert [len(v) for v in series.values()] == [9, 19, 39]


def test_learned_positions_skip_the_longer_lengths():
    model = build_transformer(positional="learned")
    with analysis_mode(model):
        findings = LengthGeneralization(strict=True).analyze(ProbeRun(model, PROBE))
    assert set(findings.scalars) == {"length/acc_len10", "length/loss_len10"}
    assert "learned positions" in findings.texts["length/skipped"]
