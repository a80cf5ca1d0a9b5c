"""Per-run state shared by all plugins: the probe batch, this step's ProbeRun, the writer, reported faults."""

import weakref

import lightning as L
import torch

from prevpos.analysis.probe import ProbeRun
from prevpos.analysis.writer import FindingsWriter

_sessions: "weakref.WeakKeyDictionary[L.Trainer, AnalysisSession]" = weakref.WeakKeyDictionary()


class AnalysisSession:
    def __init__(self, trainer: L.Trainer, probe_tokens: torch.Tensor):
        self.probe_tokens = probe_tokens
        self.writer = FindingsWriter(trainer.loggers)
        self.reported: set[str] = set()
        self._run: ProbeRun | None = None

    def probe_run(self, model, step: int, epoch: int) -> ProbeRun:
        """One run_with_cache per step, however many plugins ask."""
        if self._run is None or self._run.step != step or self._run.model is not model:
            self._run = ProbeRun(model, self.probe_tokens.to(model.cfg.device), step, epoch)
        return self._run


def session_for(trainer: L.Trainer) -> AnalysisSession:
    if trainer not in _sessions:
        _sessions[trainer] = AnalysisSession(trainer, trainer.datamodule.probe_tokens())
    return _sessions[trainer]
