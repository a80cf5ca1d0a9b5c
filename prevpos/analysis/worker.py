"""What runs in the analysis process (prevpos/workers/analysis_process.py says why it exists), and the link a fit's
analysis thread has to it."""

import pickle
import sys

import torch
from transformer_lens import HookedTransformer

from prevpos.analysis.probe import ProbeRun, analyze_on
from prevpos.workers.analysis_process import prestart
from prevpos.workers.spawn import from_running_script


class PluginNotShippable(Exception):
    """This plugin cannot analyse in the analysis process; the message says why and what to do."""


class WorkerClient:
    """One fit's link to the analysis process; used from one thread, so its jobs run in order.

    Sends the model (architecture and weights) once, each plugin once (the process keeps it, state and all), and
    each analysed step's weights once however many plugins analyse them. `pack` copies what goes from the device
    (hold CUDA_CAPTURE_LOCK around it); `run` sends it and waits. A job returns the findings and the plugin's state
    (Callback.state_dict), for the trainer's copy of the plugin, so that checkpoints hold it.
    """

    def __init__(self, model_copy: HookedTransformer, probe_tokens: torch.Tensor, n_tokens: int | None = None):
        self.process = prestart()
        self._setup = (_setup, pickle.dumps(model_copy), probe_tokens.cpu(), n_tokens, model_copy.cfg.device,
                       list(sys.path))
        self._plugins: set[int] = set()
        self._step: int | None = None

    def pack(self, plugin, step: int, epoch: int, figures: bool, weights: dict) -> tuple:
        plugin_bytes = None
        if id(plugin) not in self._plugins:
            if from_running_script(type(plugin)):
                raise PluginNotShippable("it is defined in the running script or notebook (define it in a module)")
            try:
                plugin_bytes = pickle.dumps(plugin)
            except Exception as error:
                raise PluginNotShippable(f"it cannot be pickled ({error!r}; define it at the top level of a "
                                         "module, with picklable attributes)") from None
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


def _setup(model: bytes, probe_tokens: torch.Tensor, n_tokens: int | None, device: str, sys_path: list[str]) -> None:
    sys.path.extend(p for p in sys_path if p not in sys.path)  # plugins the trainer can import, this process can
    model = pickle.loads(model)  # on the training device already (pickle keeps it)
    _state.clear()  # one fit at a time
    _state.update(model=model, probe=probe_tokens.to(device), n_tokens=n_tokens, plugins={}, run=None)


def _analyze(key: int, plugin_bytes: bytes | None, step: int, epoch: int, figures: bool,
             weights: bytes | None) -> tuple:
    model = _state["model"]
    if weights is not None:  # first: later jobs of this step rely on them, whatever becomes of this one
        model.load_state_dict(pickle.loads(weights))
        _state["run"] = ProbeRun(model, _state["probe"], step, epoch, n_tokens=_state["n_tokens"])
    if plugin_bytes is not None:
        try:
            _state["plugins"][key] = pickle.loads(plugin_bytes)
        except Exception as error:
            raise PluginNotShippable(f"the analysis process cannot import it ({error!r}; install its package or put "
                                     "its folder on PYTHONPATH)") from None
    plugin = _state["plugins"][key]
    return analyze_on(plugin, _state["run"], figures), plugin.state_dict()
