"""Spawned processes that do not import the running script: the figure workers and the analysis process."""

import signal
import sys
import types
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.context import SpawnContext, SpawnProcess


class ScriptlessProcess(SpawnProcess):
    """A spawned process that does not import the running script.

    A spawned process imports the parent's `__main__` script, to find functions defined there. prevpos's workers
    need only the modules of the functions they are sent, and a script's top-level imports (torch, Lightning,
    TransformerLens) cost each figure worker seconds of CPU to start and ~1.2 s of garbage collection to exit, which
    the end of fit waits for (2-core CPU); an unguarded script would even train again in every worker.
    `python -m prevpos` and notebooks have no script to import: nothing changes there. While a worker starts (a few
    ms, once per worker) other threads see an empty `__main__` module.
    """

    def start(self) -> None:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__ or __spec__: nothing for spawn to import
        try:
            with _group_signals_blocked():
                super().start()
        finally:
            sys.modules["__main__"] = main


# Signals a terminal (Ctrl-C) or `timeout` sends to the whole process group. They are for the training process,
# which ends its workers itself (a worker also ends when that process has gone: its pipe closes).
GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _group_signals_blocked():
    """GROUP_SIGNALS blocked in this thread while it starts a process, which keeps that mask for its whole life. A
    worker that ignored SIGINT itself did so only after its imports: Ctrl-C in its first second printed a
    KeyboardInterrupt traceback from inside matplotlib's import, and SIGTERM to the group killed the figure pool,
    each time with a warning that figures fell back to a thread."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    # Starting multiprocessing's resource tracker (the first start does) unblocks SIGINT after it.
    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class ScriptlessSpawnContext(SpawnContext):
    """multiprocessing's spawn context, with ScriptlessProcess: what prevpos starts its workers in."""

    Process = ScriptlessProcess


def from_running_script(thing) -> bool:
    """Is this function or class defined in the running script (or a notebook)? A ScriptlessProcess cannot get it."""
    return getattr(thing, "__module__", None) == "__main__"
