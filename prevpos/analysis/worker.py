"""The analysis process: plugins' analyze() runs in a process of its own, so its Python does not share a GIL with
the training loop.

A GPU step is bound by Python, and torch releases the GIL at every op: an analysis thread running Python beside
it takes the GIL at each release. Measured on the 2-core CPU at batch 8, where steps are bound by Python as on a
GPU, a plain training loop beside the default plugins analysing without pause: 223-241 steps/s alone, 148-161
with the analyses in a thread, 250-253 with them in a process.

One process per Python process, reused by every fit in it (bench's repeats, a notebook's fits). It is spawned
without importing the running script (as the figure workers are), and daemonic: the interpreter's exit ends it
instead of waiting for it. `prestart` at fit setup runs its imports (~10 s on the 2-core CPU) beside
Lightning's own setup.
"""

import os
import pickle
import sys
import threading
import traceback
from contextlib import nullcontext

import torch
from transformer_lens import HookedTransformer

from prevpos.errors import ConfigError
from prevpos.fast.png import ScriptlessSpawnContext

ANALYSIS_PLACES = ("process", "thread")


def analysis_place(device: torch.device) -> str:
    """Where plugins analyse: PREVPOS_ANALYSIS=process or thread (in the training process); unset, a process
    when training on a GPU and a thread on a CPU.

    A CPU step at the default batch spends its time in kernels that release the GIL, so the thread costs it little,
    and the process costs a core and seconds of imports: the default fit on the 2-core CPU took 40.5-41.4 s with
    the process and 39.3-39.5 s with the thread (2 runs each, alternating).
    """
    place = os.environ.get("PREVPOS_ANALYSIS") or ("process" if device.type == "cuda" else "thread")
    if place not in ANALYSIS_PLACES:
        raise ConfigError(f"PREVPOS_ANALYSIS={place}: must be one of {', '.join(ANALYSIS_PLACES)} (unset: a process "
                          "on a GPU, a thread on a CPU)")
    return place


class PluginNotShippable(Exception):
    """This plugin cannot analyse in the analysis process; the message says why and what to do."""


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
        return _process


class WorkerClient:
    """One fit's link to the analysis process; used from one thread, so its jobs run in order.

    Sends the model (architecture and weights) once, each plugin once (the process keeps it, state and all), and
    each analysed step's weights once however many plugins analyse them. `pack` copies what goes from the device
    (hold CUDA_CAPTURE_LOCK around it); `run` sends it and waits. A job returns the findings and the plugin's state
    (Callback.state_dict), for the trainer's copy of the plugin, so that checkpoints hold it.
    """

    def __init__(self, model_copy: HookedTransformer, probe_tokens: torch.Tensor):
        self.process = prestart()
        self._setup = (_setup, pickle.dumps(model_copy), probe_tokens.cpu(), model_copy.cfg.device,
                       list(sys.path))
        self._plugins: set[int] = set()
        self._step: int | None = None

    def pack(self, plugin, step: int, epoch: int, figures: bool, weights: dict) -> tuple:
        plugin_bytes = None
        if id(plugin) not in self._plugins:
            if type(plugin).__module__ == "__main__":
                raise PluginNotShippable("it is defined in the running script or notebook (define it in a module)")
            try:
                plugin_bytes = pickle.dumps(plugin)
            except Exception as error:
                raise PluginNotShippable(f"it cannot be pickled ({error!r})") from None
        step_weights = pickle.dumps({k: v.cpu() for k, v in weights.items()}) if self._step != step else None
        return (_analyze, id(plugin), plugin_bytes, step, epoch, figures, step_weights)

    def run(self, job: tuple) -> tuple:
        if self._setup is not None:
            self.process.call(*self._setup)
            self._setup = None
        self._plugins.add(job[1])  # the process has the plugin and the weights from now on, whatever the outcome
        self._step = job[3]
        return self.process.call(*job)


# ---- in the analysis process ----

_state: dict = {}  # the current fit's model, probe, plugins and probe run


def _serve(connection) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    from prevpos.analysis import probe  # noqa: F401  (TransformerLens and the plugins' stack, before the first job)

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


def _setup(model: bytes, probe_tokens: torch.Tensor, device: str, sys_path: list[str]) -> None:
    sys.path.extend(p for p in sys_path if p not in sys.path)  # plugins the trainer can import, this process can
    model = pickle.loads(model).to(device)
    model.cfg.device = device
    _state.clear()  # one fit at a time
    _state.update(model=model, probe=probe_tokens.to(device), plugins={}, run=None)


def _analyze(key: int, plugin_bytes: bytes | None, step: int, epoch: int, figures: bool,
             weights: bytes | None) -> tuple:
    from prevpos.analysis.probe import ProbeRun, analysis_mode

    model = _state["model"]
    if weights is not None:  # first: later jobs of this step rely on them, whatever becomes of this one
        model.load_state_dict(pickle.loads(weights))
        _state["run"] = ProbeRun(model, _state["probe"], step, epoch)
    if plugin_bytes is not None:
        try:
            _state["plugins"][key] = pickle.loads(plugin_bytes)
        except Exception as error:
            raise PluginNotShippable(f"the analysis process cannot import it ({error!r})") from None
    run, plugin = _state["run"], _state["plugins"][key]
    on_gpu = run.tokens.device.type == "cuda"
    with torch.cuda.device(run.tokens.device) if on_gpu else nullcontext(), analysis_mode(model):
        findings = plugin.analyze_checked(run)
    if not figures:
        findings.figures.clear()
    return findings, plugin.state_dict()
