"""Per-run state shared by all plugins: the probe, the analysis thread and its copy of the model, the writer."""

import copy
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import TYPE_CHECKING

import lightning as L
import torch
from transformer_lens import HookedTransformer

from prevpos.analysis.findings import Findings
from prevpos.analysis.probe import ProbeRun, analyze_on
from prevpos.analysis.worker import PluginNotShippable, WorkerClient
from prevpos.analysis.writer import FindingsWriter
from prevpos.fast.step import CUDA_CAPTURE_LOCK
from prevpos.notices import warn
from prevpos.workers.analysis_process import AnalysisProcessDied, analysis_place

if TYPE_CHECKING:
    from prevpos.analysis.plugin import AnalysisPlugin

_sessions: "weakref.WeakKeyDictionary[L.Trainer, AnalysisSession]" = weakref.WeakKeyDictionary()


def analysis_copy(model: HookedTransformer) -> HookedTransformer:
    """The model the analyses run, on the training device: a float32 copy in eval mode, never trained. Its weights
    require grad as the trained model's do, as in `analyze` and a notebook, so that a plugin can take gradients
    under torch.enable_grad() (attribution patching); with none requiring it, that failed in fit only."""
    model_copy = copy.deepcopy(model).float().eval()
    model_copy.zero_grad(set_to_none=True)  # no training gradients come with it
    model_copy.cfg.dtype = torch.float32
    return model_copy


class AnalysisSession:
    """Runs the plugins off the training thread, so training goes on while they analyse.

    At each analysed step the training thread only copies the weights (once, however many plugins run). A
    background thread runs the plugins on a float32 copy of the model with those weights, one run_with_cache on
    the probe for all plugins of that step. When training on a GPU that thread hands each job to the analysis
    process instead (prevpos/workers/analysis_process.py says why, and how to choose), except for a plugin the process
    cannot take (defined in a notebook or the running script, or not picklable). Findings are written,
    and failures reported, back on the training thread, in step order, as soon as they are ready (`collect`);
    `finish` waits for all of them.
    Measured on a 2-core CPU: the default plugins on the training thread cost ~4 s of a default fit's ~30 s.
    """

    def __init__(self, trainer: L.Trainer, probe_tokens: torch.Tensor, n_tokens: int | None = None):
        self.probe_tokens, self.n_tokens = probe_tokens, n_tokens
        self.writer = FindingsWriter(trainer.loggers)
        self.reported: set[str] = set()
        self.place = analysis_place(trainer.strategy.root_device.type)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="prevpos-analysis")
        self._jobs: deque[tuple["AnalysisPlugin", int, Future]] = deque()
        self._weights: tuple[int, dict] | None = None  # (step, state_dict copy): what the next jobs analyse
        self._copy: HookedTransformer | None = None  # the model the analyses run, never trained
        self._client: WorkerClient | None = None
        self._local: set[int] = set()  # plugins that analyse on the thread
        self._run: ProbeRun | None = None
        self._run_weights: tuple[int, dict] | None = None

    def submit(self, plugin: "AnalysisPlugin", model: HookedTransformer, step: int, epoch: int,
               figures: bool) -> None:
        """Queue plugin.analyze on the weights `model` has now (call on the training thread, between steps)."""
        self.collect()
        if self._copy is None:
            self._copy = analysis_copy(model)
        if self._weights is None or self._weights[0] != step:
            self._weights = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        future = self._thread.submit(self._analyze, plugin, self._weights, epoch, figures)
        self._jobs.append((plugin, step, future))

    def _analyze(self, plugin: "AnalysisPlugin", weights: tuple[int, dict], epoch: int,
                 figures: bool) -> tuple[Findings, dict | None]:
        """(findings, the plugin's state if it changed elsewhere than on the trainer's copy of it)."""
        if self.place == "process" and id(plugin) not in self._local:
            try:
                return self._analyze_in_process(plugin, weights, epoch, figures)
            except PluginNotShippable as why:
                self._local.add(id(plugin))
                warn(f"plugin {type(plugin).__name__} analyses in a thread of the training process, where "
                     f"its Python slows training on a GPU: {why}")
            except AnalysisProcessDied as error:  # e.g. the OS killed it; the next fit starts a new one
                self.place = "thread"
                warn(f"the analysis process ended ({error}); analysing in a thread instead")
        with self._no_graph_capture():  # GPU launches from this thread would invalidate a capture
            return analyze_on(plugin, self._probe_run(weights, epoch), figures), None

    def _analyze_in_process(self, plugin: "AnalysisPlugin", weights: tuple[int, dict], epoch: int,
                            figures: bool) -> tuple[Findings, dict]:
        step, state = weights
        with self._no_graph_capture():  # copies from the GPU: not during a graph capture
            if self._client is None:
                self._client = WorkerClient(self._copy, self.probe_tokens, self.n_tokens)
            job = self._client.pack(plugin, step, epoch, figures, state)
        return self._client.run(job)

    def _no_graph_capture(self):
        """Held while this thread uses the GPU: the fast path holds it while it records a CUDA graph."""
        return CUDA_CAPTURE_LOCK if self._copy.cfg.device.startswith("cuda") else nullcontext()

    def _probe_run(self, weights: tuple[int, dict], epoch: int) -> ProbeRun:
        """One run_with_cache per analysed step, however many plugins ask (jobs run in order, one at a time)."""
        if self._run_weights is not weights:
            step, state = weights
            self._copy.load_state_dict(state)
            self._run = ProbeRun(self._copy, self.probe_tokens.to(self._copy.cfg.device), step, epoch,
                                 n_tokens=self.n_tokens)
            self._run_weights = weights
        return self._run

    def collect(self, wait: bool = False, raise_strict: bool = True, before_step: int | None = None) -> None:
        """Write the findings of finished jobs in order (all of them if `wait`; only those of steps before
        `before_step` if given); report failures once each."""
        while (self._jobs and (before_step is None or self._jobs[0][1] < before_step)
               and (wait or self._jobs[0][2].done())):
            plugin, step, future = self._jobs.popleft()
            try:
                findings, plugin_state = future.result()
            except Exception as error:
                plugin.report_failure(error, step, self, raise_strict)
                continue
            if plugin_state:
                plugin.load_state_dict(plugin_state)
            self.writer.write(findings, step, plugin_path(plugin))
        self.writer.deliver()

    def settle_states(self, before_step: int) -> None:
        """Every analysis of a step before `before_step` written, and the state of the plugins that keep one with
        the trainer's copies, if such a plugin has one pending: a checkpoint at that step then holds the state of
        each analysis before it, and a resume analyses its own step again (a checkpoint held only the analyses done
        by then, and a resume lost the others)."""
        if any(step < before_step and keeps_state(plugin) for plugin, step, _ in self._jobs):
            self.collect(wait=True, before_step=before_step)

    def finish(self, raise_strict: bool = True) -> None:
        """Every queued analysis written and every figure with the loggers. Safe to call more than once."""
        self.collect(wait=True, raise_strict=raise_strict)
        self.writer.finish()


def plugin_path(plugin: "AnalysisPlugin") -> str:
    """What `analyze --plugins` takes for this plugin: a built-in's short name, else its class path."""
    cls = type(plugin)
    return cls.__name__ if cls.__module__.startswith("prevpos_plugins.") else f"{cls.__module__}.{cls.__qualname__}"


def keeps_state(plugin: "AnalysisPlugin") -> bool:
    return type(plugin).state_dict is not L.Callback.state_dict


def settle_states(trainer: L.Trainer, before_step: int) -> None:
    """AnalysisSession.settle_states for the trainer's session, if it has one (only the global rank 0 analyses)."""
    if trainer in _sessions:
        _sessions[trainer].settle_states(before_step)


def session_for(trainer: L.Trainer) -> AnalysisSession:
    if trainer not in _sessions:
        data = trainer.datamodule
        _sessions[trainer] = AnalysisSession(trainer, data.probe_tokens(), getattr(data, "n_tokens", None))
    return _sessions[trainer]
