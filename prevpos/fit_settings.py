"""Settings that Lightning accepts and then fails on inside fit (a ZeroDivisionError, ValueError or
MisconfigurationException traceback, after the run folder was made): refused in one line before anything is written."""

import difflib

from prevpos.errors import ConfigError

# Callbacks from these packages log nothing through Lightning that a checkpoint could monitor.
OWN_CALLBACKS = ("prevpos.", "prevpos_plugins.", "lightning.")


def refuse_no_devices(trainer_config) -> None:
    """Lightning refuses devices 0 on every accelerator, in a line that names no fix."""
    if trainer_config.devices in (0, "0", []):
        raise ConfigError(f"trainer.devices={trainer_config.devices}: Lightning needs at least one device: use a count "
                          "(1, 2, ...), -1 for all, or auto; to train without a GPU, --trainer.accelerator cpu")


def refuse_unrunnable_loop(trainer_config, steps_per_epoch: int) -> None:
    """The settings fit's loop divides by, and a validation interval longer than the epoch it must fall in."""
    accumulate = trainer_config.accumulate_grad_batches
    if accumulate < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate}: must be at least 1 (1: an optimizer step "
                          "per batch)")
    every_n_epochs = trainer_config.check_val_every_n_epoch
    if every_n_epochs is not None and every_n_epochs < 1:
        raise ConfigError(f"trainer.check_val_every_n_epoch={every_n_epochs}: must be at least 1, or null to "
                          "validate every trainer.val_check_interval steps across epochs")
    interval = trainer_config.val_check_interval
    if not isinstance(interval, int):  # None, or a float: a fraction of the epoch, which Lightning checks itself
        return
    if interval < 1:
        raise ConfigError(f"trainer.val_check_interval={interval}: a number of steps must be at least 1 (or a "
                          "fraction of the epoch, e.g. 0.5)")
    batches = epoch_batches(steps_per_epoch, trainer_config.limit_train_batches)
    if every_n_epochs is not None and interval > batches > 0:
        counted_by = "data.steps_per_epoch" if batches == steps_per_epoch else "trainer.limit_train_batches"
        raise ConfigError(f"trainer.val_check_interval={interval} is more steps than an epoch has ({batches}, "
                          f"{counted_by}): use at most that, or add --trainer.check_val_every_n_epoch null to "
                          f"validate every {interval} steps across epochs")


def epoch_batches(steps_per_epoch: int, limit_train_batches) -> int:
    """Training batches in an epoch, as Lightning counts them under trainer.limit_train_batches (a count or a
    fraction; None is all)."""
    if limit_train_batches is None:
        return steps_per_epoch
    if isinstance(limit_train_batches, int):
        return min(steps_per_epoch, limit_train_batches)
    return int(steps_per_epoch * limit_train_batches)


def better(metric: str) -> str | None:
    """"min" or "max": which way `metric` (a name fit logs) improves; None for one with no better way (epoch)."""
    name = metric.rsplit("/", 1)[-1]
    return "min" if name.endswith("loss") else "max" if name.startswith("acc") else None


def refuse_monitors_the_wrong_way(checkpoint_monitor: str | None, checkpoint_mode: str, callbacks) -> None:
    """A monitor whose mode is the wrong way for it: `--checkpoint.monitor val/loss` under prevpos's `mode: max`
    (for val/acc) kept the run's worst checkpoint as best, with nothing said; EarlyStopping's default `min` on
    val/acc stops a run that is learning."""
    monitors = [("checkpoint", checkpoint_monitor, checkpoint_mode, "--checkpoint.mode")]
    for callback in callbacks or []:
        init = getattr(callback, "init_args", None)
        monitors.append((str(callback.class_path).rsplit(".", 1)[-1], getattr(init, "monitor", None),
                         getattr(init, "mode", None), "--trainer.callbacks.mode"))
    for owner, monitor, mode, option in monitors:
        way = better(monitor) if isinstance(monitor, str) else None
        if way is not None and mode in ("min", "max") and mode != way:
            worst = "highest" if way == "min" else "lowest"
            raise ConfigError(f"{owner}.monitor={monitor} with {owner}.mode={mode}: it would take the {worst} "
                              f"{monitor} for the best; add {option} {way}")


def refuse_unknown_monitors(checkpoint_monitor: str | None, logged: list[str], callbacks) -> None:
    """checkpoint.monitor, and the monitor of a callback such as EarlyStopping, must name a metric the fit logs:
    Lightning checks once the first validation has ended, in a traceback, with the run folder made. Left to
    Lightning when a callback of another package is configured: it may log the metric itself."""
    callbacks = list(callbacks or [])
    if any(not str(callback.class_path).startswith(OWN_CALLBACKS) for callback in callbacks):
        return
    monitors = [("checkpoint", checkpoint_monitor)]
    for callback in callbacks:
        monitors.append((str(callback.class_path).rsplit(".", 1)[-1],
                         getattr(getattr(callback, "init_args", None), "monitor", None)))
    for owner, monitor in monitors:
        # A checkpoint can also monitor the two Lightning adds to its candidates.
        watchable = [*logged, "epoch", "step"] if owner.lower().endswith("checkpoint") else logged
        if monitor is None or monitor in watchable:
            continue
        close = difflib.get_close_matches(monitor, watchable, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{owner}.monitor={monitor}: fit logs no such metric ({hint}it logs {', '.join(watchable)})")
