"""A plugin that raises or returns garbage is reported once and skipped for that epoch; the run and the other
plugins go on."""

import os
import warnings

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos.cli import main
from prevpos.loss import previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.notices import PrevposWarning
from prevpos.transformer import build_transformer
from prevpos_plugins.attention import AttentionPatterns
from tests.conftest import build_data, quiet_trainer


class _RaisesAtStep3(AnalysisPlugin):
    def analyze(self, run) -> Findings:
        if run.step == 3:
            raise RuntimeError("boom at step 3")
        findings = Findings()
        findings.scalar("faulty/raises_at_3", run.step)
        return findings


class _NaNScalar(AnalysisPlugin):
    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.scalar("faulty/nan", float("nan"))
        return findings


class _NotAFigure(AnalysisPlugin):
    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.figures["faulty/not_a_figure"] = "a string, not a figure"
        return findings


class _NotFindings(AnalysisPlugin):
    def analyze(self, run):
        return {"faulty/dict": 1.0}


class _NotText(AnalysisPlugin):
    """A number as text: it stopped the whole fit, in the thread that writes TensorBoard."""

    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.text("faulty/number", 42)
        return findings


class _VectorScalar(AnalysisPlugin):
    """Said "a Tensor with 3 elements cannot be converted to Scalar"."""

    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.scalar("faulty/vector", torch.ones(3))
        return findings


class _DrawNamedNotGiven(AnalysisPlugin):
    """Said "'str' object is not callable", when the figure was drawn, in the figure process."""

    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.figure("faulty/draw_named", "lines", series={"a": torch.ones(3)})
        return findings


FAULTY = [_RaisesAtStep3, _NaNScalar, _NotAFigure, _NotFindings, _NotText, _VectorScalar, _DrawNamedNotGiven]


class _OwnInitOnly(AnalysisPlugin):
    """Healthy, but its __init__ does not call super().__init__(), as a Lightning Callback need not: that was an
    AttributeError ('no attribute dense_epochs') in the middle of the fit."""

    def __init__(self, value: float = 2.0):
        self.value = value

    def analyze(self, run) -> Findings:
        findings = Findings()
        findings.scalar("own_init/value", self.value)
        return findings


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    """One 3-epoch run with a healthy plugin and every kind of faulty one (figures drawn inline), analysing in the
    analysis process as on a GPU: failures cross from there."""
    tmp_path = tmp_path_factory.mktemp("faults")
    os.environ["PREVPOS_RENDER"], previous = "inline", os.environ.get("PREVPOS_RENDER")
    os.environ["PREVPOS_ANALYSIS"] = "process"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = quiet_trainer(max_epochs=3, logger=TensorBoardLogger(str(tmp_path), name="run"),
                                    log_every_n_steps=1,
                                    callbacks=[AttentionPatterns(figure_every_n_epochs=1), _OwnInitOnly(),
                                               *(cls() for cls in FAULTY)])
            trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=3))
    finally:
        os.environ.pop("PREVPOS_RENDER") if previous is None else os.environ.update(PREVPOS_RENDER=previous)
        os.environ.pop("PREVPOS_ANALYSIS")
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"scalars": 0, "images": 0,
                                                                                  "tensors": 0})
    events.Reload()
    warned = [str(w.message) for w in caught if "was skipped" in str(w.message) and w.category is PrevposWarning]
    return trainer, events, warned


def test_training_and_the_healthy_plugin_go_on(faulty_run):
    trainer, events, _ = faulty_run
    assert trainer.state.finished and trainer.global_step == 9
    assert [e.step for e in events.Scalars("attention/prev_token_score/L1H0")] == [0, 3, 6, 9]
    assert [e.step for e in events.Images("attention/mean_pattern/L1H0")] == [0, 3, 6, 9]
    assert [e.step for e in events.Scalars("val/acc")] == [2, 5, 8]
    assert [(e.step, e.value) for e in events.Scalars("own_init/value")] == [(0, 2.0), (3, 2.0), (6, 2.0), (9, 2.0)]


def test_a_failure_skips_only_that_epoch(faulty_run):
    _, events, _ = faulty_run
    assert [(e.step, e.value) for e in events.Scalars("faulty/raises_at_3")] == [(0, 0), (6, 6), (9, 9)]
    garbage = {"faulty/nan", "faulty/dict", "faulty/vector"} & set(events.Tags()["scalars"])
    assert not garbage and not {"faulty/not_a_figure", "faulty/draw_named"} & set(events.Tags()["images"])


def test_each_faulty_plugin_is_reported_once(faulty_run):
    _, events, warned = faulty_run
    for cls in FAULTY:
        mine = [w for w in warned if w.startswith(f"plugin {cls.__name__} failed")]
        assert len(mine) == 1, (cls.__name__, warned)
        assert [e.step for e in events.Tensors(f"plugin_errors/{cls.__name__}/text_summary")] == [_first_step(cls)]
    assert "boom at step 3" in next(w for w in warned if "_RaisesAtStep3" in w)
    text = events.Tensors("plugin_errors/_RaisesAtStep3/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'raise RuntimeError("boom at step 3")' in text  # the line in the plugin, from the analysis process
    assert "scalar faulty/nan is nan" in next(w for w in warned if "_NaNScalar" in w)
    assert "figure faulty/not_a_figure is a str" in next(w for w in warned if "_NotAFigure" in w)
    assert "returned a dict, not Findings" in next(w for w in warned if "_NotFindings" in w)
    assert "text faulty/number is 42, not a str" in next(w for w in warned if "_NotText" in w)
    assert ("scalar faulty/vector: a number or a one-element tensor, not a tensor of shape (3,); reduce it first"
            in next(w for w in warned if "_VectorScalar" in w))
    assert ("figure faulty/draw_named: render must be a function that returns a matplotlib Figure (e.g. "
            "prevpos.figures.lines), not 'lines'" in next(w for w in warned if "_DrawNamedNotGiven" in w))


def test_prevpos_warnings_print_as_one_line_without_the_source_line():
    said = warnings.formatwarning("plugin Boom failed", PrevposWarning, "/x/prevpos/analysis/plugin.py", 168,
                                  "warn(message)")
    assert said == "prevpos: warning: plugin Boom failed\n"  # was the file, line, "UserWarning:", then that source line
    assert "UserWarning: other" in warnings.formatwarning("other", UserWarning, "/x/mine.py", 1, "warn(other)")


def _first_step(cls) -> int:
    return 3 if cls is _RaisesAtStep3 else 0


@pytest.mark.parametrize("place", ["thread", "process"])
def test_strict_plugin_stops_the_run(tmp_path, monkeypatch, place):
    monkeypatch.setenv("PREVPOS_ANALYSIS", place)
    trainer = quiet_trainer(max_epochs=2, callbacks=[_RaisesAtStep3(strict=True)])
    with pytest.raises(RuntimeError, match="boom at step 3"):
        trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=3))


def test_a_strict_plugin_is_not_said_to_be_skipped_as_it_stops_the_run(in_tmp, monkeypatch):
    """fit printed "plugin Boom failed at step 5 and was skipped ... (set strict: true to stop on it)", then the
    traceback of the same failure stopping the run."""
    (in_tmp / "my_strict_plugins.py").write_text(
        "from prevpos.analysis import AnalysisPlugin\n\n\n"
        "class _Boom(AnalysisPlugin):\n"
        "    def analyze(self, run):\n"
        "        return run.cache['pattern', 5]\n")
    monkeypatch.syspath_prepend(str(in_tmp))
    with pytest.raises(KeyError), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        main(["fit", "--trainer.callbacks+=my_strict_plugins._Boom", "--trainer.callbacks.strict=true",
              "--trainer.max_epochs=3", "--data.steps_per_epoch=5", "--trainer.enable_progress_bar=false"])
    assert not [w for w in warned if "skipped" in str(w.message)]


def tiny_model_and_probe() -> tuple:
    model = build_transformer(d_model=16, d_head=16, n_ctx=4, d_vocab=8, seed=1)
    return model, torch.randint(0, 7, (8, 4), generator=torch.Generator().manual_seed(0))


class _LeavesAHook(AnalysisPlugin):
    def __init__(self, permanent: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.permanent = permanent

    def analyze(self, run) -> Findings:  # and never removes it
        run.model.add_hook("blocks.1.attn.hook_z", lambda z, hook: z * 0, is_permanent=self.permanent)
        return Findings()


class _AblatesInPlace(AnalysisPlugin):
    """Zeroes layer 1's W_O to measure the loss without it, then restores it or not."""

    def __init__(self, restore: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.restore = restore

    def analyze(self, run) -> Findings:
        saved = run.model.blocks[1].attn.W_O.clone()
        run.model.blocks[1].attn.W_O.zero_()  # before the first look at the shared cache
        findings = Findings()
        findings.scalar("ablated/loss", previous_token_loss(run.model(run.tokens), run.tokens))
        findings.scalar("ablated/shared_loss", run.loss)
        if self.restore:
            run.model.blocks[1].attn.W_O.copy_(saved)
        return findings


def test_a_plugin_that_leaves_the_weights_changed_fails_and_they_are_put_back():
    model, tokens = tiny_model_and_probe()
    with analysis_mode(model):
        clean = model(tokens)
        run = ProbeRun(model, tokens)
        restored = _AblatesInPlace(restore=True).analyze_checked(run)
        with pytest.raises(ValueError, match=r"left run.model's weights changed \(blocks.1.attn.W_O\): put back for "
                                             r"the plugins after it; ablate weights on a copy"):
            _AblatesInPlace().analyze_checked(run)
        torch.testing.assert_close(model(tokens), clean, rtol=0, atol=0)
    # The shared forward is the step's own, though the plugin changed the weights before it first asked for it.
    assert restored.scalars["ablated/shared_loss"] == run.loss == previous_token_loss(clean, tokens).item()
    assert restored.scalars["ablated/loss"] != pytest.approx(run.loss)  # the ablation itself ran on the zeroed W_O


def test_a_plugin_that_changes_nothing_on_a_model_with_nan_weights_is_not_blamed():
    """NaN is not equal to itself: such a model's weights were put back, and each plugin failed, at every step."""
    model, tokens = tiny_model_and_probe()
    with torch.no_grad():
        model.blocks[0].attn.W_Q[0, 0, 0] = float("nan")  # TransformerLens zeroes the NaN patterns: the loss is finite
    with analysis_mode(model):
        run = ProbeRun(model, tokens)
        findings = _AblatesInPlace(restore=True).analyze_checked(run)
    assert findings.scalars["ablated/shared_loss"] == run.loss < 10


class _EditsTheSharedCache(AnalysisPlugin):
    def analyze(self, run) -> Findings:
        run.cache["pattern", 1][:, :, :, 0] = 0  # no BOS attention, in place
        return Findings()


def test_a_plugin_that_edits_the_shared_cache_fails_and_the_next_gets_it_anew():
    model, tokens = tiny_model_and_probe()
    with analysis_mode(model):
        run = ProbeRun(model, tokens)
        pattern = run.cache["pattern", 1].clone()
        with pytest.raises(ValueError, match="changed run.logits or run.cache in place, which every plugin of the step "
                                             "shares: run again for the plugins after it; change a copy"):
            _EditsTheSharedCache().analyze_checked(run)
        torch.testing.assert_close(run.cache["pattern", 1], pattern, rtol=0, atol=0)


@pytest.mark.parametrize("permanent", [False, True])  # a permanent one outlived reset_hooks()
def test_a_hook_a_plugin_leaves_on_the_model_is_gone_before_the_next_plugin_runs(permanent):
    model, tokens = tiny_model_and_probe()
    with analysis_mode(model):
        clean = model(tokens)
        _LeavesAHook(permanent).analyze_checked(ProbeRun(model, tokens))
        torch.testing.assert_close(model(tokens), clean, rtol=0, atol=0)
