"""What ModelCheckpoint costs the training loop per epoch, writing in the loop or on Lightning's checkpoint thread.
    python scripts/checkpoint_cost.py [--repeats 2]
A 30-epoch fit at batch 8 (10 steps an epoch) with fit's checkpoint settings; ModelCheckpoint's two epoch-end hooks
are timed. Runs alternate: AtomicCheckpointIO (in the loop), then BackgroundCheckpointIO (what fit uses)."""

import argparse
import tempfile
import time

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from prevpos.checkpoints import AtomicCheckpointIO, BackgroundCheckpointIO
from prevpos.cli import CHECKPOINT_DEFAULTS
from prevpos.data import PrevTokenData
from prevpos.fast.threads import CpuThreads
from prevpos.module import PrevTokenModel

EPOCHS = 30


class TimedCheckpoint(ModelCheckpoint):
    spent: list[float] = []

    def on_validation_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_validation_end(trainer, pl_module)
        self.spent.append(time.perf_counter() - start)

    def on_train_epoch_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        self.spent.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for repeat in range(args.repeats):
        for name, io in (("in the loop", AtomicCheckpointIO), ("in the background", BackgroundCheckpointIO)):
            TimedCheckpoint.spent = []
            with tempfile.TemporaryDirectory() as scratch:
                trainer = L.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
                                    enable_model_summary=False, num_sanity_val_steps=0, plugins=[io()],
                                    callbacks=[CpuThreads(), TimedCheckpoint(dirpath=scratch, **CHECKPOINT_DEFAULTS)])
                trainer.fit(PrevTokenModel(), PrevTokenData(batch_size=8, steps_per_epoch=10))
            per_epoch = sum(TimedCheckpoint.spent) / EPOCHS * 1000
            print(f"repeat {repeat + 1}: checkpoints written {name:<17} {per_epoch:5.1f} ms an epoch in the loop",
                  flush=True)


if __name__ == "__main__":
    main()
