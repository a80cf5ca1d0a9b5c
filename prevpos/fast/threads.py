"""How many threads torch uses for CPU training."""

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class CpuThreads(Callback):
    """Train on CPU with `threads` torch threads (1 by default) unless OMP_NUM_THREADS is set; restored after.

    On a 2-core machine torch's default 2 threads are fastest only while nothing else runs: a step at batch 256
    goes from ~50 ms to ~630 ms when the other core is busy (the figure renderer, another run, a test suite),
    while 1 thread stays at ~86 ms either way (docs/science.md). Set OMP_NUM_THREADS to choose another number.

    Args:
        threads: torch threads for training on CPU.
    """

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._previous: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
            self._previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            torch.set_num_threads(self._previous)
            self._previous = None


def cpu_threads_for_training(threads: int = 1) -> int:
    """The thread count CpuThreads would use (for code that trains outside a Trainer, e.g. the bench baseline)."""
    return int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS") else threads
