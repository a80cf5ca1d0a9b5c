"""What each piece of `fit` costs per training step: the plain loop, then Lightning around the same model with one
thing added at a time, up to bench's (b). Alternating runs on one machine; steady ms per step (after one epoch).
    python scripts/step_ladder.py [--steps 400] [--repeats 2] [--batch_size 256]   (a GPU picks itself)
    python scripts/step_ladder.py --profile b    (cProfile of one more run of that rung: the top functions)
    python scripts/step_ladder.py --syncs        (CUDA only: where (b)'s steps read the GPU on the host)
On a GPU an eager step of this model is bound by Python (docs/speed.md), so every rung's Python shows in its time."""

import argparse
import cProfile
import inspect
import collections
import io
import pstats
import statistics
import tempfile
import traceback
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.bench import runs
from prevpos.bench.baseline import PlainTraining, plain_loop
from prevpos.bench.timing import SpeedCallback, SpeedMeter
from prevpos.data import PrevTokenData
from prevpos.lightning_cli import TRAINER_DEFAULTS
from prevpos.loss import previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.quiet import lightning_info_off

WARMUP = inspect.signature(PrevTokenModel.__init__).parameters["warmup_steps"].default
RUNGS = ["a", "lightning", "+ schedule", "+ clipping", "+ logging", "b", "b, train/loss only", "b, no guard"]
RUNG_HELP = {"a": "bench's plain loop", "lightning": "Lightning's loop, the same model and AdamW; nothing else",
             "+ schedule": "... and the warm-up + cosine lr schedule, stepped every step",
             "+ clipping": "... and trainer.gradient_clip_val", "+ logging": "... and train/loss to TensorBoard every "
             "log_every_n_steps", "b": "bench's (b): prevpos's module, guard, checkpoints, train/acc and train/lr",
             "b, train/loss only": "(b) logging neither train/acc nor train/lr",
             "b, no guard": "(b) without StopOnDivergence (its host read of the loss every 5 steps)"}
LOG_TRAINING_STEP, GUARD = PrevTokenModel.log_training_step, runs.StopOnDivergence


def log_loss_only(self, loss, logits, tokens, lr=None):
    if self.trainer._logger_connector.should_update_logs:
        self.log("train/loss", loss, sync_dist=True)


class Bare(L.LightningModule):
    """The plain loop's model, optimizer (and schedule) under Lightning's automatic optimization."""

    def __init__(self, device: torch.device, lr: float, steps: int, schedule: bool, log: bool):
        super().__init__()
        self.plain = PlainTraining(device, lr, steps)  # the same init, AdamW and schedule as (a)
        self.model = self.plain.model
        self.schedule, self.log_loss = schedule, log

    def training_step(self, tokens: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = previous_token_loss(self.model(tokens), tokens)
        if self.log_loss and self.trainer._logger_connector.should_update_logs:
            self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        if not self.schedule:
            return self.plain.optimizer
        return {"optimizer": self.plain.optimizer, "lr_scheduler": {"scheduler": self.plain.schedule,
                                                                    "interval": "step"}}


def run_rung(rung: str, args, device: torch.device, scratch: str) -> float:
    """Steady ms per training step of one run of `rung`."""
    meter = SpeedMeter(device, warmup_epochs=1)
    if rung == "a":
        plain_loop(device, args.steps, args.steps_per_epoch, args.batch_size, args.lr, meter)
    elif rung.startswith("b"):
        PrevTokenModel.log_training_step = log_loss_only if "loss only" in rung else LOG_TRAINING_STEP
        runs.StopOnDivergence = (lambda **_: L.Callback()) if "no guard" in rung else GUARD
        bench_args = argparse.Namespace(steps=args.steps, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
                                        batch_size=args.batch_size, warmup_steps=WARMUP, target=0.99, steps_per_call=1,
                                        precision="32-true")
        try:
            runs.fit("b", bench_args, device, scratch, meter)
        finally:
            PrevTokenModel.log_training_step, runs.StopOnDivergence = LOG_TRAINING_STEP, GUARD
    else:
        index = RUNGS.index(rung)
        module = Bare(device, args.lr, args.steps, schedule=index >= 2, log=index >= 4)
        data = PrevTokenData(batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch)
        with lightning_info_off():
            trainer = L.Trainer(
                accelerator=device.type, devices=1, max_epochs=args.steps // args.steps_per_epoch,
                callbacks=[SpeedCallback(meter)], enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=scratch,
                logger=TensorBoardLogger(scratch, name="ladder") if index >= 4 else False,
                log_every_n_steps=TRAINER_DEFAULTS["log_every_n_steps"],
                gradient_clip_val=TRAINER_DEFAULTS["gradient_clip_val"] if index >= 3 else None)
            trainer.fit(module, data)
    return 1000 / meter.result()["steps_per_s"]


def profile(rung: str, args, device: torch.device, scratch: str) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_rung(rung, args, device, scratch)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
    print(f"cProfile of one run of {rung!r}, {args.steps} steps, by own time:")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])


def count_syncs(args, device: torch.device, scratch: str) -> None:
    """Run (b) with torch's CUDA sync debug mode on and count the host reads by where our or Lightning's code
    asked for them (the innermost frame outside torch)."""
    places = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        # torch's own frames only: "/torch/" alone also matched an image's /opt/torch/.venv, hiding Lightning's
        frames = [f for f in traceback.extract_stack()[:-1] if "site-packages/torch/" not in f.filename and
                  "warnings" not in f.filename]
        innermost = frames[-3:][::-1]
        places[" <- ".join(f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}" for f in innermost)] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_rung("b", args, device, scratch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print(f"host reads of the GPU in one (b) run of {args.steps} steps (validation and checkpoints included):")
    for place, count in places.most_common(args.top):
        print(f"{count:6d}  {place}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--steps_per_epoch", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rungs", nargs="+", choices=RUNGS, default=RUNGS, metavar="RUNG",
                        help="; ".join(f"{name!r}: {text}" for name, text in RUNG_HELP.items()))
    parser.add_argument("--profile", choices=RUNGS, nargs="*", default=[], help="rungs to profile after the ladder")
    parser.add_argument("--syncs", action="store_true", help="count (b)'s host reads (CUDA)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as fit (CpuThreads) and bench's (a)
    times = {rung: [] for rung in args.rungs}
    with tempfile.TemporaryDirectory(prefix="prevpos-ladder-") as scratch:
        run_rung(args.rungs[0], args, device, f"{scratch}/warm-up")  # CUDA's and the allocator's first-run costs
        for repeat in range(args.repeats):
            for number, rung in enumerate(args.rungs):
                times[rung].append(run_rung(rung, args, device, f"{scratch}/{repeat}-{number}"))
                print(f"repeat {repeat + 1}: {rung:<12} {times[rung][-1]:6.3f} ms/step", flush=True)
        where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, 1 thread"
        print(f"medians of {args.repeats} on {where}, batch {args.batch_size}, {args.steps} steps:")
        first = statistics.median(times[args.rungs[0]])
        for rung in args.rungs:
            ms = statistics.median(times[rung])
            print(f"{rung:<12} {ms:6.3f} ms/step  {1000 / ms:7.1f} steps/s  {first / ms:.3f} of {args.rungs[0]}'s "
                  f"speed  (per repeat {', '.join(f'{t:.3f}' for t in times[rung])})")
        for rung in args.profile:
            profile(rung, args, device, f"{scratch}/profile-{rung}")
        if args.syncs and device.type == "cuda":
            count_syncs(args, device, f"{scratch}/syncs")


if __name__ == "__main__":
    main()
