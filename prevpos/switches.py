"""Lightning's switches that change what a fit writes, and prevpos's defaults that meet them: barebones, no logger,
trainer.default_root_dir, the TensorBoard writer's settings."""

import os

from prevpos.errors import ConfigError

LOGS = "lightning_logs"  # the default TensorBoard folder: in the working directory, or in trainer.default_root_dir
LOG_EVERY_N_STEPS = 5


def refuse_logging_in_barebones(trainer_config) -> None:
    """Lightning's barebones mode refuses a logger and a logging interval, and prevpos's defaults set both."""
    if trainer_config.barebones and (trainer_config.logger not in (None, False) or trainer_config.log_every_n_steps):
        raise ConfigError("trainer.barebones=true turns logging off, and prevpos logs to TensorBoard every "
                          f"{LOG_EVERY_N_STEPS} steps by default: add --trainer.logger false "
                          "--trainer.log_every_n_steps 0")


def logs_under_root_dir(trainer_config) -> None:
    """trainer.default_root_dir moves the default lightning_logs/ into it, as it does in Lightning without a logger
    of its own (prevpos's default logger names its folder, so Lightning left it in the working directory)."""
    init = getattr(trainer_config.logger, "init_args", None)
    if trainer_config.default_root_dir and getattr(init, "save_dir", None) == LOGS:
        init.save_dir = os.path.join(trainer_config.default_root_dir, LOGS)


# TensorBoardLogger passes these on to torch's SummaryWriter untyped, so jsonargparse takes any value for them and a
# wrong one failed as a traceback once the run had started (`--trainer.logger.max_queue abc`): the kinds it takes.
WRITER_SETTINGS = {"max_queue": ((int,), "a whole number (its default: 10)"),
                   "flush_secs": ((int, float), "a number of seconds (its default: 120)"),
                   "purge_step": ((int, type(None)), "a step, or null (its default)"),
                   "filename_suffix": ((str,), "text")}


def refuse_mistyped_writer_settings(trainer_config) -> None:
    loggers = trainer_config.logger if isinstance(trainer_config.logger, list) else [trainer_config.logger]
    for logger in loggers:
        if not str(getattr(logger, "class_path", "")).endswith(".TensorBoardLogger"):
            continue
        init = getattr(logger, "init_args", None) or {}
        for name, (kinds, wanted) in WRITER_SETTINGS.items():
            value = init.get(name)
            if name in init and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise ConfigError(f"trainer.logger.{name}={value!r}: TensorBoard's writer needs {wanted}")


def nothing_logged(trainer) -> str:
    """What a fit without a logger (trainer.logger false, barebones) keeps, said once as it starts."""
    from prevpos.analysis.plugin import plugins_of

    plugins = len(plugins_of(trainer))
    dropped = (f", and the findings of its {plugins} analysis plugin{'s' if plugins > 1 else ''} go nowhere "
               "(--trainer.callbacks=[] skips them)") if plugins else ""
    # Lightning's place for them without a logger; it numbers files (last-v1.ckpt) rather than overwrite any.
    folders = [c.dirpath or os.path.join(trainer.default_root_dir, "checkpoints") for c in trainer.checkpoint_callbacks]
    kept = f"checkpoints go to {folders[0]}" if folders else "no checkpoints are saved"
    return f"prevpos: no logger: nothing goes to TensorBoard and no config.yaml is saved{dropped}; {kept}"
