"""One benchmark run of each kind: (a) the plain loop, (b) fit, (c) fit with the default plugins, (d) the fast path,
(e) the fast path with the default plugins."""

import importlib
from argparse import Namespace

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.bench.baseline import plain_loop
from prevpos.bench.run_kinds import FAST_RUNS, PLUGIN_RUNS
from prevpos.bench.timing import SpeedCallback, SpeedMeter, now, peak_memory_mib, reset_peak_memory
from prevpos.checkpoints import AtomicCheckpointIO, RunCheckpoint
from prevpos.data import PrevTokenData
from prevpos.fast.threads import CpuThreads, cpu_threads_for_training
from prevpos.fast.training import FastStep
from prevpos.guards import StopOnDivergence
from prevpos.lightning_cli import BUILTIN_PLUGINS, CHECKPOINT_DEFAULTS, GUARD, TRAINER_DEFAULTS
from prevpos.module import PrevTokenModel
from prevpos.quiet import lightning_info_off


def run_one(kind: str, args: Namespace, device: torch.device, scratch: str) -> dict:
    meter = SpeedMeter(device, warmup_epochs=1, target=args.target)
    reset_peak_memory(device)
    if kind == "a":
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads_for_training())  # what CpuThreads does for fit
        start = now(device)
        try:
            plain_loop(device, args.steps, args.steps_per_epoch, args.batch_size, args.lr, meter, args.warmup_steps)
        finally:
            torch.set_num_threads(threads)
        extra = {"train_s": now(device) - start, "val_acc": meter.last_accuracy}
    else:
        extra = fit(kind, args, device, scratch, meter)
    return {**meter.result(), **extra, "peak_mib": peak_memory_mib(device)}


def default_plugins() -> list:
    plugins = []
    for path in BUILTIN_PLUGINS:
        module, name = path.rsplit(".", 1)
        plugins.append(getattr(importlib.import_module(module), name)())
    return plugins


def fit(kind: str, args: Namespace, device: torch.device, scratch: str, meter: SpeedMeter) -> dict:
    """A fit with `python -m prevpos fit`'s trainer defaults, divergence guard, checkpoints and TensorBoard, built
    without the CLI: no progress bar, dashboard or run lock."""
    fast = kind in FAST_RUNS
    k = args.steps_per_call if fast else 1
    module = PrevTokenModel(lr=args.lr, warmup_steps=args.warmup_steps, fast=FastStep() if fast else None)
    data = PrevTokenData(batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch // k, batches_per_step=k)
    timer = Timer()
    plugins = default_plugins() if kind in PLUGIN_RUNS else []
    # SpeedCallback and Timer after the plugins: their on_train_end runs once the plugins have drained their figures.
    callbacks = [CpuThreads(), StopOnDivergence(**GUARD), *plugins, SpeedCallback(meter),
                 RunCheckpoint(dirpath=f"{scratch}/checkpoints", **CHECKPOINT_DEFAULTS), timer]
    with lightning_info_off():  # its four lines per fit ("GPU available", ...) would bury the table
        trainer = L.Trainer(
            accelerator=device.type, devices=1, max_epochs=args.steps // args.steps_per_epoch, callbacks=callbacks,
            logger=TensorBoardLogger(scratch, name="bench"),
            log_every_n_steps=1 if fast else TRAINER_DEFAULTS["log_every_n_steps"],  # fast: 1 Lightning step = K steps
            gradient_clip_val=None if fast else TRAINER_DEFAULTS["gradient_clip_val"],
            precision="32-true" if fast else args.precision, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=scratch, plugins=[AtomicCheckpointIO()])  # fit's checkpoints
        trainer.fit(module, data)
    return {"train_s": timer.time_elapsed("train"), "val_acc": float(trainer.callback_metrics["val/acc"]),
            "steps": trainer.global_step}
