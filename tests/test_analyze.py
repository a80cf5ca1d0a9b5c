"""`python -m prevpos analyze` on a fit checkpoint and on a raw TransformerLens state_dict; bad input."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prevpos.cli import main
from prevpos.errors import ConfigError
from prevpos.loss import previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.notices import PrevposWarning
from prevpos.transformer import HookedTransformer, HookedTransformerConfig, build_transformer
from prevpos.weights import epochs_of, load_weights
from prevpos_plugins.adversarial import adversarial_batch
from tests.conftest import build_data, quiet_trainer

KEY_TAGS = ["probe/loss", "probe/acc", "attention/prev_token_score/L1H0", "ov/copy_top1/L1H0", "ov/copy_eigen/L1H0",
            "qk_terms/sum_check_max_abs_err", "qk_terms/zero_ablation_loss/direct", "adversarial/no_bos/loss"]


@pytest.fixture(scope="module")
def fit_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by a real (short) Lightning fit."""
    root = tmp_path_factory.mktemp("fit")
    trainer = quiet_trainer(max_epochs=1, default_root_dir=root)
    trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=3))
    trainer.save_checkpoint(root / "last.ckpt")
    return root / "last.ckpt"


def analyze(*args) -> None:
    main(["analyze", *map(str, args)])


def plugins_module(folder: Path, monkeypatch, name: str, source: str) -> None:
    """A module of one's own plugins, `name`.py in `folder`, importable as `name` for this test."""
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))


def analyze_on_a_small_probe(checkpoint: Path, out: Path, *plugins: str) -> None:
    analyze("--weights", checkpoint, "--out", out, "--probe_size", 32, *(["--plugins", *plugins] if plugins else []))


def test_analyze_a_fit_checkpoint_writes_metrics_pngs_and_events(fit_checkpoint, tmp_path, capsys):
    out = tmp_path / "analysis"
    analyze("--weights", fit_checkpoint, "--out", out, "--probe_size", 64)
    assert "probe loss" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(KEY_TAGS) <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    assert 0 <= metrics["probe/acc"] <= 1 and metrics["qk_terms/sum_check_max_abs_err"] < 1e-3
    pngs = {p.relative_to(out).with_suffix("").as_posix(): p for p in out.rglob("*.png")}
    assert {"ov/full_circuit/L1H0", "qk_terms/ablation_losses/L1H0", "adversarial/patterns/L1H0"} <= set(pngs)
    with Image.open(pngs["ov/full_circuit/L1H0"]) as png:
        png.load()
        assert png.format == "PNG" and min(png.size) > 100
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert set(pngs) <= set(events.Tags()["images"]) and set(metrics) <= set(events.Tags()["scalars"])
    assert events.Scalars("probe/loss")[0].step == 3  # the checkpoint's training step
    assert "model" in (out / "config.yaml").read_text()


RUN_DATA = ["--data.bos=false", "--data.n_tokens=20", "--data.probe_size=32", "--data.probe_seed=7"]
RUN_TAGS = ["attention/prev_token_score/L1H0", "adversarial/clean/loss", "adversarial/repeated_pairs/acc"]


def test_analyze_draws_the_probe_the_run_drew(in_tmp, capsys):
    """A run without BOS, of 20 tokens, was analysed on the default probe (BOS, 100 tokens, 256 sequences): other
    numbers than its fit logged. And AdversarialExamples drew tokens the model never saw, in fit too."""
    main(["fit", *RUN_DATA, "--trainer.max_epochs=2", "--data.steps_per_epoch=5", "--data.batch_size=64",
          "--data.val_size=64", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
          "--trainer.callbacks+=AttentionPatterns", "--trainer.callbacks+=AdversarialExamples"])
    run_dir = in_tmp / "lightning_logs" / "default" / "version_0"
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    logged = {tag: events.Scalars(tag)[-1] for tag in RUN_TAGS}
    assert {event.step for event in logged.values()} == {10}  # the last step, as last.ckpt
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert epochs_of(torch.load(checkpoint, weights_only=True)) == 2  # analyze's run.epoch, as the fit's at step 10 (Lightning's `epoch`: 1)
    saved = torch.load(checkpoint, weights_only=True)
    del saved["PrevTokenData"]["data_settings"]  # as saved before checkpoints held them: read off config.yaml
    torch.save(saved, run_dir / "checkpoints" / "older.ckpt")
    for name in ("last", "older"):
        analyze("--weights", run_dir / "checkpoints" / f"{name}.ckpt", "--out", in_tmp / name, "--plugins",
                "AttentionPatterns", "AdversarialExamples")
        said = capsys.readouterr().out
        assert "probe: 32 sequences, seed 7, tokens 0..19, no BOS (the run's settings, from " in said
        metrics = json.loads((in_tmp / name / "metrics.json").read_text())
        assert {tag: metrics[tag] for tag in RUN_TAGS} == pytest.approx({t: e.value for t, e in logged.items()},
                                                                         rel=1e-5)
        config = yaml.safe_load((in_tmp / name / "config.yaml").read_text())  # as fit's, for `report`
        assert config["step"] == 10 and config["data"]["bos"] is False and config["data"]["n_tokens"] == 20
    tokens = adversarial_batch("clean", 64, 10, 101, seed=0, n_tokens=20)
    assert tokens[:, 0].eq(100).all() and tokens[:, 1:].max() < 20  # in fit, from the run's ProbeRun.n_tokens
    analyze("--weights", checkpoint, "--out", in_tmp / "given", "--probe_size", 16, "--plugins", "AttentionPatterns")
    assert "probe: 16 sequences, seed 7, tokens 0..19, no BOS (the run's settings, from its checkpoint, but " \
           "--probe_size 16)" in capsys.readouterr().out
    from prevpos.commands.analyze import main as analyze_main  # a no-BOS run on sequences that all begin with BOS

    with pytest.raises(ConfigError, match=r"^--notebook_probe true: the tutorial's sample begins every sequence with "
                                          r"BOS, and the run trained without it \(data.bos false\); leave it out$"):
        analyze_main(["--weights", str(checkpoint), "--out", str(in_tmp / "notebook"), "--notebook_probe", "true"])
    assert not (in_tmp / "notebook").exists()
    both = torch.load(checkpoint, weights_only=True)  # saved before fit refused the pair: named, with the way out
    both["PrevTokenData"]["data_settings"]["notebook_probe"] = True
    torch.save(both, run_dir / "checkpoints" / "both.ckpt")
    with pytest.raises(ConfigError, match=r"^the run's data.notebook_probe true \(saved before prevpos refused it\): "
                                          r"the tutorial's sample .* pass --notebook_probe false$"):
        analyze_main(["--weights", str(run_dir / "checkpoints" / "both.ckpt"), "--out", str(in_tmp / "both")])
    analyze("--weights", run_dir / "checkpoints" / "both.ckpt", "--out", in_tmp / "both", "--notebook_probe", "false",
            "--plugins", "AttentionPatterns")
    assert (in_tmp / "both" / "metrics.json").is_file()


def test_analyze_never_writes_into_a_non_empty_directory(fit_checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists, a directory that is not empty; pick a new directory"):
        from prevpos.commands.analyze import main as analyze_main

        analyze_main(["--weights", str(fit_checkpoint), "--out", str(out)])
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_an_analyze_stopped_while_writing_leaves_nothing_in_the_way_of_the_next(fit_checkpoint, tmp_path,
                                                                                 monkeypatch):
    """Ctrl-C while the figures were saved left a half-written --out, which the next analyze refused as not empty."""
    from matplotlib.figure import Figure

    out, savefig, saved = tmp_path / "analysis", Figure.savefig, []

    def stopped_at_the_third(figure, *args, **kwargs):
        saved.append(1)
        if len(saved) == 3:
            raise KeyboardInterrupt
        return savefig(figure, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Figure, "savefig", stopped_at_the_third)
        analyze("--weights", fit_checkpoint, "--out", out, "--probe_size", 64)
    assert list(tmp_path.iterdir()) == []  # neither `analysis` nor its hidden partial folder
    analyze("--weights", fit_checkpoint, "--out", out, "--probe_size", 64)
    assert (out / "metrics.json").is_file() and len(list(out.rglob("*.png"))) > 3


def test_raw_state_dict_with_the_notebook_probe_reproduces_the_tutorials_sample(tmp_path):
    model = build_transformer(seed=7)
    torch.save(model.state_dict(), tmp_path / "model.pth")  # the public tutorial's format: W_pos and b_* as zeros
    out = tmp_path / "analysis"
    analyze("--weights", tmp_path / "model.pth", "--out", out, "--probe_size", 256, "--probe_seed", 42,
            "--notebook_probe", "true", "--plugins", "OVCircuit")
    torch.manual_seed(42)
    tokens = torch.randint(0, model.cfg.d_vocab, (256, model.cfg.n_ctx))  # the tutorial's literal expression
    tokens[:, 0] = model.cfg.d_vocab - 1
    with torch.no_grad():
        expected = previous_token_loss(model(tokens), tokens).item()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["probe/loss"] == pytest.approx(expected, rel=1e-6)
    assert set(metrics) == {"probe/loss", "probe/acc", "ov/copy_top1/L0H0", "ov/copy_eigen/L0H0", "ov/copy_top1/L1H0",
                            "ov/copy_eigen/L1H0", "ov/copy_top1/prev_token_head"}


def test_notebook_probe_is_the_literal_expression():
    from prevpos.sequences import probe_tokens

    torch.manual_seed(42)
    expected = torch.randint(0, 101, (256, 10))
    expected[:, 0] = 100
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(probe_tokens(256, 10, 101, 100, 42, notebook=True), expected)
    assert torch.equal(torch.rand(1), before)  # and the global RNG is left as it was


@pytest.mark.parametrize("shape", [
    dict(),  # the tutorial's model
    dict(n_layers=3, n_heads=2, d_model=64, d_head=16, n_ctx=6, d_vocab=21),
    dict(n_layers=1, attn_only=False, positional="learned"),
])
def test_a_raw_state_dict_is_rebuilt_with_its_own_shape(shape, tmp_path):
    """A model trained elsewhere (a notebook) is analysed without saying its settings: they are read off its
    tensors. Only the tutorial's own shape loaded before."""
    saved = build_transformer(**shape, seed=3)
    if shape.get("positional") == "learned":
        with torch.no_grad():
            saved.pos_embed.W_pos.normal_()  # as training would leave them
    torch.save(saved.state_dict(), tmp_path / "model.pth")
    model, settings, step = load_weights(tmp_path / "model.pth")
    assert {k: settings[k] for k in shape} == shape and step == 0
    tokens = torch.randint(0, model.cfg.d_vocab - 1, (4, model.cfg.n_ctx))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), saved(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("content, message", [
    # torch's own reason was "list index out of range" or "101", depending on the text
    ("text", "not a torch file of weights (not a complete zip archive written by torch.save: another kind of file"),
    ({"something": torch.zeros(2)}, "neither a `prevpos fit` checkpoint"),
    ("layer_norm_model", "does not fit the model (unexpected blocks.0.ln1.w;"),
    # torch.save(model), a notebook's habit: torch's weights_only paragraph, cut at its first line, said nothing useful
    ("whole_model", "a pickled HookedTransformer object, not weights; prevpos loads only tensors (unpickling could "
                    "run code): save them with torch.save(model.state_dict(), "),
])
def test_a_bad_weights_file_is_one_clear_line(content, message, tmp_path, capsys):
    path = tmp_path / "weights.pt"
    if content == "text":
        path.write_text("not weights")
    elif content == "whole_model":
        torch.save(build_transformer(n_layers=1, d_model=16, d_head=16), path)
    elif content == "layer_norm_model":  # prevpos builds none: its weights cannot be analysed as saved
        config = HookedTransformerConfig(n_layers=2, d_model=32, d_head=16, n_heads=2, n_ctx=10, d_vocab=101,
                                         attn_only=True, normalization_type="LN")
        torch.save(HookedTransformer(config).state_dict(), path)
    else:
        torch.save(content, path)
    with pytest.raises(SystemExit) as exit_:
        analyze("--weights", path, "--out", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("prevpos: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_the_readme_python_block_runs_on_a_fit_checkpoint(fit_checkpoint, in_tmp):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("### From Python")[1].split("```python\n", 1)[1].split("```", 1)[0]
    ckpt = in_tmp / "lightning_logs" / "default" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(fit_checkpoint.read_bytes())
    names = {}
    exec(compile(block, "README.md", "exec"), names)
    assert names["step"] == 3 and names["settings"]["n_ctx"] == 10
    assert names["tokens"].shape == (128, 10)  # the run's probe (build_data's size), not the default 256
    assert names["layer1_pattern"].shape == (10, 10)
    assert torch.allclose(names["layer1_pattern"].sum(-1), torch.ones(10))  # each destination's weights sum to 1
    assert 0 <= names["findings"].scalars["attention/prev_token_score/L1H0"] <= 1
    with Image.open(in_tmp / "mean_pattern_L1.png") as png:
        assert png.format == "PNG" and min(png.size) > 100


def test_plugins_by_class_path_as_fit_takes_them(fit_checkpoint, tmp_path, monkeypatch, capsys):
    """A plugin kept in a module of one's own ran in fit (--trainer.callbacks+=mymodule.MyPlugin) but analyze knew
    short names only."""
    plugins_module(tmp_path, monkeypatch, "my_probe_plugins",
                   "from prevpos.analysis import AnalysisPlugin, Findings\n\n\n"
                   "class ProbeSize(AnalysisPlugin):\n"
                   "    def analyze(self, run):\n"
                   "        findings = Findings()\n"
                   "        findings.scalar('mine/probe_size', run.tokens.shape[0])\n"
                   "        return findings\n")
    for out, plugins in [("out", ["my_probe_plugins.ProbeSize", "OVCircuit"]),
                         ("out_commas", ["my_probe_plugins.ProbeSize,OVCircuit"])]:  # was "no plugin named A,B"
        analyze_on_a_small_probe(fit_checkpoint, tmp_path / out, *plugins)
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        assert metrics["mine/probe_size"] == 32 and "ov/copy_top1/L1H0" in metrics
        assert not any(tag.startswith("attention/") for tag in metrics)  # only the plugins named
    capsys.readouterr()
    for name, said in [("no_such_module.P", "--plugins no_such_module.P: cannot import no_such_module "
                                             "(ModuleNotFoundError: No module named 'no_such_module')"),
                       ("my_probe_plugins.Absent", "--plugins: no plugin named my_probe_plugins.Absent (known: ")]:
        with pytest.raises(SystemExit):
            analyze("--weights", fit_checkpoint, "--out", tmp_path / "out2", "--plugins", name)
        assert said in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_a_failing_plugin_shows_its_traceback(fit_checkpoint, tmp_path, monkeypatch):
    """analyze is how a plugin's author tries it, and it gave them only KeyError('blocks.5.attn.hook_pattern') and
    advice to set `strict: true`, an option analyze does not have."""
    plugins_module(tmp_path, monkeypatch, "my_broken_plugins",
                   "from prevpos.analysis import AnalysisPlugin\n\n\n"
                   "class _ReadsLayer5(AnalysisPlugin):\n"
                   "    def analyze(self, run):\n"
                   "        return run.cache['pattern', 5]\n")
    with pytest.warns(UserWarning) as warned:
        analyze_on_a_small_probe(fit_checkpoint, tmp_path / "out", "my_broken_plugins._ReadsLayer5")
    [said] = [str(w.message) for w in warned if "_ReadsLayer5 failed" in str(w.message)]
    assert "return run.cache['pattern', 5]" in said and "strict" not in said


def test_a_figure_that_cannot_be_drawn_or_a_plugin_that_needs_a_setting_is_reported_and_the_rest_written(
        fit_checkpoint, tmp_path, monkeypatch, capsys):
    """analyze stopped at the first such figure with a traceback through prevpos, and wrote nothing; a plugin that
    needs a setting was a TypeError traceback."""
    plugins_module(tmp_path, monkeypatch, "my_figure_plugins",
        "from prevpos.analysis import AnalysisPlugin, Findings\n\n\n"
        "def broken(**data):\n"
        "    raise ValueError('a bug in my figure')\n\n\n"
        "def no_figure(**data):\n"
        "    return 3\n\n\n"
        "class _Figures(AnalysisPlugin):\n"
        "    def analyze(self, run):\n"
        "        findings = Findings()\n"
        "        findings.scalar('mine/ok', 1.0)\n"
        "        findings.figure('mine/broken', broken)\n"
        "        findings.figure('mine/no_figure', no_figure)\n"
        "        return findings\n\n\n"
        "class _NeedsSetting(AnalysisPlugin):\n"
        "    def __init__(self, threshold: float, **kwargs):\n"
        "        super().__init__(**kwargs)\n\n"
        "    def analyze(self, run):\n"
        "        return Findings()\n")
    with pytest.warns(UserWarning) as warned:
        analyze_on_a_small_probe(fit_checkpoint, tmp_path / "out", "my_figure_plugins._Figures", "OVCircuit")
    said = [str(w.message) for w in warned if "could not be drawn" in str(w.message)]
    assert len(said) == 2 and "raise ValueError('a bug in my figure')" in said[0]
    assert "TypeError('no_figure returned 3, not a matplotlib Figure')" in said[1]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["mine/ok"] == 1.0
    pngs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert pngs and all(p.startswith("ov/") for p in pngs)  # OVCircuit's, and none of the two that failed
    assert f"{len(pngs)} figures as" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        analyze("--weights", fit_checkpoint, "--out", tmp_path / "out2", "--plugins", "my_figure_plugins._NeedsSetting")
    # (test plugins are named _X: discovery leaves those out, so later tests that run every plugin do not get them)
    assert ("--plugins my_figure_plugins._NeedsSetting: cannot be built without arguments (_NeedsSetting.__init__() "
            "missing 1 required positional argument: 'threshold')") in capsys.readouterr().err
    # Not named, but one of every plugin found (an installed package's, say): left out, and the others run.
    import my_figure_plugins
    from prevpos import registry

    found = {**registry.discover_plugins(), "NeedsSetting": my_figure_plugins._NeedsSetting}
    monkeypatch.setattr(registry, "discover_plugins", lambda: found)
    with pytest.warns(PrevposWarning, match=r"plugin NeedsSetting left out: it cannot be built without arguments"):
        analyze_on_a_small_probe(fit_checkpoint, tmp_path / "out3")
    assert "ov/copy_top1/L1H0" in json.loads((tmp_path / "out3" / "metrics.json").read_text())
