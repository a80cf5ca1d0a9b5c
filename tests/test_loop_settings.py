"""The loop settings fit refuses up front (the refusals themselves: tests/test_bad_input.py) let through every
setting Lightning runs."""

from types import SimpleNamespace

import pytest

from prevpos.loop_settings import epoch_batches, refuse_unrunnable_loop

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
