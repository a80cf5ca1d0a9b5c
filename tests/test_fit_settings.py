"""The settings fit refuses up front (the refusals themselves: tests/test_bad_input.py) let through every setting
Lightning runs."""

from types import SimpleNamespace

import pytest

from prevpos.lightning_cli import build_cli
from prevpos.errors import ConfigError
from prevpos.fit_settings import (better, epoch_batches, refuse_monitors_the_wrong_way, refuse_unknown_monitors,
                                  refuse_unrunnable_loop)
from prevpos.module import fit_metric_names

LIGHTNING_DEFAULTS = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "val_check_interval": None,
                      "limit_train_batches": None}


@pytest.mark.parametrize("settings", [
    {},
    {"val_check_interval": 10},  # the whole epoch
    {"val_check_interval": 0.25},  # a fraction of it
    {"val_check_interval": 0.0},
    {"val_check_interval": 25, "check_val_every_n_epoch": None},  # across epochs
    {"val_check_interval": "00:00:01:00"},  # a time, Lightning 2.6
    {"val_check_interval": 5, "limit_train_batches": 0.5},
    {"val_check_interval": 20, "limit_train_batches": 0},  # no training: Lightning skips it, and never divides
    {"accumulate_grad_batches": 4, "check_val_every_n_epoch": 3},
], ids=str)
def test_settings_lightning_runs_pass(settings):
    refuse_unrunnable_loop(SimpleNamespace(**{**LIGHTNING_DEFAULTS, **settings}), steps_per_epoch=10)


@pytest.mark.parametrize("limit, batches", [(None, 10), (1.0, 10), (0.5, 5), (0.25, 2), (3, 3), (50, 10), (0, 0)])
def test_an_epoch_has_as_many_batches_as_lightning_counts(limit, batches):
    assert epoch_batches(10, limit) == batches


def test_a_checkpoint_can_monitor_every_name_a_fit_logs_and_only_those(in_tmp):
    cli = build_cli(["--model.n_ctx=6", "--data.batch_size=8", "--data.val_size=16", "--data.steps_per_epoch=5",
                     "--trainer.max_epochs=1", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
                     "--trainer.logger=false"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert sorted(cli.trainer.callback_metrics) == sorted(fit_metric_names(6))
    assert fit_metric_names(6)[-1] == "val/acc_pos5"


@pytest.mark.parametrize("monitor", [None, "val/acc", "val/loss", "train/loss", "val/acc_pos9", "epoch", "step"])
def test_a_monitor_a_fit_logs_passes(monitor):
    lightnings = SimpleNamespace(class_path="lightning.pytorch.callbacks.EarlyStopping")
    refuse_unknown_monitors(monitor, fit_metric_names(10), [lightnings])


def test_a_monitor_is_left_to_lightning_when_another_packages_callback_may_log_it():
    refuse_unknown_monitors("my/score", fit_metric_names(10), [SimpleNamespace(class_path="mylab.callbacks.MyScore")])


def test_an_early_stopping_monitor_a_fit_logs_passes_and_step_does_not():
    """Lightning's EarlyStopping reads callback_metrics only; a checkpoint can also monitor epoch and step."""
    def early_stopping(monitor):
        return SimpleNamespace(class_path="lightning.pytorch.callbacks.EarlyStopping",
                               init_args=SimpleNamespace(monitor=monitor))

    refuse_unknown_monitors("step", fit_metric_names(10), [early_stopping("val/acc")])
    with pytest.raises(ConfigError, match="EarlyStopping.monitor=step: fit logs no such metric"):
        refuse_unknown_monitors("val/acc", fit_metric_names(10), [early_stopping("step")])


def test_every_loss_and_accuracy_fit_logs_has_a_better_way():
    names = fit_metric_names(10)
    assert {name: better(name) for name in names if "loss" in name} == {name: "min" for name in names if "loss" in name}
    assert {better(name) for name in names if "acc" in name} == {"max"}
    assert better("epoch") is None


@pytest.mark.parametrize("monitor, mode", [("val/loss", "min"), ("val/acc", "max"), ("val/acc_pos3", "max"),
                                           ("epoch", "max"), ("epoch", "min"), (None, "max")])
def test_monitors_the_right_way_pass(monitor, mode):
    early_stopping = SimpleNamespace(class_path="lightning.pytorch.callbacks.EarlyStopping",
                                     init_args=SimpleNamespace(monitor="val/loss", mode="min"))
    refuse_monitors_the_wrong_way(monitor, mode, [early_stopping])
