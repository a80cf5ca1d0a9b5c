"""The analysis process itself: started, called, and ended; importable without torch, so that `fit` can start it
before its own heavy imports. What runs in it is in prevpos/analysis/worker.py.

Analyses run there when training on a GPU. A GPU step is bound by Python, and torch releases the GIL at every op:
an analysis thread running Python beside it takes the GIL at each release. Measured on the 2-core CPU at batch 8,
where steps are bound by Python as on a GPU (`python scripts/analysis_gil.py --repeats 3`: a plain training loop
beside the default plugins analysing without pause): 245-266 steps/s alone, 189-195 beside the analyses in a
thread, 255-264 beside them in a process. On a CPU at the default batch a step spends its time in kernels that
release the GIL, so the thread costs little, and a process would cost a core and seconds of imports: the default
fit on the 2-core CPU took 40.5-41.4 s with the process and 39.3-39.5 s with the thread (2 runs each, alternating).

One process per Python process, reused by every fit in it (bench's repeats, a notebook's fits). It is spawned
without importing the running script, and the interpreter's exit ends it (`stop`, at exit) instead of waiting for it.
"""

import atexit
import os
import signal
import threading
import traceback

from prevpos.errors import ConfigError
from prevpos.workers.spawn import ScriptlessSpawnContext

ANALYSIS_PLACES = ("process", "thread")


def analysis_place(device_type: str) -> str:
    """Where plugins analyse: PREVPOS_ANALYSIS=process or thread (in the training process); unset, a process when
    training on a GPU ("cuda") and a thread otherwise."""
    place = os.environ.get("PREVPOS_ANALYSIS") or ("process" if device_type == "cuda" else "thread")
    if place not in ANALYSIS_PLACES:
        raise ConfigError(f"PREVPOS_ANALYSIS={place}: must be one of {', '.join(ANALYSIS_PLACES)} (unset: a process "
                          "on a GPU, a thread on a CPU)")
    return place


class AnalysisProcessDied(Exception):
    """The analysis process ended (e.g. the OS killed it)."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in the analysis process (its __cause__ on this side)."""

    def __str__(self) -> str:
        return self.args[0]


class AnalysisProcess:
    """The process, and calls into it: `call(fn, *args)` runs fn(*args) there and returns or raises what it did."""

    def __init__(self):
        context = ScriptlessSpawnContext()
        self._connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), name="prevpos-analysis", daemon=True)
        self.process.start()
        theirs.close()
        self._lock = threading.Lock()

    def call(self, fn, *args):
        with self._lock:
            try:
                self._connection.send((fn, args))
                ok, value, remote_trace = self._connection.recv()
            except (EOFError, OSError) as error:
                self.process.join(timeout=5)  # for its exit code
                raise AnalysisProcessDied(f"exit code {self.process.exitcode}") from error
        if not ok:
            if remote_trace:
                value.__cause__ = RemoteTraceback(remote_trace)
            raise value
        return value


_process: AnalysisProcess | None = None
_process_lock = threading.Lock()


def prestart() -> AnalysisProcess:
    """The analysis process, started now if none is running (its imports take seconds)."""
    global _process
    with _process_lock:
        if _process is None or not _process.process.is_alive():
            _process = AnalysisProcess()
            # Before multiprocessing's own exit handler (registered earlier, run later), which SIGTERMs a daemonic
            # child and waits for it: this one has SIGTERM blocked for life (prevpos/workers/spawn.py), so the
            # interpreter waited forever at exit (a whole test session did).
            atexit.unregister(stop)
            atexit.register(stop)
        return _process


def stop() -> None:
    """End the analysis process, if one runs; the next fit starts another. For a caller whose environment changed
    since it started (e.g. CUDA_VISIBLE_DEVICES: the tests hide the GPU from all but their CUDA tests)."""
    with _process_lock:
        if _process is not None and _process.process.is_alive():
            _process.process.kill()
            _process.process.join()


def _serve(connection) -> None:
    """The process's loop: import the analysis stack, then run each call sent, in order, and send back its result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the training process; this one ends with it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import prevpos.analysis.worker  # noqa: F401  (torch, TransformerLens, the plugins' stack: before the first call)

    while True:
        try:
            fn, args = connection.recv()
        except (EOFError, OSError):  # the training process has gone
            os._exit(0)  # nothing to clean up: skip the ~1 s teardown of torch and TransformerLens
        try:
            reply = (True, fn(*args), None)
        except Exception as error:
            reply = (False, error, "".join(traceback.format_exception(error)))
        try:
            connection.send(reply)
        except Exception as error:  # an exception or findings that do not pickle
            connection.send((False, RuntimeError(f"{reply[1]!r} ({error!r})"), None))
