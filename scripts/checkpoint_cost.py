"""What fit's checkpoints cost: none, Lightning's ModelCheckpoint, or fit's RunCheckpoint, all written atomically.
    python scripts/checkpoint_cost.py [--repeats 3] [--batch_size 8]
A 30-epoch fit (10 steps an epoch) with fit's checkpoint settings, runs alternating. Per run: the checkpoint hooks'
time per epoch, the steps/s of the training steps alone (bench's measure) and the whole fit's wall time.
ModelCheckpoint serialises twice at an epoch that improves val/acc and not at all at one that does not (its
last.ckpt then falls behind); RunCheckpoint serialises once an epoch (prevpos/checkpoints.py)."""

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from prevpos.bench.timing import SpeedCallback, SpeedMeter
from prevpos.checkpoints import AtomicCheckpointIO, RunCheckpoint
from prevpos.data import PrevTokenData
from prevpos.fast.threads import CpuThreads
from prevpos.lightning_cli import CHECKPOINT_DEFAULTS
from prevpos.module import PrevTokenModel

EPOCHS = 30
SPENT: list[float] = []


class Timed:
    """Times the two epoch-end hooks of the checkpoint callback it is mixed into."""

    def on_validation_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_validation_end(trainer, pl_module)
        SPENT.append(time.perf_counter() - start)

    def on_train_epoch_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        SPENT.append(time.perf_counter() - start)


WAYS = {"no checkpoints": None, "ModelCheckpoint": type("Timed", (Timed, ModelCheckpoint), {}),
        "RunCheckpoint (fit's)": type("Timed", (Timed, RunCheckpoint), {})}


def one_fit(checkpoint, batch_size: int, scratch: str) -> tuple[float, float, float]:
    """(hook ms an epoch, steps/s, fit seconds)."""
    SPENT.clear()
    meter = SpeedMeter(torch.device("cpu"))
    callbacks = [CpuThreads(), SpeedCallback(meter)]
    if checkpoint is not None:
        callbacks.append(checkpoint(dirpath=scratch, **CHECKPOINT_DEFAULTS))
    trainer = L.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=checkpoint is not None,
                        plugins=[AtomicCheckpointIO()], callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(PrevTokenModel(), PrevTokenData(batch_size=batch_size, steps_per_epoch=10))
    return sum(SPENT) / EPOCHS * 1000, meter.result()["steps_per_s"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args()
    results = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way, checkpoint in WAYS.items():
            with tempfile.TemporaryDirectory() as scratch:
                results[way].append(one_fit(checkpoint, args.batch_size, scratch))
            hooks, rate, wall = results[way][-1]
            print(f"repeat {repeat + 1}: {way:<22} hooks {hooks:5.1f} ms an epoch  steps {rate:6.1f}/s  "
                  f"fit {wall:5.2f} s", flush=True)
    print(f"medians of {args.repeats}, batch {args.batch_size}, {EPOCHS} epochs of 10 steps:")
    for way, rows in results.items():
        hooks, rate, wall = (statistics.median(column) for column in zip(*rows))
        print(f"{way:<22} hooks {hooks:5.1f} ms an epoch  steps {rate:6.1f}/s  fit {wall:5.2f} s")


if __name__ == "__main__":
    main()
