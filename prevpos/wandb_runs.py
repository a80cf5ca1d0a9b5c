"""A W&B run that a command started ends with the command, as it does when `python -m prevpos fit` exits.

Lightning's WandbLogger leaves its run open after fit (so a script can log more to it), and a later WandbLogger in
the same process joins the run in progress. So a second `main(["fit", ...])` in a notebook logged into the first
run: its W&B history, its folder, `config.resume1.yaml` and numbered checkpoints beside the first run's.
"""

import sys
from contextlib import contextmanager


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
