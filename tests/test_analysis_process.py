"""The analysis process (what a GPU fit uses; PREVPOS_ANALYSIS=process forces it here): plugins analyse there,
their state comes back to the trainer's copy, a plugin it cannot take and a process that dies fall back to the
analysis thread. And what a plugin gets in either place: a model that takes gradients, as in `analyze`."""

import os
import pickle
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.analysis.probe import analysis_mode
from prevpos.data import PrevTokenData
from prevpos.fast.threads import CpuThreads
from prevpos.loss import previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.workers import analysis_process
from tests.conftest import build_data, needs_cuda, quiet_trainer

TRAINER_PID = os.getpid()


class _WhereAndHowOften(AnalysisPlugin):
    """Logs the pid it analyses in, and how many steps it has analysed (state that checkpoints keep)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[int] = []

    def analyze(self, run) -> Findings:
        self.steps.append(run.step)
        findings = Findings()
        findings.text("where/pid", str(os.getpid()))
        findings.text("where/device", str(run.tokens.device))
        findings.scalar("where/calls", len(self.steps))
        findings.scalar("where/probe_loss", run.loss)
        findings.scalar("where/n_tokens", run.n_tokens)
        findings.scalar("where/epoch", run.epoch)
        return findings

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


class _DiesOutsideTheTrainer(_WhereAndHowOften):
    """Kills the analysis process at step 5 (as the OS would); analyses normally in the training process."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trainer_pid = os.getpid()  # travels with the plugin (the process imports this module afresh)

    def analyze(self, run) -> Findings:
        if run.step == 5 and os.getpid() != self.trainer_pid:
            os._exit(1)
        return super().analyze(run)


class _PatternGradient(AnalysisPlugin):
    """Attribution patching's first step: d(probe loss)/d(layer-1 pattern), under torch.enable_grad(). It worked in
    `analyze` and failed in fit ("can't retain_grad on Tensor that has requires_grad=False")."""

    def analyze(self, run) -> Findings:
        leftover = sum(p.grad is not None for p in run.model.parameters())  # from an earlier analysis's backward
        kept = {}

        def keep(pattern, hook):
            pattern.retain_grad()
            kept["pattern"] = pattern

        with torch.enable_grad():
            shared_with_a_graph = run.logits.requires_grad  # the first to ask computes the shared forward
            logits = run.model.run_with_hooks(run.tokens, fwd_hooks=[("blocks.1.attn.hook_pattern", keep)])
            previous_token_loss(logits, run.tokens).backward()
        findings = Findings()
        findings.scalar("gradient/pattern_L1", kept["pattern"].grad.abs().mean())
        findings.scalar("gradient/leftover", leftover)
        findings.scalar("gradient/shared_with_a_graph", shared_with_a_graph)
        return findings


@pytest.fixture()
def in_process(monkeypatch):
    monkeypatch.setenv("PREVPOS_ANALYSIS", "process")
    monkeypatch.setenv("PREVPOS_RENDER", "inline")


def fit(tmp_path: Path, *plugins: AnalysisPlugin, accelerator: str = "cpu", module: PrevTokenModel | None = None,
        data: PrevTokenData | None = None) -> tuple[EventAccumulator, list[str]]:
    """2 epochs x 5 steps (analyses at steps 0, 5, 10); the run's events and the warnings it gave."""
    logger = TensorBoardLogger(tmp_path, name="run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = quiet_trainer(max_epochs=2, logger=logger, callbacks=[CpuThreads(), *plugins],
                                accelerator=accelerator)
        trainer.fit(module or PrevTokenModel(), data or build_data())
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events, [str(w.message) for w in caught]


def texts(events: EventAccumulator, tag: str) -> list[str]:
    return [e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")]


def pids(events: EventAccumulator) -> list[int]:
    return [int(text) for text in texts(events, "where/pid")]


def test_plugins_analyse_in_the_analysis_process_and_their_state_comes_back(tmp_path, in_process):
    plugin = _WhereAndHowOften()
    events, warned = fit(tmp_path, plugin, data=build_data(n_tokens=20))
    analysed_in = set(pids(events))
    assert len(analysed_in) == 1 and TRAINER_PID not in analysed_in
    assert [(e.step, e.value) for e in events.Scalars("where/calls")] == [(0, 1), (5, 2), (10, 3)]
    assert plugin.steps == [0, 5, 10]  # the trainer's copy has the process's state, for checkpoints
    losses = [e.value for e in events.Scalars("where/probe_loss")]
    assert losses[0] > 4 and losses[-1] < losses[0]  # each step's own weights (ln 100 = 4.6 untrained)
    assert [e.value for e in events.Scalars("where/n_tokens")] == [20] * 3  # the data's tokens, for inputs of its own
    assert [e.value for e in events.Scalars("where/epoch")] == [0, 1, 2]  # epochs trained (was 0, 0, 1)
    assert not [w for w in warned if "analys" in w]

    again, _ = fit(tmp_path / "again", _WhereAndHowOften())
    assert set(pids(again)) == analysed_in  # one process for every fit in this Python process


@pytest.mark.parametrize("place", ["thread", "process"])
def test_a_plugin_takes_gradients_in_fit_as_in_analyze(place, tmp_path, monkeypatch):
    monkeypatch.setenv("PREVPOS_ANALYSIS", place)
    monkeypatch.setenv("PREVPOS_RENDER", "inline")
    module = PrevTokenModel()
    events, warned = fit(tmp_path, _PatternGradient(), module=module)
    assert not [w for w in warned if "_PatternGradient" in w], warned
    gradients = events.Scalars("gradient/pattern_L1")
    assert [e.step for e in gradients] == [0, 5, 10]
    assert [e.value for e in events.Scalars("gradient/leftover")] == [0, 0, 0]
    assert [e.value for e in events.Scalars("gradient/shared_with_a_graph")] == [0, 0, 0]
    with analysis_mode(module.model):  # the final weights, analysed as `analyze` and a notebook do
        expected = _PatternGradient().analyze_checked(ProbeRun(module.model, build_data().probe_tokens(), 10))
    assert 0 < gradients[-1].value == pytest.approx(expected.scalars["gradient/pattern_L1"], rel=1e-5)


def test_a_plugin_the_process_cannot_take_analyses_in_a_thread(tmp_path, in_process):
    class _Local(_WhereAndHowOften):  # a local class cannot be pickled, as one defined in a notebook cannot be imported
        pass

    events, warned = fit(tmp_path, _Local())
    assert set(pids(events)) == {TRAINER_PID}
    assert [e.step for e in events.Scalars("where/calls")] == [0, 5, 10]
    assert [w for w in warned if w.startswith("plugin _Local analyses in a thread") and "cannot be pickled" in w]


class _HoldsAGraph(PrevTokenModel):
    """Stands in for the fast path's module on a GPU, which holds its CUDA graph: an attribute that does not pickle."""

    def __init__(self):
        super().__init__()
        self.graph = threading.Lock()


def test_a_plugin_goes_to_the_process_without_the_trainer_s_module(tmp_path, in_process):
    """Lightning binds each callback's log and log_dict to the module, so a plugin's pickle held the whole module
    (0.7-2.2 MB). On the fast path on an H100 three of the six default plugins could not go to the process at all
    ("cannot pickle 'CUDAGraph' object"), and analysed in the training process's thread."""
    plugin = _WhereAndHowOften()
    events, warned = fit(tmp_path, plugin, module=_HoldsAGraph())
    assert TRAINER_PID not in pids(events) and not [w for w in warned if "analyses in a thread" in w], warned
    assert plugin.log.__self__ is not None and len(pickle.dumps(plugin)) < 10_000  # Lightning's binding stays here


def test_training_goes_on_when_the_analysis_process_dies(tmp_path, in_process):
    dead = analysis_process.prestart().process
    events, warned = fit(tmp_path, _DiesOutsideTheTrainer())
    assert [w for w in warned if w.startswith("the analysis process ended (exit code 1)")], warned
    # Step 5's job died with the process: analysed again, in the thread; nothing lost.
    assert [e.step for e in events.Scalars("where/calls")] == [0, 5, 10]
    assert pids(events)[0] == dead.pid and set(pids(events)[1:]) == {TRAINER_PID}
    assert analysis_process.prestart().process.pid != dead.pid  # the next fit gets a new process


@needs_cuda
def test_on_a_gpu_plugins_analyse_in_the_process_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("PREVPOS_ANALYSIS", raising=False)  # the default place on a GPU
    monkeypatch.setenv("PREVPOS_RENDER", "inline")
    plugin = _WhereAndHowOften()
    events, _ = fit(tmp_path, plugin, accelerator="cuda")
    assert TRAINER_PID not in pids(events) and set(texts(events, "where/device")) == {"cuda:0"}
    assert plugin.steps == [0, 5, 10]


def test_stop_ends_the_process_and_the_next_fit_starts_another():
    running = analysis_process.prestart().process
    analysis_process.stop()
    assert not running.is_alive()
    assert analysis_process.prestart().process.pid != running.pid


def test_a_python_process_that_started_it_exits():
    """It ignores the SIGTERM that multiprocessing's exit handler ends a daemonic child with, and that handler then
    waits for it: a process that had started it (a fit on a GPU, a whole test session) never exited."""
    started = "from prevpos.workers import analysis_process; print(analysis_process.prestart().process.pid, flush=True)"
    result = subprocess.run([sys.executable, "-c", started], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    child = Path(f"/proc/{int(result.stdout)}")
    assert not child.exists() or " Z " in (child / "stat").read_text()
