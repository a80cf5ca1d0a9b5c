"""Resume after a crash: `fit --resume RUN_DIR` continues the same TensorBoard run and ends where an
uninterrupted run ends; checkpoints are written atomically."""

import csv
import io
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prevpos.analysis import AnalysisPlugin, Findings
from prevpos.checkpoints import AtomicCheckpointIO
from prevpos.cli import main
from tests.conftest import lightning_info_lines

RUN = Path("lightning_logs/default/version_0")
SMALL = ["--trainer.max_epochs=3", "--data.steps_per_epoch=4", "--data.batch_size=32", "--data.val_size=128",
         "--data.probe_size=64", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]


class _SimulatedCrash(Exception):
    pass


class _CrashOnce(Callback):
    """Dies in the middle of epoch `epoch`, once per test (the resumed run reads the same config)."""

    armed = False
    error: type[BaseException] = _SimulatedCrash

    def __init__(self, epoch: int = 2, batch: int = 2):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if type(self).armed and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            type(self).armed = False
            raise self.error


class _CountingPlugin(AnalysisPlugin):
    """Logs how many steps it has analysed: a curve that is only right if its state survives the resume.

    Keyed by step, so the resume's re-analysis of the checkpoint's step (whose findings the crash may have lost)
    does not count twice: the pattern for any plugin with state.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[int] = []

    def analyze(self, run) -> Findings:
        self.steps = sorted(set(self.steps) | {run.step})
        findings = Findings()
        findings.scalar("counting/calls", len(self.steps))
        findings.scalar("counting/epoch", run.epoch)  # was the checkpoint's step's count after a resume, one more
        return findings

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


class _SlowCountingPlugin(_CountingPlugin):
    """Takes longer than an epoch of SMALL: its analyses are still running when the checkpoints are saved."""

    def analyze(self, run) -> Findings:
        time.sleep(0.5)
        return super().analyze(run)


@pytest.mark.parametrize("place", ["thread", "process"])
def test_a_checkpoint_holds_the_state_of_every_analysis_before_its_step(place, in_tmp, monkeypatch, inline_render):
    """A checkpoint held the state of the analyses finished by then: at step 12 of a thread's slow plugin, that of
    steps 0 and 4; in the analysis process (a GPU's), none at all. A resume, which analyses the checkpoint's step
    again, lost the others for good."""
    monkeypatch.setenv("PREVPOS_ANALYSIS", place)
    main(["fit", *SMALL, "--checkpoint.save_top_k=-1", "--checkpoint.filename={step}",
          f"--trainer.callbacks=[{__name__}._SlowCountingPlugin]"])
    held = {}
    for path in (RUN / "checkpoints").glob("step=*.ckpt"):
        states = torch.load(path, weights_only=False)["callbacks"]
        held[int(path.stem.removeprefix("step="))] = next(v for k, v in states.items() if "_SlowCounting" in k)["steps"]
    assert held == {4: [0], 8: [0, 4], 12: [0, 4, 8]}


CALLBACKS = (f"--trainer.callbacks=[{{class_path: AttentionPatterns, init_args: {{figure_every_n_epochs: 1}}}}, "
             f"{__name__}._CountingPlugin, "
             f"{{class_path: {__name__}._CrashOnce}}]")


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def steps_tensorboard_shows(run_dir: Path) -> dict[str, list[int]]:
    """Each scalar's steps as TensorBoard's UI reads them (its plugin_event_accumulator, not the EventAccumulator
    above: the two purge a resumed run's events differently)."""
    accumulator = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {tag: [e.step for e in accumulator.Tensors(tag)] for tag in accumulator.Tags()["tensors"]
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}


def curves(acc: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"] if tag != "epoch"}


def run_files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture()
def inline_render(monkeypatch):
    monkeypatch.setenv("PREVPOS_RENDER", "inline")


@pytest.mark.parametrize("place", ["thread", "process"])  # process: the plugin's state crosses from it
def test_resumed_run_equals_uninterrupted_run_in_one_tensorboard_run(tmp_path, monkeypatch, inline_render, place,
                                                                     caplog):
    monkeypatch.setenv("PREVPOS_ANALYSIS", place)
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    main(["fit", *SMALL, CALLBACKS])
    straight = events(RUN)

    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    _CrashOnce.armed = True
    with pytest.raises(_SimulatedCrash):
        main(["fit", *SMALL, CALLBACKS])
    checkpoint = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 8 and "generator" in checkpoint["PrevTokenData"]
    config_before = (RUN / "config.yaml").read_bytes()
    main(["fit", "--resume", str(RUN)])
    resumed = events(RUN)

    # Same run directory, its config untouched, this invocation recorded beside it, last.ckpt reused.
    assert [p.name for p in RUN.parent.iterdir()] == ["version_0"]
    assert (RUN / "config.yaml").read_bytes() == config_before
    assert yaml.safe_load((RUN / "config.resume1.yaml").read_text())["ckpt_path"].endswith("last.ckpt")
    assert sorted(p.name for p in (RUN / "checkpoints").glob("last*")) == ["last.ckpt"]
    # Every curve (train/val metrics, probe scalars, plugin state) has the same steps and values: continuous,
    # nothing duplicated or missing, and the data stream, probe and optimizer picked up where they stopped.
    straight_curves, resumed_curves = curves(straight), curves(resumed)
    assert set(resumed_curves) == set(straight_curves) and "counting/calls" in resumed_curves
    for tag, points in straight_curves.items():
        steps = [s for s, _ in resumed_curves[tag]]
        assert steps == [s for s, _ in points], tag
        assert [v for _, v in resumed_curves[tag]] == pytest.approx([v for _, v in points], rel=1e-5, abs=1e-6), tag
    assert [v for _, v in resumed_curves["counting/calls"]] == [1, 2, 3, 4]
    # So in TensorBoard's own reader, which kept what the crashed session logged from the checkpoint's step on:
    # the plugins' step 8 showed twice.
    shown = steps_tensorboard_shows(RUN)
    assert shown == steps_tensorboard_shows(tmp_path / "a" / RUN) and shown["train/loss"] == list(range(12))
    image_tag = "attention/mean_pattern/L1H0"
    assert [e.step for e in resumed.Images(image_tag)] == [e.step for e in straight.Images(image_tag)] == [0, 4, 8, 12]
    # Reading them, TensorBoard drops the crashed run's steps after the checkpoint with a warning "likely caused by a
    # TensorFlow restart": not shown to a prevpos user.
    with caplog.at_level(logging.WARNING):
        main(["report", str(RUN)])
    assert "out of order event.step" not in caplog.text


class _CtrlC(_CrashOnce):
    """Ctrl-C in the middle of the second epoch (step 6 of SMALL's 4-step epochs), once per test."""

    armed = False
    error = KeyboardInterrupt

    def __init__(self):
        super().__init__(epoch=1, batch=2)


def test_ctrl_c_says_how_to_resume_and_resuming_finishes_the_run(tmp_path, monkeypatch, inline_render):
    monkeypatch.chdir(tmp_path)
    _CtrlC.armed = True
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT while it shuts down, and leaves it so
    try:
        with lightning_info_lines() as said, pytest.raises(SystemExit) as exit_info:
            main(["fit", *SMALL, f"--trainer.callbacks=[{__name__}._CtrlC]"])
    finally:
        signal.signal(signal.SIGINT, handler)
    assert exit_info.value.code == 1  # Lightning's graceful shutdown
    assert f"prevpos: stopped at step 6; `python -m prevpos fit --resume {RUN}` goes on from checkpoints/last.ckpt " \
           "(the last epoch's end)" in said
    assert torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    main(["fit", "--resume", str(RUN)])  # the command it printed
    assert torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12


class _CtrlCInTheFirstEpoch(_CrashOnce):
    armed = False
    error = KeyboardInterrupt

    def __init__(self):
        super().__init__(epoch=0, batch=2)


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys,
                                                                             inline_render):
    """It said nothing, and --resume of the run then said its last.ckpt did not exist."""
    monkeypatch.chdir(tmp_path)
    _CtrlCInTheFirstEpoch.armed = True
    handler = signal.getsignal(signal.SIGINT)
    try:
        with lightning_info_lines() as said, pytest.raises(SystemExit):
            main(["fit", *SMALL, f"--trainer.callbacks=[{__name__}._CtrlCInTheFirstEpoch]"])
    finally:
        signal.signal(signal.SIGINT, handler)
    assert (f"prevpos: stopped at step 2, before the run's first checkpoint: nothing to go on from; run the command "
            f"again ({RUN} holds only its first logs)") in said
    assert not (RUN / "checkpoints").exists()
    with pytest.raises(SystemExit) as refused:
        main(["fit", "--resume", str(RUN)])
    assert refused.value.code == 2
    assert (f"--resume {RUN}: the run stopped before its first checkpoint (it has no {RUN}/checkpoints/last.ckpt), so "
            f"there is nothing to go on from; start it again: `python -m prevpos fit --config {RUN}/config.yaml`"
            ) in capsys.readouterr().err


def test_new_run_into_an_existing_run_dir_is_refused_untouched(tmp_path, monkeypatch, capsys, inline_render):
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=1", "--trainer.callbacks=[]"])
    before = {p: p.stat().st_mtime_ns for p in RUN.rglob("*")}
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *SMALL, "--trainer.max_epochs=1", "--trainer.callbacks=[]",
              "--trainer.logger.init_args.version=version_0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "fit --resume" in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in RUN.rglob("*")} == before


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def dies_midway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=False)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind


def test_checkpoint_is_written_beside_its_target_and_renamed(tmp_path, monkeypatch):
    """The temporary file is in the same directory, so the final step is a rename, never a cross-device copy."""
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "ckpts" / "last.ckpt")
    (source, target), = renames
    assert source.parent == target.parent == tmp_path / "ckpts" and target.name == "last.ckpt"


def test_an_epoch_that_improves_the_best_serialises_once_and_copies_it_to_last(tmp_path, monkeypatch):
    written = []
    real_save, real_copy = AtomicCheckpointIO.save_checkpoint, AtomicCheckpointIO.copy_checkpoint

    def saved(self, checkpoint, path, storage_options=None):
        written.append(("save", checkpoint["global_step"], Path(path).name))
        real_save(self, checkpoint, path, storage_options)

    def copied(self, source, path):
        copies = RUN / "checkpoints" / Path(source).name
        written.append(("copy", torch.load(copies, weights_only=False)["global_step"], Path(path).name))
        real_copy(self, source, path)
        assert Path(path).read_bytes() == copies.read_bytes() and not Path(path).samefile(copies)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", saved)
    monkeypatch.setattr(AtomicCheckpointIO, "copy_checkpoint", copied)
    told = []  # loggers hear of every checkpoint file, copied or not (a logger may upload them)
    monkeypatch.setattr(TensorBoardLogger, "after_save_checkpoint", lambda self, callback: told.append(callback))
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.callbacks=[]"])
    assert len(told) == len(written)
    best_steps = [step for how, step, name in written if name.startswith("best")]
    assert best_steps[:2] == [4, 8]  # val/acc improved in epochs 0 and 1 (the premise of this test)
    # Epoch 0: last.ckpt's own state names itself, which the best's file does not yet; then one torch.save a step.
    assert written[:2] == [("save", 4, "best-epoch=0-step=4.ckpt"), ("save", 4, "last.ckpt")]
    # Every later epoch serialises once: the best when it improves (last.ckpt copied from it), else last.ckpt.
    assert [step for how, step, _ in written if how == "save"] == [4, 4, 8, 12]
    assert [(step, name) for how, step, name in written if how == "copy"] == [(s, "last.ckpt") for s in best_steps[1:]]
    last_best = [name for _, _, name in written if name.startswith("best")][-1]
    assert sorted(p.name for p in (RUN / "checkpoints").iterdir()) == [last_best, "last.ckpt"]  # older best removed
    last = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12 and last["epoch"] == 2
    state, = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{")]
    assert state["last_model_path"].endswith("last.ckpt")


def test_last_checkpoint_follows_every_epoch_when_val_acc_stops_improving(tmp_path, monkeypatch):
    """At lr 1e-12 val/acc never beats epoch 0, so only epoch 0 writes a best checkpoint; last.ckpt must still
    follow the run (Lightning 2.6 alone left it at epoch 0, and --resume would have replayed every later epoch)."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=3", "--model.lr=1e-12", "--trainer.callbacks=[]"])
    names = sorted(p.name for p in (RUN / "checkpoints").iterdir())
    assert names == ["best-epoch=0-step=4.ckpt", "last.ckpt"]
    last = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    state, = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{")]  # old runs' key, kept
    assert state["best_model_path"].endswith("best-epoch=0-step=4.ckpt") and state["last_model_path"].endswith("last.ckpt")


def test_checkpoints_every_n_train_steps_alone_replaces_the_epoch_default(tmp_path, monkeypatch):
    """The README's `--checkpoint.every_n_train_steps N` (Lightning refuses it beside an every_n_epochs)."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=3", "--trainer.callbacks=[]"])
    last = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6  # steps 3 and 6, not the epoch end at 8


def test_every_epoch_kept_as_the_readme_says(tmp_path, monkeypatch):
    """The README's way to keep a checkpoint of every epoch (to analyse the model mid-transition)."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.callbacks=[]", "--checkpoint.save_top_k=-1", "--checkpoint.filename={epoch}-{step}"])
    kept = {p.name: torch.load(p, weights_only=False)["global_step"] for p in (RUN / "checkpoints").iterdir()}
    assert kept == {"epoch=0-step=4.ckpt": 4, "epoch=1-step=8.ckpt": 8, "epoch=2-step=12.ckpt": 12, "last.ckpt": 12}


@pytest.mark.parametrize("spelled", ["relative", "absolute"])
def test_resume_that_extends_a_finished_run_holds_the_final_learning_rate(spelled, tmp_path, monkeypatch, recwarn):
    """The checkpoint restores the first run's schedule (cosine over 8 steps); past its end the cosine alone would
    climb back towards the peak lr (at step 16 it was at 3/4 of the way up)."""
    monkeypatch.chdir(tmp_path)
    run = RUN if spelled == "relative" else tmp_path / RUN
    schedule = ["--model.lr=3e-3", "--model.warmup_steps=2", "--model.min_lr_ratio=0.1", "--trainer.callbacks=[]"]
    main(["fit", *SMALL, "--trainer.max_epochs=2", *schedule])
    main(["fit", "--resume", str(run), "--trainer.max_epochs=4"])
    # Its own checkpoints/ is where a resume writes: no "Checkpoint directory ... exists and is not empty" (which
    # Lightning still said when the run was named by its absolute path, the logger's folder being relative).
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]
    # The filter that keeps that warning quiet was for this resume only: in a notebook it stayed for every later fit.
    assert not [f for f in warnings.filters if f[1] is not None and "Checkpoint directory" in f[1].pattern]
    last = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 16
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(3e-4)


def test_resuming_from_another_directory_goes_on_in_last_ckpt_and_keeps_one_best(tmp_path, monkeypatch):
    """From another working directory the run's folder is spelled differently, and Lightning then dropped its
    checkpoint bookkeeping: the resumed epochs went to last-v1.ckpt, last.ckpt stayed behind (so the next resume
    trained them again), and each resume kept one more best checkpoint."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--trainer.callbacks=[]"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    main(["fit", "--resume", str(tmp_path / RUN), "--trainer.max_epochs=3"])
    cli = main(["fit", "--resume", str(Path("..") / RUN), "--trainer.max_epochs=4"])
    assert cli.trainer.logger.version == 0  # a number, as a new run's: the bar showed "on_0" (a string's last 4)
    names = sorted(p.name for p in (tmp_path / RUN / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("best-") and names[1] == "last.ckpt", names
    assert torch.load(tmp_path / RUN / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 16
    assert not (elsewhere / "lightning_logs").exists()


def test_a_new_run_from_another_runs_checkpoint_keeps_its_own_best_and_no_warning(tmp_path, monkeypatch):
    """`fit --ckpt_path OTHER_RUN/checkpoints/last.ckpt` branches a new run: Lightning warned that "the dirpath has
    changed" and kept the other run's best_model_path as the new run's best."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--trainer.callbacks=[]"])
    branched, before = Path("lightning_logs/default/version_1"), sorted((RUN / "checkpoints").iterdir())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", *SMALL, "--trainer.callbacks=[]", f"--ckpt_path={RUN / 'checkpoints' / 'last.ckpt'}"])
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    last = torch.load(branched / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 12
    state, = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{")]
    assert state["best_model_path"] == str(branched / "checkpoints" / "best-epoch=2-step=12.ckpt")
    assert sorted((RUN / "checkpoints").iterdir()) == before


def test_a_run_without_end_says_its_lr_holds_at_the_peak_and_holds_it(tmp_path, monkeypatch):
    """max_epochs -1 (until stopped): Lightning counts inf steps, so the cosine has no length. It said nothing."""
    monkeypatch.chdir(tmp_path)
    with lightning_info_lines() as said:
        main(["fit", *SMALL, "--trainer.max_epochs=-1", "--trainer.max_time=00:00:00:02", "--model.warmup_steps=2",
              "--trainer.callbacks=[]"])
    assert ("prevpos: the run has no last step (trainer.max_epochs -1), so the cosine has no length: the lr stays at "
            "0.003 after warm-up; set trainer.max_steps to decay it over them") in said
    last = torch.load(RUN / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] > 4 and last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(3e-3)


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_curve(tmp_path):
    """A real `python -m prevpos fit` killed with SIGKILL after its 2nd checkpoint, then resumed (~60-90 s)."""
    env = {**os.environ, "PREVPOS_RENDER": "inline", "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, "-m", "prevpos", "fit", *SMALL, "--trainer.max_epochs=12", "--data.steps_per_epoch=10",
            "--trainer.callbacks=[{class_path: AttentionPatterns, init_args: {figure_every_n_epochs: 1, dense_epochs: 12}}]"]
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / RUN / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["global_step"] >= 20:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=False)["global_step"]  # loadable: never half-written

    result = subprocess.run([sys.executable, "-m", "prevpos", "fit", "--resume", str(RUN)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    logged = events(tmp_path / RUN)
    train_steps = [e.step for e in logged.Scalars("train/loss")]
    assert train_steps == list(range(120))  # one point per step, none twice, none missing
    assert [e.step for e in logged.Scalars("val/acc")] == [10 * k + 9 for k in range(12)]
    assert [e.step for e in logged.Images("attention/mean_pattern/L1H0")] == list(range(0, 121, 10))
    assert killed_at >= 20 and logged.Scalars("val/acc")[-1].value > 0.3


def test_resuming_a_csv_logged_run_keeps_its_earlier_metrics(tmp_path, monkeypatch):
    """Lightning's CSV logger deletes metrics.csv when it opens a folder holding one: a resume lost the first
    session's rows. Rows from a crashed session past the checkpoint's step are dropped, as TensorBoard's are."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--trainer.logger=CSVLogger", "--trainer.callbacks=[]"])
    metrics = RUN / "metrics.csv"
    first = metrics.read_text()
    metrics.write_text(first + "2,8,0.5,9.9\n")  # logged after the epoch-2 checkpoint (step 8) by a session that died
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--resume", str(RUN), "--trainer.max_epochs=3"])
    assert not [w for w in caught if "will be deleted" in str(w.message)]
    rows = list(csv.DictReader(metrics.open()))
    assert [int(r["step"]) for r in rows if r["train/loss"]] == list(range(12))  # every step once, 9.9 gone
    assert [int(r["step"]) for r in rows if r["val/acc"]] == [3, 7, 11]
    kept = list(csv.DictReader(io.StringIO(first)))
    assert [r["train/loss"] for r in rows[:len(kept)]] == [r["train/loss"] for r in kept]


def test_resuming_a_csv_logged_run_keeps_its_earlier_figures_and_drops_a_dead_sessions_later_ones(tmp_path,
                                                                                                 monkeypatch):
    """A CSV run's figures are files (RUN/figures/<tag>/step_N.png): those before the checkpoint's step stay as they
    are, and those a session that died drew past it go, as its events past the purge step do in TensorBoard."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.max_epochs=2", "--trainer.logger=CSVLogger",
          "--trainer.callbacks=[{class_path: AttentionPatterns}]"])
    figure = RUN / "figures" / "attention" / "mean_pattern" / "L1H0"
    at_start = (figure / "step_000000.png").read_bytes()
    dead = figure / "step_000010.png"  # past the checkpoint's step 8, from a session that died
    dead.write_bytes(at_start)
    main(["fit", "--resume", str(RUN), "--trainer.max_epochs=3"])
    assert sorted(p.name for p in figure.iterdir()) == ["step_000000.png", "step_000008.png", "step_000012.png"]
    assert (figure / "step_000000.png").read_bytes() == at_start


def test_resuming_a_finished_run_says_so_writes_nothing_and_exits_normally(tmp_path, monkeypatch, capsys):
    """Lightning ran no step but wrote a new event file and config.resume1.yaml into the run, and fit pointed to the
    report as after training. Not an error: a preempted job may resume a run that had just finished."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.callbacks=[]"])
    before = {p: p.stat().st_mtime_ns for p in RUN.rglob("*")}
    capsys.readouterr()
    last = RUN / "checkpoints" / "last.ckpt"
    for given, said in [([], "trainer.max_epochs=3: nothing to train. To train on, raise it, e.g. --trainer.max_epochs 6"),
                        (["--trainer.max_steps=12"], "trainer.max_steps=12: nothing to train. To train on, raise it, "
                                                     "e.g. --trainer.max_steps 24")]:
        main(["fit", "--resume", str(RUN), *given])  # returns: no SystemExit
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"prevpos: the checkpoint {last} (step 12) already finished this fit, {said}")
        assert {p: p.stat().st_mtime_ns for p in RUN.rglob("*")} == before
    with monkeypatch.context() as as_rank_1:  # as torchrun's other ranks: only rank 0 says it
        as_rank_1.setattr(rank_zero_only, "rank", 1)
        main(["fit", "--resume", str(RUN)])
    assert "already finished" not in capsys.readouterr().err
    main(["fit", "--resume", str(RUN), "--trainer.max_epochs=4"])  # one more epoch does train
    assert torch.load(last, weights_only=False)["global_step"] == 16


def test_resuming_to_fewer_epochs_than_done_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """Lightning raised "You restored a checkpoint with current_epoch=2, but you have set Trainer(max_epochs=1)" from
    inside fit, as a traceback, after writing config.resume1.yaml and an event file into the run."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *SMALL, "--trainer.callbacks=[]"])
    before = {p: p.stat().st_mtime_ns for p in RUN.rglob("*")}
    for fewer in (1, 2):  # 2: Lightning trained nothing, and the run was said to have "finished this fit"
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--resume", str(RUN), f"--trainer.max_epochs={fewer}"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and "\n" not in err
        assert err == (f"prevpos: error: trainer.max_epochs={fewer}: the checkpoint {RUN / 'checkpoints' / 'last.ckpt'} "
                       "has trained 3 epochs (step 12); to train on, pass more, e.g. --trainer.max_epochs 6")
        assert {p: p.stat().st_mtime_ns for p in RUN.rglob("*")} == before
    # fast_dev_run sets max_epochs=1 itself: the line must not tell the user to raise it
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--resume", str(RUN), "--trainer.fast_dev_run=true"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == (
        f"prevpos: error: trainer.fast_dev_run runs one batch of epoch 0 and the checkpoint "
        f"{RUN / 'checkpoints' / 'last.ckpt'} has trained 3 epochs (step 12): to smoke-test these settings, leave "
        "out --resume and --ckpt_path")
    assert {p: p.stat().st_mtime_ns for p in RUN.rglob("*")} == before
