"""The analysis process: plugins' analyze() runs in a process of its own, so its Python does not share a GIL with
the training loop.

A GPU step is bound by Python, and torch releases the GIL at every op: an analysis thread running Python beside it
took the GIL at each release. Measured on the 2-core CPU at batch 8, where steps are bound by Python as on a GPU
(a plain loop beside the default plugins analysing without pause): 223-241 steps/s alone, 148-161 with the
analyses in a thread, 250-253 with them in a process. Spawned, without importing the running script (as the
figure workers), once per Python process and reused by every fit in it; `prestart` at fit setup hides its ~10 s
of imports (2-core CPU) behind Lightning's own setup.
"""

import atexit
import os
import pickle
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

import torch
from transformer_lens import HookedTransformer

from prevpos.errors import ConfigError
from prevpos.fast.png import ScriptlessSpawnContext

ANALYSIS_PLACES = ("process", "thread")

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_session_ids = iter(range(1, 2**62))


def analysis_place() -> str:
    """Where plugins analyse: PREVPOS_ANALYSIS=process (default) or thread (in the training process)."""
    place = os.environ.get("PREVPOS_ANALYSIS") or "process"
    if place not in ANALYSIS_PLACES:
        raise ConfigError(f"PREVPOS_ANALYSIS={place}: must be one of {', '.join(ANALYSIS_PLACES)} (unset: process)")
    return place


def prestart() -> ProcessPoolExecutor:
    """The analysis process, started now if it is not running yet (its imports take seconds)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(1, mp_context=ScriptlessSpawnContext(), initializer=_init_worker)
            _pool.submit(_import_analysis_stack)
        return _pool


def discard(pool: ProcessPoolExecutor) -> None:
    """Forget a pool that broke (a worker the OS killed), so the next fit starts a fresh one."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None


class PluginNotShippable(Exception):
    """This plugin cannot analyse in the analysis process: it cannot be pickled, or that process cannot import it."""


class WorkerClient:
    """One fit's link to the analysis process; used from one thread, so its jobs run in order.

    Sends the model (architecture and a first set of weights) once, each plugin once (the process keeps it, state
    and all), and each analysed step's weights once however many plugins analyse them. `pack` copies what goes
    from the device (hold CUDA_CAPTURE_LOCK around it); `run` sends it and waits. A job returns the findings and the
    plugin's state (Callback.state_dict), for the trainer's copy of the plugin, so that checkpoints hold it.
    """

    def __init__(self, model_copy: HookedTransformer, probe_tokens: torch.Tensor):
        self.pool = prestart()
        self.session = next(_session_ids)
        self._setup = (_setup, self.session, pickle.dumps(model_copy), probe_tokens.cpu(), model_copy.cfg.device,
                       list(sys.path))
        self._plugins: set[int] = set()
        self._step: int | None = None

    def pack(self, plugin, step: int, epoch: int, figures: bool, weights: dict) -> tuple:
        plugin_bytes = None
        if id(plugin) not in self._plugins:
            if type(plugin).__module__ == "__main__":
                raise PluginNotShippable("it is defined in the running script or notebook")
            try:
                plugin_bytes = pickle.dumps(plugin)
            except Exception as error:
                raise PluginNotShippable(f"it cannot be pickled ({error!r})") from None
        step_weights = pickle.dumps({k: v.cpu() for k, v in weights.items()}) if self._step != step else None
        return (_analyze, self.session, id(plugin), plugin_bytes, step, epoch, figures, step_weights)

    def run(self, job: tuple) -> tuple:
        if self._setup is not None:
            self.pool.submit(*self._setup).result()
            self._setup = None
        future = self.pool.submit(*job)
        self._plugins.add(job[2])  # the process has the plugin and the weights from now on, whatever the outcome
        self._step = job[4]
        return future.result()


# ---- in the analysis process ----

_state: dict = {}  # the current session's model, probe, plugins and probe run


def _init_worker() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    atexit.register(os._exit, 0)  # nothing to clean up: skip the ~1 s teardown of torch and TransformerLens


def _import_analysis_stack() -> None:
    from prevpos.analysis import probe  # noqa: F401  (TransformerLens, matplotlib)


def _setup(session: int, model: bytes, probe_tokens: torch.Tensor, device: str, sys_path: list[str]) -> None:
    sys.path.extend(p for p in sys_path if p not in sys.path)  # plugins importable by the trainer now are here too
    model = pickle.loads(model).to(device)
    model.cfg.device = device
    _state.clear()  # one fit at a time
    _state.update(session=session, model=model, probe=probe_tokens.to(device), plugins={}, run=None)


def _analyze(session: int, key: int, plugin_bytes: bytes | None, step: int, epoch: int, figures: bool,
             weights: bytes | None) -> tuple:
    from contextlib import nullcontext

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
