"""The command line: a real short fit, help, print_config, and every experiment file."""

import contextlib
import gc
import io
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.utilities.model_summary import ModelSummary
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from prevpos import cli
from prevpos.analysis.plugin import plugins_of
from prevpos.cli import command_line, main
from prevpos.lightning_cli import build_cli
from prevpos.dashboard import TABLE_SCORES
from tests.conftest import lightning_info_lines

EXPERIMENTS = sorted(Path(__file__).parents[1].joinpath("experiments").glob("*.yaml"))
SHORT_FIT = ["fit", "--trainer.max_epochs=4", "--data.steps_per_epoch=25", "--data.val_size=512",
             "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"]


def scalars(run_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_short_fit_learns_and_logs_every_core_scalar(in_tmp):
    main(SHORT_FIT)
    run_dir = in_tmp / "lightning_logs" / "default" / "version_0"
    logged = scalars(run_dir)
    expected = {"train/loss", "train/acc", "val/loss", "val/acc"} | {f"val/acc_pos{i}" for i in range(1, 10)}
    assert expected <= set(logged)
    val_acc = [e.value for e in logged["val/acc"]]
    assert len(val_acc) == 4 and val_acc[-1] > 0.5  # chance is 0.01; 100 steps at lr 3e-3 reach ~0.9
    assert logged["val/loss"][-1].value < logged["val/loss"][0].value
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "checkpoints").glob("*.ckpt"))
    # TensorBoard's HPARAMS table: the run's settings, and the scores it reads off the run's own scalars
    events = EventAccumulator(str(run_dir))
    events.Reload()
    table = HParamsPluginData.FromString(events.SummaryMetadata("_hparams_/experiment").plugin_data.content)
    session = HParamsPluginData.FromString(events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)
    assert [m.name.tag for m in table.experiment.metric_infos] == TABLE_SCORES
    assert session.session_start_info.hparams["model.lr"].number_value == 3e-3
    assert session.session_start_info.hparams["data.steps_per_epoch"].number_value == 25
    assert "hp_metric" not in logged  # Lightning's placeholder column, -1 in every run


def test_fit_from_python_returns_the_trained_model_and_its_run(in_tmp):
    """A notebook goes on from the fit without loading its checkpoint; analyze and report return nothing."""
    cli_of_fit = main(["fit", "--trainer.max_epochs=1", "--data.steps_per_epoch=3", "--data.batch_size=16",
                       "--data.val_size=32", "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]"])
    run = Path(cli_of_fit.trainer.log_dir)  # relative to the working directory, as fit prints it
    assert run.resolve() == in_tmp / "lightning_logs" / "default" / "version_0" and cli_of_fit.trainer.global_step == 3
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    model = cli_of_fit.model.model  # the HookedTransformer
    assert all(torch.equal(value, saved[f"model.{name}"]) for name, value in model.state_dict().items())
    _, cache = model.run_with_cache(cli_of_fit.datamodule.probe_tokens()[:4])
    assert cache["pattern", 1].shape == (4, 1, 10, 10)
    assert main(["report", str(run)]) is None


def test_model_summary_counts_the_flops_of_one_training_batch(in_tmp):
    batch, n_ctx, d_model, d_head, d_vocab, n_layers = 4, 10, 128, 128, 101, 2
    cli = build_cli([f"--data.batch_size={batch}", "--data.val_size=64", "--trainer.max_epochs=1",
                     "--data.steps_per_epoch=1", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"],
                    run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    summary = ModelSummary(cli.model)
    tokens = batch * n_ctx
    # Per layer: the Q, K, V and O projections and the two [dest, src] products; then the unembedding.
    per_layer = 4 * 2 * tokens * d_model * d_head + 2 * 2 * batch * n_ctx * n_ctx * d_head
    assert summary.total_flops == n_layers * per_layer + 2 * tokens * d_model * d_vocab  # Lightning printed 0
    assert summary.in_sizes[0] == [batch, n_ctx] and summary.out_sizes[0] == [batch, n_ctx, d_vocab]


def test_validate_and_test_evaluate_a_checkpoint_on_the_runs_data(in_tmp):
    """They drew the default data: a run without BOS, of 20 tokens, scored val/acc 0.10 in `validate` where its fit
    logged 0.33; and with the default seed 0, a run of data.seed 1 was tested on its own validation set."""
    tiny = ["--data.batch_size=32", "--data.val_size=256", "--trainer.enable_progress_bar=false"]
    run = in_tmp / "lightning_logs" / "default" / "version_0"
    main(["fit", "--data.seed=1", "--data.bos=false", "--data.n_tokens=20", "--trainer.max_epochs=2",
          "--data.steps_per_epoch=5", "--trainer.callbacks=[]", *tiny])
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    main(["validate", "--ckpt_path", checkpoint, *tiny])
    with lightning_info_lines() as said:
        main(["test", "--ckpt_path", checkpoint, "--data.seed=5", *tiny])
    fitted = scalars(run)["val/acc"][-1].value
    assert scalars(run / "validate" / "version_0")["val/acc"][-1].value == fitted  # the same held-out set
    assert scalars(run / "test" / "version_0")["test/acc"][-1].value != fitted  # its own, not validation's
    assert "prevpos: test uses the run's data settings, not those given: data.seed=1 (given 5)" in said


def test_validate_and_test_evaluate_a_checkpoint_on_their_own_held_out_sets(in_tmp):
    small = ["--data.batch_size=64", "--data.val_size=512", "--trainer.enable_progress_bar=false"]
    runs = in_tmp / "lightning_logs" / "default"
    checkpoint = str(runs / "version_0" / "checkpoints" / "last.ckpt")
    with lightning_info_lines() as lightning_lines, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--trainer.max_epochs=3", "--data.steps_per_epoch=25", "--trainer.callbacks=[]", *small])
        main(["validate", "--ckpt_path", checkpoint, *small])
        main(["test", "--ckpt_path", checkpoint, *small])
        main(["test", "--ckpt_path", checkpoint, *small])
    # None of Lightning's lines that tell a user nothing: its advert, "Loading `train_dataloader` to estimate...",
    # torch's LeafSpec deprecation, and (validate, test) "The dirpath has changed". Its other lines still come through.
    said = lightning_lines + [str(w.message) for w in caught]
    assert any(line.startswith("Restoring states from the checkpoint") for line in said)
    # fit says where it logs as it starts (to watch it train), and how to read the finished run
    run = Path("lightning_logs", "default", "version_0")
    assert f"prevpos: logging to {run}; watch it with `tensorboard --logdir lightning_logs`" in said
    assert f"prevpos: the run's story in one page: `python -m prevpos report {run}`" in said
    # validate and test say where they logged, and test where its numbers are read with the run's
    assert f"prevpos: logged to {runs / 'version_0' / 'validate' / 'version_0'}" in said
    assert (f"prevpos: logged to {runs / 'version_0' / 'test' / 'version_1'}; its run's report shows it: "
            f"`python -m prevpos report {runs / 'version_0'}`") in said
    noise = ("Tip", "to estimate number of stepping batches", "LeafSpec", "dirpath has changed")
    assert not [line for line in said if any(words in line for words in noise)]
    # Logged beside the run they evaluate, each in a version of its own; no new run next to it.
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    validated = scalars(runs / "version_0" / "validate" / "version_0")
    tested = scalars(runs / "version_0" / "test" / "version_0")
    assert scalars(runs / "version_0" / "test" / "version_1")["test/acc"][-1].value == tested["test/acc"][-1].value
    assert (runs / "version_0" / "test" / "version_1" / "config.yaml").is_file()
    assert {"test/loss", "test/acc"} | {f"test/acc_pos{i}" for i in range(1, 10)} <= set(tested)
    # The fit's own last validation, re-run from the checkpoint, and a different set from the same distribution.
    fitted = scalars(runs / "version_0")["val/acc"][-1]
    assert validated["val/acc"][-1].value == pytest.approx(fitted.value)
    assert validated["val/acc"][-1].step == tested["test/acc"][-1].step == fitted.step  # on the run's curve, not at 0
    assert 0.1 < tested["test/acc"][-1].value < 1 and tested["test/acc"][-1].value != validated["val/acc"][-1].value
    assert abs(tested["test/acc"][-1].value - validated["val/acc"][-1].value) < 0.05


def test_a_test_logged_to_csv_lands_beside_the_run_too(in_tmp):
    main(SHORT_FIT[:1] + ["--trainer.max_epochs=1", "--data.steps_per_epoch=2"] + SHORT_FIT[3:])
    runs = in_tmp / "lightning_logs" / "default"
    main(["test", "--ckpt_path", str(runs / "version_0" / "checkpoints" / "last.ckpt"), "--trainer.logger=CSVLogger",
          "--data.val_size=64", "--trainer.enable_progress_bar=false"])
    assert [p.name for p in runs.iterdir()] == ["version_0"]  # it was a version_1 beside the run, a run to the next fit
    assert "test/acc" in (runs / "version_0" / "test" / "version_0" / "metrics.csv").read_text()


def test_a_checkpoint_of_no_run_is_tested_apart_from_the_runs(in_tmp, capsys):
    main(SHORT_FIT[:1] + ["--trainer.max_epochs=1", "--data.steps_per_epoch=2"] + SHORT_FIT[3:])
    runs = in_tmp / "lightning_logs" / "default"
    loose = Path(shutil.copy(runs / "version_0" / "checkpoints" / "last.ckpt", in_tmp / "downloaded.ckpt"))
    for logger in ("TensorBoardLogger", "CSVLogger"):
        main(["test", "--ckpt_path", str(loose), f"--trainer.logger={logger}", "--data.val_size=64",
              "--trainer.enable_progress_bar=false"])
    assert sorted(p.name for p in runs.iterdir()) == ["test", "version_0"]  # Lightning's version_1 read as a run
    assert scalars(runs / "test" / "version_0")["test/acc"][-1].step == 1
    assert "test/acc" in (runs / "test" / "version_1" / "metrics.csv").read_text()
    main(["test", "--ckpt_path", str(loose), "--trainer.default_root_dir=elsewhere", "--data.val_size=64",
          "--trainer.enable_progress_bar=false"])  # was logged in ./lightning_logs all the same
    assert "test/acc" in scalars(in_tmp / "elsewhere" / "lightning_logs" / "default" / "test" / "version_0")
    capsys.readouterr()
    with pytest.raises(SystemExit):  # as `report lightning_logs/default/*` meets it
        main(["report", str(runs / "test")])
    assert capsys.readouterr().err == (f"prevpos: error: {runs / 'test'} holds the logs of `prevpos test` (version_0, "
                                       "version_1), not a training run\n")


def test_model_settings_given_with_a_checkpoint_give_way_to_its_own_and_it_says_so(in_tmp):
    """LightningCLI loads a checkpoint's model settings over the command line's: `test --model.n_ctx 20` (to test on
    longer sequences) silently tested at the checkpoint's 10."""
    main(SHORT_FIT[:1] + ["--trainer.max_epochs=1", "--data.steps_per_epoch=2"] + SHORT_FIT[3:])
    run = in_tmp / "lightning_logs" / "default" / "version_0"
    with lightning_info_lines() as said:
        main(["test", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--model.n_ctx=20", "--model.init_seed=0",
              "--data.val_size=64", "--trainer.enable_progress_bar=false"])
    told = [line for line in said if "checkpoint's model settings" in line]
    assert told == ["prevpos: test uses the checkpoint's model settings, not those given: model.n_ctx=10 (given 20)"]
    tested = scalars(run / "test" / "version_0")
    assert "test/acc_pos9" in tested and "test/acc_pos10" not in tested  # what it says is what it did


def test_epochs_shorter_than_the_logging_interval_log_training_scalars_without_a_warning(in_tmp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(SHORT_FIT[:1] + ["--trainer.max_epochs=5", "--data.steps_per_epoch=2"] + SHORT_FIT[3:])
    # Lightning warned that 2 batches an epoch is "smaller than the logging interval" (5): logs are by global step.
    assert not [w for w in caught if "logging interval" in str(w.message)]
    assert [e.step for e in scalars(in_tmp / "lightning_logs" / "default" / "version_0")["train/loss"]] == [4, 9]


def test_main_with_args_beside_a_kernels_argv_does_not_warn(in_tmp, monkeypatch):
    """In a notebook sys.argv holds the kernel's arguments: LightningCLI warned at every main([...]) (and at every
    `fit --resume`, which prevpos expands into args) that args and command-line arguments were both given."""
    monkeypatch.setattr("sys.argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(SHORT_FIT[:1] + ["--trainer.max_epochs=0"] + SHORT_FIT[2:])
    assert not [w for w in caught if "args parameter" in str(w.message)]
    assert (in_tmp / "lightning_logs" / "default" / "version_0" / "config.yaml").is_file()  # it did run


def test_a_fit_of_no_steps_does_not_offer_a_report(in_tmp):
    with lightning_info_lines() as said:
        main(SHORT_FIT[:1] + ["--trainer.max_epochs=0"] + SHORT_FIT[2:])
    assert any(line.startswith("prevpos: logging to") for line in said)
    assert not [line for line in said if "prevpos report" in line]  # `report` would say the run holds no scalars


def test_the_commands_a_fit_suggests_can_be_pasted_into_a_shell(in_tmp):
    """A run folder with a space printed `report my runs/lightning_logs/...`, which a shell splits in two."""
    with lightning_info_lines() as said:
        main(SHORT_FIT[:1] + ["--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--trainer.default_root_dir",
                              "my runs"] + SHORT_FIT[2:])
    assert [line for line in said if line.endswith("watch it with `tensorboard --logdir 'my runs/lightning_logs'`")]
    assert [line for line in said if line.endswith("`python -m prevpos report 'my runs/lightning_logs/default/version_0'`")]


def test_saved_config_reruns_the_run(in_tmp, capsys):
    main(SHORT_FIT[:1] + ["--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--model.lr=0.002"] + SHORT_FIT[3:])
    saved = in_tmp / "lightning_logs" / "default" / "version_0" / "config.yaml"
    main(["fit", "--config", str(saved), "--trainer.max_epochs=1"])
    rerun = yaml.safe_load((saved.parents[1] / "version_1" / "config.yaml").read_text())
    assert rerun["model"] == yaml.safe_load(saved.read_text())["model"] and rerun["model"]["lr"] == 0.002
    assert rerun["data"]["steps_per_epoch"] == 2


@pytest.mark.parametrize(("args", "bar", "redraws"), [
    ([], "RunProgressBar", 10),  # Lightning's default Rich bar, redrawn 10 times a second instead of 100
    (["--trainer.callbacks+=RichProgressBar"], "RichProgressBar", 100),  # a bar the user chose is kept as given
    (["--trainer.callbacks+=TQDMProgressBar"], "TQDMProgressBar", 1),
    (["--trainer.enable_progress_bar=false"], None, None),
])
def test_default_progress_bar_redraws_ten_times_a_second(args, bar, redraws):
    trainer = build_cli(args, run=False).trainer
    chosen = trainer.progress_bar_callback
    assert type(chosen).__name__ == bar if bar else chosen is None
    assert getattr(chosen, "refresh_rate", None) == redraws
    assert sum(type(c).__name__.endswith("ProgressBar") for c in trainer.callbacks) == (1 if bar else 0)


def test_default_progress_bar_names_the_run_version_as_an_integer(in_tmp):
    cli = build_cli(["--trainer.logger.init_args.version=7"], run=False)
    metrics = cli.trainer.progress_bar_callback.get_metrics(cli.trainer, cli.model)
    assert metrics == {"version": "7"}  # Lightning's key v_num, drawn as "v_num: 7.000"


@pytest.mark.parametrize(("max_epochs", "description"), [(60, "Epoch 12/59"), (-1, "Epoch 12")])
def test_the_bar_counts_epochs_of_an_endless_run_without_an_end(max_epochs, description):
    """With --trainer.max_epochs -1 (train until stopped) Lightning's bar read "Epoch 12/-2"."""
    trainer = build_cli([f"--trainer.max_epochs={max_epochs}"], run=False).trainer
    bar = trainer.progress_bar_callback
    bar._trainer = trainer  # as its setup at the start of fit does
    assert bar._get_train_description(12).strip() == description


def test_in_a_notebook_the_bar_redraws_twice_a_second_not_at_every_batch(in_tmp, monkeypatch):
    """In Jupyter or IPython Lightning redraws the Rich bar on the training thread at every batch (~12 ms a redraw
    in Jupyter). The session is simulated: Lightning's flag and the interactive prompt (sys.ps1) both set."""
    import sys
    import time

    from lightning.pytorch.callbacks.progress import rich_progress
    from rich.progress import Progress

    monkeypatch.setattr(rich_progress, "_IS_INTERACTIVE", True)
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)
    frames = []  # (train batches done, of how many) at each redraw on the training thread
    redraw = Progress.refresh

    def counted(progress):
        train = [task for task in progress.tasks if task.description.startswith("Epoch")]
        frames.append((train[-1].completed, train[-1].total) if train else None)
        redraw(progress)

    monkeypatch.setattr(Progress, "refresh", counted)
    start = time.monotonic()
    main(["fit", "--trainer.max_epochs=3", "--data.steps_per_epoch=40", "--data.batch_size=8", "--data.val_size=64",
          "--data.probe_size=16", "--trainer.callbacks=[]", "--trainer.enable_model_summary=false"])
    seconds = time.monotonic() - start
    # 265 redraws before (3 epochs of 40 batches and their validations); Rich also draws when a task is added (a
    # few times an epoch)
    assert 2 <= len(frames) <= 2 * seconds + 4 * 3
    assert frames[-1] == (40, 40)  # the last frame shows the end


def test_top_level_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in ("fit", "analyze", "report", "bench"))
    assert "--resume RUN_DIR continues a run that stopped" in out


def test_fit_help_shows_model_and_data_docs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--model.lr" in out and "Peak AdamW learning rate" in out and "--data.steps_per_epoch" in out
    assert "`--resume RUN_DIR` continues a run that stopped" in " ".join(out.split())  # in no option list


def test_print_config_is_valid_yaml_with_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["n_ctx"] == 10 and config["model"]["d_vocab"] == 101
    assert config["trainer"]["logger"]["class_path"].endswith("TensorBoardLogger")


def test_config_given_as_yaml_text_is_taken(capsys):
    with pytest.raises(SystemExit):  # jsonargparse takes text as well as a file: not refused as a missing file
        main(["fit", "--config", "model: {lr: 0.01}", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["lr"] == 0.01


def test_a_config_under_the_command_is_taken_before_it(in_tmp, capsys):
    """LightningCLI's layout (`fit: {trainer: ...}`) for a --config given before the command; after it, the same
    file is one line that says so (tests/test_bad_input.py)."""
    Path("under_fit.yaml").write_text("fit:\n  trainer:\n    max_epochs: 2\n")
    with pytest.raises(SystemExit):
        main(["--config", "under_fit.yaml", "fit", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["max_epochs"] == 2


@pytest.mark.parametrize("argv", ["fit --data.batch_size 8 --config 'model: {lr: 0.01}' --print_config",
                                  ["fit", "--data.batch_size", 8, "--config", "model: {lr: 0.01}", "--print_config"]])
def test_main_takes_a_string_or_numbers_as_a_notebook_passes_them(argv, capsys):
    """main("fit ...") read "f" as the command, and a number in the list was an AttributeError traceback."""
    with pytest.raises(SystemExit):
        main(argv)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["data"]["batch_size"] == 8 and config["model"]["lr"] == 0.01


def test_default_experiment_file_is_the_default():
    plain = build_cli([], run=False).config
    from_file = build_cli(["--config", "experiments/default.yaml"], run=False).config
    for section in ("model", "data", "trainer"):
        assert from_file[section] == plain[section], section


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_parses_and_instantiates(experiment):
    cli = build_cli(["--config", str(experiment)], run=False)
    assert cli.model.model.cfg.n_ctx == cli.datamodule.n_ctx
    assert cli.trainer.max_epochs >= 1
    # Each experiment's runs in a folder of its own name (gpu.yaml's and gpu_fast.yaml's went into default/).
    assert cli.trainer.logger.name == ("default" if experiment.stem == "default" else experiment.stem)


def test_a_default_plugin_given_again_runs_once_with_the_settings_given(in_tmp):
    """`--trainer.callbacks+=AttentionPatterns` then its options: the way to change a default plugin's settings on the
    command line. Both it and the default ran: every analysis twice, every figure twice at one step."""
    with lightning_info_lines() as said:
        main(["fit", "--trainer.max_epochs=2", "--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32",
              "--data.probe_size=16", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.callbacks+=AttentionPatterns", "--trainer.callbacks.dense_figure_every_n_epochs=1"])
    assert "prevpos: AttentionPatterns was given twice: only the last one runs, with its settings" in said
    run = in_tmp / "lightning_logs" / "default" / "version_0"
    callbacks = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["callbacks"]
    attention = [c for c in callbacks if c["class_path"].endswith(".AttentionPatterns")]
    assert len(callbacks) == 6 and [c["init_args"]["dense_figure_every_n_epochs"] for c in attention] == [1]
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert sorted(e.step for e in events.Images("attention/mean_pattern/L1H0")) == [0, 2, 4]  # each epoch, once


@pytest.mark.parametrize("given", ["command line", "config"])
def test_one_plugin_given_alone_not_in_a_list_is_the_runs_only_plugin(in_tmp, given):
    """`--trainer.callbacks OVCircuit` (or `callbacks: OVCircuit` in a config), one callback where a list goes:
    jsonargparse and Lightning take it, but prevpos's own checks iterated it and stopped with a traceback."""
    if given == "config":
        (in_tmp / "one.yaml").write_text("trainer:\n  callbacks: OVCircuit\n")
    plugin = ["--config", "one.yaml"] if given == "config" else ["--trainer.callbacks", "OVCircuit"]
    cli = main(["fit", *plugin, "--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--data.batch_size=16",
                "--data.val_size=32", "--data.probe_size=16", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false"])
    assert [type(p).__name__ for p in plugins_of(cli.trainer)] == ["OVCircuit"]
    run = in_tmp / "lightning_logs" / "default" / "version_0"
    saved = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["callbacks"]
    assert [c["class_path"].rsplit(".", 1)[-1] for c in saved] == ["OVCircuit"]  # re-runs as it ran
    events = EventAccumulator(str(run)).Reload()
    scalars = events.Tags()["scalars"]
    assert "ov/copy_top1/L1H0" in scalars and "attention/prev_token_score/L1H0" not in scalars


@pytest.mark.parametrize("ends", ["returns", "exits"])
def test_the_command_line_freezes_what_is_alive_so_that_python_exits_without_collecting_it(monkeypatch, ends):
    def finished():
        if ends == "exits":
            sys.exit(2)  # a refused command: one line, then exit 2

    monkeypatch.setattr(cli, "main", finished)
    assert gc.get_freeze_count() == 0
    ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) if ends == "exits" else contextlib.nullcontext():
            command_line()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGINT, ctrl_c)  # this test session's own


def test_a_fit_from_the_command_line_has_written_everything_when_it_exits(tmp_path):
    """The quick exit (command_line) loses nothing: the last step's scalars and figures, and its checkpoint."""
    result = subprocess.run(
        [sys.executable, "-m", "prevpos", "fit", "--trainer.max_epochs=2", "--data.steps_per_epoch=3",
         "--data.batch_size=16", "--data.val_size=32", "--data.probe_size=16", "--trainer.enable_progress_bar=false",
         "--trainer.callbacks=[AttentionPatterns]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    run = tmp_path / "lightning_logs" / "default" / "version_0"
    assert scalars(run)["val/acc"][-1].step == 5  # Lightning logs the last validation one behind global_step
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    figures = events.Images("attention/mean_pattern/L1H0")
    assert [e.step for e in figures] == [0, 6]
    assert Image.open(io.BytesIO(figures[-1].encoded_image_string)).size[0] > 100
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_plugins_help_from_the_command_line_names_the_program():
    """`fit --trainer.callbacks.help NAME` (the README's way to read a plugin's Args) began "usage: __main__.py"."""
    result = subprocess.run([sys.executable, "-m", "prevpos", "fit", "--trainer.callbacks.help", "Explanation"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m prevpos [--trainer.callbacks.min_gap MIN_GAP]")


CTRL_C_AT_STEP_3 = """
import os, signal
import lightning as L

class CtrlCAtStep3(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C delivers it

class SigtermAtStep3(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID`, `timeout` or a cluster's scheduler sends it

class CtrlCAtTheEnd(L.Callback):
    def on_train_end(self, trainer, *args):  # as the fit waits for the plugins' last figures
        os.kill(os.getpid(), signal.SIGINT)

class CtrlCAtExit(L.Callback):
    def on_fit_end(self, trainer, *args):  # as the process exits, the command done
        import atexit, time
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT) or time.sleep(0.5))
"""


def fit_with_a_callback(tmp_path, callback: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """`python -m prevpos fit` with a callback from CTRL_C_AT_STEP_3, 2-step epochs; the result and its output."""
    (tmp_path / "ctrl_c.py").write_text(CTRL_C_AT_STEP_3)
    result = subprocess.run(
        [sys.executable, "-m", "prevpos", "fit", "--data.steps_per_epoch=2", "--data.batch_size=16",
         "--data.val_size=32", "--data.probe_size=16", "--trainer.enable_progress_bar=false",
         f"--trainer.callbacks=[ctrl_c.{callback}]", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(tmp_path)})
    return result, result.stdout + result.stderr


def test_ctrl_c_in_a_fit_says_how_to_resume_and_ends_the_process_by_sigint(tmp_path):
    """Lightning stops a fit gracefully and exits 1, a normal exit after which a shell loop goes on to the next
    command; the command line ends by SIGINT instead, as a program stopped with Ctrl-C does."""
    result, said = fit_with_a_callback(tmp_path, "CtrlCAtStep3")
    assert result.returncode == -signal.SIGINT, said[-2000:]
    run = Path("lightning_logs", "default", "version_0")
    assert f"prevpos: stopped at step 3; `python -m prevpos fit --resume {run}` goes on" in said
    assert "Traceback" not in said
    assert torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_sigterm_in_a_fit_says_how_to_resume_and_exits_143(tmp_path):
    """Lightning stops a fit gracefully after SIGTERM too, then exited 0, as if the run had finished, and said
    nothing of how to go on (`fit && report`, `set -e` and job schedulers went on as after a finished run)."""
    result, said = fit_with_a_callback(tmp_path, "SigtermAtStep3")
    assert result.returncode == 143, said[-2000:]
    run = Path("lightning_logs", "default", "version_0")
    assert f"prevpos: stopped by SIGTERM at step 3; `python -m prevpos fit --resume {run}` goes on" in said
    assert "Traceback" not in said
    assert torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_ctrl_c_after_the_last_step_says_the_model_is_trained_not_to_resume(tmp_path):
    """--resume of a run whose last checkpoint finished the fit has nothing to train: the message said it went on."""
    result, said = fit_with_a_callback(tmp_path, "CtrlCAtTheEnd", "--trainer.max_epochs=2")
    assert result.returncode == -signal.SIGINT, said[-2000:]
    last = Path("lightning_logs", "default", "version_0", "checkpoints", "last.ckpt")
    assert (f"prevpos: stopped after the last step (4), while the last analyses and figures were written; the trained "
            f"model is in {last}: `python -m prevpos analyze --weights {last} --out DIR`") in said
    assert "--resume" not in said and "Traceback" not in said
    assert torch.load(tmp_path / last, weights_only=False)["global_step"] == 4


def test_ctrl_c_as_the_process_exits_ends_it_by_sigint_without_a_traceback(tmp_path):
    """The exit joins the figure workers' threads; a Ctrl-C there printed a KeyboardInterrupt traceback and exited 0."""
    result, said = fit_with_a_callback(tmp_path, "CtrlCAtExit", "--trainer.max_epochs=1",
                                       "--trainer.callbacks+=AttentionPatterns")  # whose figures start the workers
    assert result.returncode == -signal.SIGINT, said[-2000:]
    assert "Traceback" not in said and "KeyboardInterrupt" not in said and "leaked" not in said
    assert said.rstrip().endswith("`python -m prevpos report lightning_logs/default/version_0`")  # done before it
