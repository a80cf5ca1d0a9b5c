"""Where a fit writes under Lightning's switches that change it: no logger, no checkpoints, barebones,
fast_dev_run, default_root_dir. Nothing is left in the working directory that the switch said it would not write,
and nothing already there is overwritten."""

import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from prevpos.cli import main
from tests.conftest import lightning_info_lines
from tests.wandb_records import wandb_run

TINY = ["--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32",
        "--data.probe_size=16", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
NO_PLUGINS = ["--trainer.callbacks=[]"]


def told(said: list[str]) -> list[str]:
    return [line for line in said if line.startswith("prevpos:")]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_without_a_logger_two_runs_in_one_folder_both_train_and_keep_each_others_checkpoints(in_tmp):
    with lightning_info_lines() as said:
        main(["fit", "--trainer.logger=false", *TINY, "--trainer.callbacks=[{class_path: OVCircuit}]"])
    first = files(in_tmp)
    # Lightning wrote ./config.yaml, and the second run was refused as "already holds a run: --resume ." (which
    # could not resume anything).
    assert sorted(first) == ["checkpoints/best-epoch=0-step=2.ckpt", "checkpoints/last.ckpt"]
    assert told(said) == ["prevpos: no logger: nothing goes to TensorBoard and no config.yaml is saved, and the "
                          "findings of its 1 analysis plugin go nowhere (--trainer.callbacks=[] skips them); "
                          f"checkpoints go to {in_tmp / 'checkpoints'}"]  # not "tensorboard --logdir /", as once
    with pytest.warns(UserWarning, match="exists and is not empty"):  # Lightning's own word on it
        main(["fit", "--trainer.logger=false", *TINY, *NO_PLUGINS])
    second = files(in_tmp)
    assert {name: second[name] for name in first} == first
    assert sorted(set(second) - set(first)) == ["checkpoints/best-epoch=0-step=2-v1.ckpt", "checkpoints/last-v1.ckpt"]


def test_checkpointing_off_trains_and_saves_no_checkpoint(in_tmp):
    main(["fit", "--trainer.enable_checkpointing=false", *TINY, *NO_PLUGINS])  # Lightning refused it (exit 2)
    run = in_tmp / "lightning_logs" / "default" / "version_0"
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()


def test_barebones_with_its_logging_off_trains_and_writes_nothing(in_tmp):
    with warnings.catch_warnings(record=True) as caught, lightning_info_lines() as said:
        warnings.simplefilter("always")
        main(["fit", "--trainer.barebones=true", "--trainer.logger=false", "--trainer.log_every_n_steps=0", *TINY[:5]])
    assert files(in_tmp) == {}
    assert not [w for w in caught if "self.log()" in str(w.message)]  # validation logged, and Lightning warned
    assert told(said) == ["prevpos: no logger: nothing goes to TensorBoard and no config.yaml is saved, and the "
                          "findings of its 6 analysis plugins go nowhere (--trainer.callbacks=[] skips them); no "
                          "checkpoints are saved"]


def test_fast_dev_run_writes_no_checkpoint(in_tmp):
    main(["fit", "--trainer.fast_dev_run=true", *TINY[1:], *NO_PLUGINS])
    assert files(in_tmp) == {}  # Lightning wrote checkpoints/last.ckpt at train end, then last-v1.ckpt, ...


def test_fast_dev_run_does_not_warn_of_the_checkpoints_already_there(in_tmp):
    (in_tmp / "checkpoints").mkdir()
    (in_tmp / "checkpoints" / "mine.ckpt").write_bytes(b"kept")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--trainer.fast_dev_run=true", *TINY[1:], *NO_PLUGINS])
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # it writes none there
    assert files(in_tmp) == {"checkpoints/mine.ckpt": b"kept"}


def test_fast_dev_run_with_plugins_says_nothing_of_loggers(in_tmp):
    """Lightning swaps the loggers for its DummyLogger and says logging is suppressed; fit added "DummyLogger takes
    scalars only: ... (a TensorBoardLogger, CSVLogger or WandbLogger beside it keeps them)", advice that cannot
    help under fast_dev_run."""
    with lightning_info_lines() as said:
        main(["fit", "--trainer.fast_dev_run=true", *TINY[1:]])  # the six default plugins
    assert told(said) == [] and files(in_tmp) == {}


def test_fast_dev_run_on_the_fast_path_runs_one_lightning_step(in_tmp):
    """fast_dev_run=true sets max_steps=1, which the fast path refused as "trainer.max_steps=1 is not a multiple of
    data.batches_per_step=5", a setting the user never gave (experiments/gpu_fast.yaml with fast_dev_run)."""
    cli = main(["fit", "--trainer.fast_dev_run=true", *TINY[1:], *NO_PLUGINS, "--model.fast=FastStep",
                "--data.batches_per_step=5", "--trainer.gradient_clip_val=null"])
    assert cli.trainer.global_step == 5 and files(in_tmp) == {}  # one batch: K = 5 optimizer steps


def test_default_root_dir_holds_the_runs(in_tmp):
    main(["fit", "--trainer.default_root_dir=scratch", *TINY, *NO_PLUGINS])
    assert not (in_tmp / "lightning_logs").exists()
    run = in_tmp / "scratch" / "lightning_logs" / "default" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    main(["fit", "--resume", str(run), "--trainer.max_epochs=2"])  # its saved config names the same folder
    assert (run / "config.resume1.yaml").is_file() and not (in_tmp / "lightning_logs").exists()


def test_two_wandb_runs_in_one_folder_each_keep_their_config_beside_their_checkpoints(in_tmp, offline_wandb):
    """W&B keeps one folder for all its runs, which Lightning takes as the run directory: the second run was refused
    as "lightning_logs already holds a run (config.yaml)". And in one process (a notebook), the second fit joined
    the first's W&B run, still open, and wrote into its folder: each fit now ends the W&B run it started."""
    for _ in range(2):
        main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true"])
    runs = sorted(path.parent for path in (in_tmp / "lightning_logs").rglob("checkpoints"))
    assert len(runs) == 2 and runs[0].name != runs[1].name  # W&B's run ids
    for run in runs:
        assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]["class_path"].endswith("Wandb"
                                                                                                          "Logger")
        assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "fit.lock").exists()
    assert not (in_tmp / "lightning_logs" / "config.yaml").exists()


def test_a_resumed_wandb_run_keeps_its_id_folder_display_name_and_last_checkpoint(in_tmp, offline_wandb):
    """--resume set the logger's `name` from the run's folder, and W&B's `name` is the run's display name: the
    resumed run showed as "lightning_logs". And resumed by its absolute path, its checkpoints folder was spelled
    anew, so Lightning wrote last-v1.ckpt beside last.ckpt, and the next resume would go back to last.ckpt."""
    main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true",
          "--trainer.logger.name=seed-0"])
    [run] = [path.parent for path in (in_tmp / "lightning_logs").rglob("checkpoints")]
    time.sleep(1.1)  # W&B names a session's offline folder by the second it started in: one each
    main(["fit", "--resume", str(run), "--trainer.max_epochs=2"])
    sessions = [wandb_run(file) for file in (in_tmp / "lightning_logs/wandb").glob("offline-run-*/run-*.wandb")]
    assert [(s.run_id, s.display_name, s.project) for s in sessions] == [(run.name, "seed-0", "lightning_logs")] * 2
    assert (run / "config.resume1.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-epoch=1-step=4.ckpt", "last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


def test_a_wandb_run_the_user_opened_stays_open_after_fit(in_tmp, offline_wandb):
    """Lightning's WandbLogger logs into a run already in progress; fit leaves that run to its owner."""
    own = offline_wandb.init(project="mine")
    with pytest.warns(UserWarning, match="wandb run already in progress"):  # Lightning's word on it
        main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true"])
    assert offline_wandb.run is own
    own.log({"after_fit": 1.0})  # a finished run would refuse this


def test_a_wandb_fit_gets_no_warning_about_what_lightning_passes_it(in_tmp, offline_wandb, monkeypatch):
    """Lightning passed anonymous=None to wandb.init, and W&B 0.31 warned at every fit: "The anonymous setting has no
    effect"; and at a first fit "git root lightning_logs does not exist", W&B's folder being made later. An
    anonymous setting the user gives still goes to W&B."""
    warned = []
    monkeypatch.setattr(offline_wandb, "termwarn", lambda message, *args, **kwargs: warned.append(message))
    main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true"])
    assert not warned, warned
    main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true",
          "--trainer.logger.anonymous=true"])
    assert [message for message in warned if "anonymous" in message]


def test_validate_and_test_with_wandb_get_no_warning_about_its_folder(in_tmp, offline_wandb, monkeypatch):
    """Where no lightning_logs folder was yet (the checkpoint's run is elsewhere), validate and test with W&B warned
    "git root lightning_logs does not exist": only fit made W&B's folder before its run started."""
    main(["fit", *TINY, *NO_PLUGINS, "--trainer.default_root_dir=elsewhere"])
    checkpoint = str(in_tmp / "elsewhere/lightning_logs/default/version_0/checkpoints/last.ckpt")
    warned = []
    monkeypatch.setattr(offline_wandb, "termwarn", lambda message, *args, **kwargs: warned.append(message))
    for command in ("validate", "test"):
        main([command, "--ckpt_path", checkpoint, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true",
              "--trainer.enable_progress_bar=false"])
    assert not warned, warned
    assert len(list((in_tmp / "lightning_logs/wandb").glob("offline-run-*"))) == 2


def test_a_run_logged_to_tensorboard_and_csv_keeps_both_in_one_folder(in_tmp):
    """Each logger took the next free version: the TensorBoard events in version_0 and metrics.csv in version_1,
    which the next fit and `report` took for two runs."""
    both = "[{class_path: TensorBoardLogger}, {class_path: CSVLogger}]"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            main(["fit", *TINY, *NO_PLUGINS, f"--trainer.logger={both}"])
    runs = sorted((in_tmp / "lightning_logs/default").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert list(run.glob("events.out.tfevents.*")) and "val/acc" in (run / "metrics.csv").read_text()
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # CSV's "will be deleted"


def test_without_a_wandb_login_fit_says_how_to_log_offline(in_tmp, monkeypatch, capsys):
    """W&B's refusal was 52 lines of traceback ending in 'No API key configured'."""
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(in_tmp))  # no ~/.netrc: nobody logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(in_tmp / "wandb-settings"))
    import wandb

    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *TINY, *NO_PLUGINS, "--trainer.logger=WandbLogger"])
    finally:
        wandb.teardown()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "prevpos: error: trainer.logger WandbLogger: W&B has no API key on this machine" in err
    assert "--trainer.logger.offline true" in err
