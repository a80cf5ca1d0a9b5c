"""W&B runs as the commands use them: a run that a command started ends with the command, as it does when
`python -m prevpos fit` exits; and none of W&B's warnings about what Lightning passes it.

Lightning's WandbLogger leaves its run open after fit (so a script can log more to it), and a later WandbLogger in
the same process joins the run in progress. So a second `main(["fit", ...])` in a notebook logged into the first
run: its W&B history, its folder, `config.resume1.yaml` and numbered checkpoints beside the first run's.
"""

import sys
from contextlib import contextmanager
from pathlib import Path


def _open_run():
    wandb = sys.modules.get("wandb")  # only if something imported it: never import W&B for nothing
    return getattr(wandb, "run", None) if wandb is not None else None


@contextmanager
def ends_its_wandb_run():
    """Finish, on the way out, a W&B run opened inside the block; leave alone one that was open before it."""
    before = _open_run()
    failed = True
    try:
        yield
        failed = False
    finally:
        run = _open_run()
        if run is not None and run is not before:
            run.finish(exit_code=1 if failed else 0)


def _wandb_init(logger) -> dict | None:
    """Lightning's WandbLogger's keyword arguments to wandb.init (None for any other logger)."""
    init = getattr(logger, "_wandb_init", None)
    return init if isinstance(init, dict) else None


def drop_unset_anonymous(loggers: list) -> None:
    """Lightning's WandbLogger passes `anonymous=None` to `wandb.init` when the user gives none, and W&B 0.31 then
    warns at every fit that "the anonymous setting has no effect". Unset, it is left out, and W&B says nothing."""
    for init in (_wandb_init(logger) for logger in loggers):
        if init is not None and "anonymous" in init and init["anonymous"] is None:
            del init["anonymous"]


def make_wandb_folders(loggers: list) -> None:
    """W&B looks for a git repository from its `dir` (lightning_logs) as the run starts, and warned "git root
    lightning_logs does not exist" wherever that folder was not yet (a first fit, or a validate or test of a run
    kept elsewhere), since W&B makes it later (the run still recorded the code's commit: noise). Call once the
    command is sure to run: a refused command leaves no folder behind."""
    for init in (_wandb_init(logger) for logger in loggers):
        if init is not None and init.get("dir"):
            Path(init["dir"]).mkdir(parents=True, exist_ok=True)


def not_logged_in(error: BaseException) -> str | None:
    """One line for W&B's refusal to start a run on a machine that has no API key (52 lines of traceback), or None."""
    if type(error).__module__.startswith("wandb") and "API key" in str(error):
        return ("trainer.logger WandbLogger: W&B has no API key on this machine: run `wandb login` (or set "
                "WANDB_API_KEY), or log without an account with --trainer.logger.offline true (`wandb sync` uploads "
                "the run later)")
    return None
