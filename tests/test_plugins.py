"""Every discovered plugin in a real short fit with a real TensorBoard logger; failures; third-party plugins; the
mechanism on a trained model."""

import copy
import gc
import io
import json
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos.fast.threads import CpuThreads
from prevpos.figures import heatmap_grid
from prevpos.module import PrevTokenModel
from prevpos.registry import discover_plugins
from prevpos.sequences import probe_tokens
from prevpos.transformer import build_transformer
from tests.conftest import build_data, quiet_trainer

PLUGINS = discover_plugins()


def events(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def short_fit(tmp_path: Path, *plugins: AnalysisPlugin, epochs: int = 2):
    """2 epochs x 5 steps: plugins run at step 0 and after each epoch, with a real TensorBoardLogger."""
    logger = TensorBoardLogger(tmp_path, name="run")
    module, data = PrevTokenModel(), build_data()
    trainer = quiet_trainer(max_epochs=epochs, logger=logger, callbacks=[CpuThreads(), *plugins])
    trainer.fit(module, data)
    return trainer, module, data, Path(logger.log_dir)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_logs_its_scalars_and_images_to_tensorboard(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PREVPOS_RENDER", "thread")  # same writer, minus ~10 s per fit to spawn the render process
    plugin = PLUGINS[name]()
    plugin.strict = True  # a failure should fail this test, not be reported and skipped
    trainer, module, data, log_dir = short_fit(tmp_path, plugin)
    with analysis_mode(module.model):
        expected = plugin.analyze(ProbeRun(module.model, data.probe_tokens()))
    assert expected.scalars and expected.figures, f"{name} should log at least one scalar and one image"
    logged = events(log_dir)
    tags = logged.Tags()
    assert set(expected.scalars) <= set(tags["scalars"])
    assert set(expected.figures) <= set(tags["images"])
    first = sorted(expected.scalars)[0]
    assert {e.step for e in logged.Scalars(first)} >= {0, trainer.global_step}  # before training and at its end
    image = logged.Images(sorted(expected.figures)[0])[-1]
    png = Image.open(io.BytesIO(image.encoded_image_string))
    assert png.format == "PNG" and png.size == (image.width, image.height) and min(png.size) > 100


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_numbers_do_not_depend_on_the_default_dtype(name):
    """torch's default dtype is process-wide, and a bf16-true or 16-true fit sets it while it steps, beside the
    analysis thread. Every analysis must give its float32 numbers then too: the explanation's algorithm made a
    float32 identity and failed ("expected m1 and m2 to have the same dtype") at every step of such a run."""
    model = build_transformer(seed=0)
    plugin = PLUGINS[name]()
    with analysis_mode(model):
        expected = plugin.analyze(ProbeRun(model, probe_tokens(64, 10, 101, 100, seed=1234)))
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            found = plugin.analyze(ProbeRun(model, probe_tokens(64, 10, 101, 100, seed=1234)))
        finally:
            torch.set_default_dtype(before)
    assert expected.scalars and found.scalars.keys() == expected.scalars.keys()
    for tag, value in expected.scalars.items():
        assert found.scalars[tag] == pytest.approx(value, rel=1e-5, abs=1e-6), tag


def test_figure_data_is_stored_as_numpy_even_when_nested():
    # The writer draws in another process: tensors (possibly on a GPU) must not travel there.
    findings = Findings()
    findings.figure("t", heatmap_grid, matrices={"a": torch.eye(2)}, labels={"a": ["x", "y"]}, title="t")
    data = findings.figures["t"].data
    assert isinstance(data["matrices"]["a"], np.ndarray) and data["labels"]["a"] == ["x", "y"]
    assert findings.figures["t"].draw().axes


def test_default_schedule_logs_figures_through_the_transition_and_sparsely_after(tmp_path, monkeypatch):
    """Scalars at every epoch of the dense phase (12), then every 10; figures every 2 epochs in the dense phase
    (with 10 steps an epoch: steps 20, 40, ..., 120, the frames of the transition, which forms at ~30-90), then
    every 10; both at the start and at the end."""
    monkeypatch.setenv("PREVPOS_RENDER", "thread")

    class _Norm(AnalysisPlugin):
        def analyze(self, run: ProbeRun) -> Findings:
            findings = Findings()
            findings.scalar("norm/W_E", run.model.W_E.norm())
            findings.figure("norm/by_token", heatmap_grid, matrices={"W_E": run.model.W_E[:8, :8]}, title="W_E")
            return findings

    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = quiet_trainer(max_epochs=23, logger=logger, callbacks=[_Norm(strict=True)])
    trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=1, batch_size=8))
    logged = events(Path(logger.log_dir))
    assert [e.step for e in logged.Scalars("norm/W_E")] == [*range(13), 20, 23]
    assert [e.step for e in logged.Images("norm/by_token")] == [0, 2, 4, 6, 8, 10, 12, 20, 23]


def test_a_failing_plugin_is_reported_once_and_training_goes_on(tmp_path):
    class _Broken(AnalysisPlugin):
        def analyze(self, run: ProbeRun) -> Findings:
            raise RuntimeError("boom")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _, _, log_dir = short_fit(tmp_path, _Broken())
    assert trainer.global_step == 10 and trainer.current_epoch == 2  # every step ran
    reports = [w for w in caught if "plugin _Broken failed" in str(w.message)]
    assert len(reports) == 1 and "boom" in str(reports[0].message)  # it failed 3 times, reported once
    assert "plugin_errors/_Broken/text_summary" in events(log_dir).Tags()["tensors"]


def test_a_strict_plugin_stops_training(tmp_path):
    class _Broken(AnalysisPlugin):
        def analyze(self, run: ProbeRun) -> Findings:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        short_fit(tmp_path, _Broken(strict=True))


def test_analyses_run_beside_training_on_the_weights_of_their_step(tmp_path):
    trained_on = threading.Event()

    class _Watch(Callback):  # the training model's weights at each analysed step, and when training passed step 4
        weights = {}

        def on_train_start(self, trainer, pl_module):
            self.weights[trainer.global_step] = pl_module.model.W_E.detach().clone()

        def on_train_epoch_end(self, trainer, pl_module):
            self.weights[trainer.global_step] = pl_module.model.W_E.detach().clone()

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 4:
                trained_on.set()

    class _Slow(AnalysisPlugin):
        seen = {}

        def analyze(self, run: ProbeRun) -> Findings:
            if run.step == 0:  # on the training thread this would wait in vain: step 4 would never come
                self.seen["training went on"] = trained_on.wait(timeout=60)
            self.seen[run.step] = run.model.W_E.detach().clone()
            findings = Findings()
            findings.scalar("slow/w_e_sum", run.model.W_E.sum().item())
            return findings

    trainer, module, _, log_dir = short_fit(tmp_path, _Watch(), _Slow())
    assert _Slow.seen.pop("training went on") is True
    assert sorted(_Slow.seen) == sorted(_Watch.weights) == [0, 5, 10]
    for step, weights in _Watch.weights.items():
        assert torch.equal(_Slow.seen[step], weights), f"the analysis at step {step} saw other weights"
    assert not torch.equal(_Slow.seen[0], _Slow.seen[10])  # training moved them meanwhile
    logged = {e.step: e.value for e in events(log_dir).Scalars("slow/w_e_sum")}  # all written before fit returned
    assert logged == pytest.approx({s: w.sum().item() for s, w in _Watch.weights.items()}, rel=1e-5)


EXTERNAL_PLUGIN = '''
from prevpos.analysis import AnalysisPlugin, Findings


class ExternalProbeLoss(AnalysisPlugin):
    """A plugin shipped by another package."""

    def analyze(self, run):
        findings = Findings()
        findings.scalar("external/probe_loss", run.loss)
        return findings
'''


@pytest.fixture()
def installed_plugin_package(tmp_path, monkeypatch):
    """A package `extplug` installed on sys.path (module + dist-info) declaring a `prevpos.plugins` entry point."""
    site = tmp_path / "site"
    (site / "extplug").mkdir(parents=True)
    (site / "extplug" / "__init__.py").write_text(EXTERNAL_PLUGIN)
    info = site / "extplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[prevpos.plugins]\nexternal_probe = extplug:ExternalProbeLoss\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("extplug", None)  # so later discover_plugins() calls do not find it any more
    gc.collect()


def test_an_installed_package_plugin_runs_by_short_name_from_yaml(installed_plugin_package, in_tmp):
    from prevpos.cli import main

    assert "ExternalProbeLoss" in discover_plugins()
    (in_tmp / "ext.yaml").write_text("""
trainer:
  max_epochs: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks: [{class_path: ExternalProbeLoss}]
  logger: {class_path: TensorBoardLogger, init_args: {save_dir: logs, name: ext}}
data: {batch_size: 32, steps_per_epoch: 3, val_size: 64, probe_size: 64}
""")
    main(["fit", "--config", "ext.yaml"])
    (log_dir,) = (in_tmp / "logs" / "ext").glob("version_*")
    loss = events(log_dir).Scalars("external/probe_loss")
    assert [e.step for e in loss] == [0, 3] and 0 < loss[-1].value < 6  # chance is ln(100) = 4.6


def readme_plugin() -> str:
    """The code block the README calls "a complete plugin"."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    return readme.split("This is a complete plugin:")[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_plugin_runs_as_the_readme_says(tmp_path, in_tmp, monkeypatch, capsys):
    """Saved as plugins/entropy.py, it logs its scalars and figures by its short name, and `--help` shows its Args."""
    import prevpos_plugins
    from prevpos.cli import main

    (tmp_path / "entropy.py").write_text(readme_plugin())
    monkeypatch.setattr(prevpos_plugins, "__path__", [*prevpos_plugins.__path__, str(tmp_path)])
    monkeypatch.setenv("PREVPOS_RENDER", "thread")
    try:
        main(["fit", "--trainer.max_epochs=1", "--data.steps_per_epoch=3", "--data.batch_size=32", "--data.val_size=64",
              "--data.probe_size=64", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
              "--trainer.callbacks+=AttentionEntropy"])
        with pytest.raises(SystemExit):
            main(["fit", "--trainer.callbacks.help", "AttentionEntropy"])
        main(["analyze", "--weights", "lightning_logs/default/version_0/checkpoints/last.ckpt", "--out", "try1",
              "--plugins", "AttentionEntropy", "--probe_size", "64"])  # the fit's probe
    finally:
        sys.modules.pop("prevpos_plugins.entropy", None)  # so later discover_plugins() calls do not find it
        gc.collect()
    assert "First destination position to average over" in capsys.readouterr().out
    logged = events(in_tmp / "lightning_logs" / "default" / "version_0")
    for layer in (0, 1):
        entropy = logged.Scalars(f"entropy/L{layer}H0")
        assert [e.step for e in entropy] == [0, 3] and all(0 < e.value <= np.log(10) for e in entropy)
        assert logged.Images(f"entropy/by_position/L{layer}H0")
    analyzed = json.loads((in_tmp / "try1" / "metrics.json").read_text())
    assert analyzed["entropy/L1H0"] == pytest.approx(entropy[-1].value, rel=1e-6)  # the same weights, the same probe
    assert (in_tmp / "try1" / "entropy" / "by_position" / "L1H0.png").is_file()


def test_the_mechanism_on_the_trained_model(trained_module, capsys):
    """The tutorial's findings (docs/science.md), asserted only where the science predicts a direction."""
    model = trained_module.model
    run = ProbeRun(model, probe_tokens(1024, 10, 101, 100, seed=1234))
    found = Findings()
    with analysis_mode(model):
        for name in ("AttentionPatterns", "OVCircuit", "QKTermImportance", "AdversarialExamples"):
            found.update(PLUGINS[name]().analyze(run))
    s = found.scalars
    with capsys.disabled():
        print("\ntrained_module:", {k: round(v, 4) for k, v in s.items() if "bos_by_pos" not in k})
    assert s["attention/prev_token_score/L1H0"] > 0.5  # layer 1 looks back one token more than anywhere else
    assert s["ov/copy_top1/L1H0"] > 0.9 and s["ov/copy_eigen/L1H0"] > 0.9  # and copies what it sees
    assert s["qk_terms/sum_check_max_abs_err"] < 1e-3
    zero = {t: s[f"qk_terms/zero_ablation_loss/{t}"] for t in ("direct", "k_comp", "q_comp", "qk_comp")}
    assert set(sorted(zero, key=zero.get)[-2:]) == {"direct", "qk_comp"}  # the two terms the mechanism needs
    assert zero["direct"] > 10 * s["qk_terms/clean_loss"] and zero["qk_comp"] > 10 * s["qk_terms/clean_loss"]
    # The HPARAMS table's columns: the scores of the head most on the previous token, here layer 1's
    assert s["attention/prev_token_score/prev_token_head"] == pytest.approx(s["attention/prev_token_score/L1H0"])
    assert s["ov/copy_top1/prev_token_head"] == s["ov/copy_top1/L1H0"]
    assert s["attention/bos_score/counting_head"] == pytest.approx(s["attention/bos_score/L0H0"])
    assert s["attention/bos_score/counting_head"] > 0.214 + 0.1  # uniform attention's BOS weight at n_ctx 10, + 0.1
    clean = s["adversarial/clean/loss"]
    assert s["adversarial/repeated_pairs/loss"] > 2 * clean  # "not my own token" also pushes the equal neighbour away
    assert s["adversarial/no_bos/loss"] > 10 * clean  # nothing to count from


def with_heads_swapped(model, layer: int):
    """The same function with the layer's two heads in the other order."""
    swapped = copy.deepcopy(model)
    with torch.no_grad():
        for name, weight in swapped.blocks[layer].attn.named_parameters():
            if weight.shape[0] == 2:  # W_Q, W_K, W_V, W_O and their biases are [head, ...]
                weight.copy_(weight.flip(0))
    return swapped


def test_the_table_follows_the_heads_most_on_the_previous_token_and_on_bos_whichever_they_are(trained_two_heads):
    """Two layer-1 heads that both look back (0.66 and 0.67 in two_heads.yaml): the table's columns were L1H0's
    (and layer 0's, L0H0's)."""
    chosen, tables = [], []
    swapped = with_heads_swapped(with_heads_swapped(trained_two_heads, 1), 0)
    for model in (trained_two_heads, swapped):
        found = Findings()
        with analysis_mode(model):
            run = ProbeRun(model, probe_tokens(256, 10, 101, 100, seed=1234))
            for name in ("AttentionPatterns", "OVCircuit"):
                found.update(PLUGINS[name]().analyze(run))
        s = found.scalars
        heads = [tag.rsplit("/", 1)[1] for tag in s if tag.startswith("attention/prev_token_score/L")]
        top = max(heads, key=lambda head: s[f"attention/prev_token_score/{head}"])
        assert s["attention/prev_token_score/prev_token_head"] == pytest.approx(s[f"attention/prev_token_score/{top}"])
        assert s["ov/copy_top1/prev_token_head"] == s[f"ov/copy_top1/{top}"]
        counter = max(("L0H0", "L0H1"), key=lambda head: s[f"attention/bos_score/{head}"])
        assert s["attention/bos_score/counting_head"] == pytest.approx(s[f"attention/bos_score/{counter}"])
        chosen.append((top, counter))
        tables.append([s[f"{name}/{head}"] for name, head in [("attention/prev_token_score", "prev_token_head"),
                                                               ("ov/copy_top1", "prev_token_head"),
                                                               ("attention/bos_score", "counting_head")]])
    assert {chosen[0][0], chosen[1][0]} == {"L1H0", "L1H1"}  # the other head once the two trade places
    assert {chosen[0][1], chosen[1][1]} == {"L0H0", "L0H1"}
    assert tables[0] == pytest.approx(tables[1], abs=1e-5)  # the same model, the same table
