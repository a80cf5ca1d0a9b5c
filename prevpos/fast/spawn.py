"""Spawned processes that do not import the running script: the figure workers and the analysis process."""

import sys
import types
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
            super().start()
        finally:
            sys.modules["__main__"] = main


class ScriptlessSpawnContext(SpawnContext):
    """multiprocessing's spawn context, with ScriptlessProcess: what prevpos starts its workers in."""

    Process = ScriptlessProcess


def from_running_script(thing) -> bool:
    """Is this function or class defined in the running script (or a notebook)? A ScriptlessProcess cannot get it."""
    return getattr(thing, "__module__", None) == "__main__"
