"""fit reads training tensors on the host (a GPU sync each, which stalls a Python-bound GPU step) only on the steps
it logs, never on the others."""

import traceback

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.overrides import TorchFunctionMode

from prevpos.lightning_cli import GUARD
from prevpos.guards import StopOnDivergence
from prevpos.module import PrevTokenModel
from tests.conftest import build_data, quiet_trainer

HOST_READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy"}
LOG_EVERY = 5


class HostReads(TorchFunctionMode, L.Callback):
    """Counts host reads of tensors per training step (callbacks included), outside the optimizer: AdamW's
    step counters live on the CPU on every device, so reading them syncs nothing."""

    def __init__(self):
        super().__init__()
        self.step: int | None = None
        self.by_step: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.step is not None and getattr(func, "__name__", "") in HOST_READS and not any(
                "/torch/optim/" in frame.filename for frame in traceback.extract_stack()):
            self.by_step[self.step] = self.by_step.get(self.step, 0) + 1
        return func(*args, **(kwargs or {}))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step

    def on_validation_start(self, trainer, pl_module):
        self.step = None  # validation reads its metrics once, by design


@pytest.mark.parametrize("progress_bar", [False, True])
def test_steps_that_log_nothing_read_nothing_on_the_host(in_tmp, progress_bar):
    reads = HostReads()
    callbacks = [StopOnDivergence(**GUARD), reads] + ([TQDMProgressBar()] if progress_bar else [])
    trainer = quiet_trainer(max_epochs=2, callbacks=callbacks, log_every_n_steps=LOG_EVERY, logger=True,
                            enable_progress_bar=progress_bar, default_root_dir=".")
    with reads:
        trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=20))
    logged_steps = {step for step in range(40) if (step + 1) % LOG_EVERY == 0}
    assert set(reads.by_step) == logged_steps  # the logged steps do read: the counter sees reads
    assert max(reads.by_step.values()) <= 4  # the guard's loss check, and the two values written to TensorBoard


def test_the_weight_check_reads_the_host_once():
    module, reads = PrevTokenModel(), HostReads()
    reads.step = 0
    with reads:
        StopOnDivergence()._check_weights(quiet_trainer(), module)
    assert reads.by_step == {0: 1}  # 20 before: one per weight


class ValidationReads(HostReads):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = None

    def on_validation_start(self, trainer, pl_module):
        self.step = 0

    def on_validation_end(self, trainer, pl_module):
        self.step = None


def validation_reads(val_batches: int) -> int:
    reads = ValidationReads()
    trainer = quiet_trainer(max_epochs=1, callbacks=[reads], logger=True, default_root_dir=".")
    with reads:  # validation batches are 1,024 sequences at this batch size
        trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=2, val_size=1024 * val_batches))
    return reads.by_step[0]


def test_validation_reads_the_host_to_log_its_metrics_not_per_batch(in_tmp):
    assert validation_reads(1) == validation_reads(4)  # 35 and 95 before: MeanMetric checked each update for NaN
