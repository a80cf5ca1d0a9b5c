"""Where `validate` and `test` log: beside the run whose checkpoint they evaluate."""

from pathlib import Path

from prevpos.checkpoints import EXAMPLE_CHECKPOINT, names_a_file, refuse_last_or_best
from prevpos.errors import ConfigError


def require_checkpoint_file(ckpt_path, subcommand: str) -> None:
    """ConfigError unless `validate`/`test` were given a checkpoint file: Lightning would evaluate the untrained
    model without one."""
    refuse_last_or_best(ckpt_path, subcommand)
    if ckpt_path is None:
        raise ConfigError(f"{subcommand} --ckpt_path: pass a checkpoint file of a fit, e.g. --ckpt_path "
                          f"{EXAMPLE_CHECKPOINT} (or best-*.ckpt beside it)")


def run_dir_of(ckpt_path) -> Path | None:
    """RUN_DIR if `ckpt_path` is RUN_DIR/checkpoints/FILE of a `fit` (its config.yaml beside checkpoints/)."""
    if not names_a_file(ckpt_path):
        return None
    folder = Path(ckpt_path).parent
    return folder.parent if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file() else None


def log_beside_the_run(config, subcommand: str) -> None:
    """Point a validate/test config's TensorBoard (or CSV) logger at RUN_DIR/<subcommand>/version_N (the run of the
    checkpoint), or lightning_logs/<name>/<subcommand>/version_N for a checkpoint of no run.

    Lightning's default, a new version_N next to the run, reads as another training run: to TensorBoard, to
    `report` on several runs, and to the numbering of the next fit. Only when the logger is one of these two with no
    version chosen; any other logger setting is kept as given.
    """
    logger = config.get("trainer", {}).get("logger")
    if not str(getattr(logger, "class_path", "")).endswith((".TensorBoardLogger", ".CSVLogger")):
        return
    init = logger.init_args
    if init.get("version") is not None:
        return
    run_dir = run_dir_of(config.get("ckpt_path"))
    # A checkpoint outside any run (copied, downloaded): lightning_logs/<name>/<subcommand>/version_N, apart from
    # the runs, as Lightning's version_N beside them would read as one.
    init.save_dir = str(run_dir if run_dir is not None else Path(init.save_dir, init.name or ""))
    init.name = subcommand
