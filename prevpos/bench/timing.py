"""What the benchmark reads off a run: steady steps/s, time to a target accuracy, peak memory."""

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def now(device: torch.device) -> float:
    """A wall-clock reading after the device has finished what was queued (CUDA runs ahead of Python)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # Linux: "5" resets this process's peak resident set size (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak CUDA memory allocated, or on CPU the process's peak resident memory, since reset_peak_memory; None where
    unknown ("-" in bench's table, null in its JSON)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:  # Linux; elsewhere (macOS) no peak that reset_peak_memory can reset: none, not the process's whole life's
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class SpeedMeter:
    """Accumulates training-only time (validation and analyses excluded) after the warm-up epochs."""

    def __init__(self, device: torch.device, warmup_epochs: int = 1, target: float = 0.99):
        self.device, self.warmup_epochs, self.target = device, warmup_epochs, target
        self.start = self._window = self._last_step_end = 0.0
        self.train_seconds, self.train_steps = 0.0, 0
        self.end_seconds: float | None = None
        self.time_to_target: float | None = None
        self.steps_to_target: int | None = None
        self.last_accuracy: float | None = None

    def begin(self) -> None:
        self.start = now(self.device)

    def epoch_start(self) -> None:
        self._window = now(self.device)

    def epoch_end(self, epoch: int, steps: int) -> None:
        self._last_step_end = now(self.device)
        if epoch >= self.warmup_epochs:
            self.train_seconds += self._last_step_end - self._window
            self.train_steps += steps

    def finished(self) -> None:
        """Training is over: how long it took after the last step (last validation, checkpoint, analyses, figures)."""
        self.end_seconds = now(self.device) - self._last_step_end

    def validated(self, accuracy: float, step: int) -> None:
        self.last_accuracy = accuracy
        if self.time_to_target is None and accuracy >= self.target:
            self.time_to_target, self.steps_to_target = now(self.device) - self.start, step

    def result(self) -> dict:
        rate = self.train_steps / self.train_seconds if self.train_seconds else float("nan")
        return {"steps_per_s": rate, "time_to_target_s": self.time_to_target, "steps_to_target": self.steps_to_target,
                "end_s": self.end_seconds}


class SpeedCallback(Callback):
    """SpeedMeter fed by Lightning's hooks: one device sync at each epoch's first and last training batch.
    Put it after the analysis plugins, so that the end of training it sees is after theirs."""

    def __init__(self, meter: SpeedMeter):
        self.meter = meter
        self._first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.begin()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self._first_step = trainer.global_step
            self.meter.epoch_start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            self.meter.epoch_end(trainer.current_epoch, trainer.global_step - self._first_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.finished()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        if not trainer.sanity_checking and accuracy is not None:
            self.meter.validated(float(accuracy), trainer.global_step)
