"""`python -m prevpos bench`: training speed of a plain PyTorch loop, of fit, of fit with the plugins, of the fast path
with and without them."""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from prevpos.bench.run_kinds import FAST_RUNS, PLUGIN_RUNS, RUNS
from prevpos.commands.one_line import OneLineParser
from prevpos.errors import ConfigError

METRICS = ("steps_per_s", "time_to_target_s", "steps_to_target", "train_s", "end_s", "peak_mib", "val_acc")


# Lightning's precisions that time a different recipe here (16-true is refused with its reason, as fit refuses it).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m prevpos bench", description=__doc__.split(": ", 1)[1])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run (default 600)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind; the table shows medians")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (model.lr)")
    parser.add_argument("--warmup_steps", type=int, default=20, help="linear warm-up steps (model.warmup_steps)")
    parser.add_argument("--steps_per_epoch", type=int, default=10, help="validation (and analyses) every N steps")
    parser.add_argument("--steps_per_call", type=int, default=10, help="fast path: optimizer steps per Lightning step")
    parser.add_argument("--precision", default="32-true", choices=PRECISIONS, help="trainer.precision for (b) and (c)")
    parser.add_argument("--target", type=float, default=0.99, help="validation accuracy to time")
    parser.add_argument("--runs", default="abcde", help="which runs, e.g. 'ab' (default all)")
    parser.add_argument("--out", help="a new JSON file for every number, or a directory to write it in (default "
                                      "bench.json, or bench_2.json, ... if that exists: bench never overwrites a file)")
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "batch_size", "steps_per_epoch", "steps_per_call"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: must be at least 1")
    if args.warmup_steps < 0:
        parser.error(f"--warmup_steps={args.warmup_steps}: must be at least 0")
    if not 0 < args.lr < float("inf"):
        parser.error(f"--lr={args.lr}: the learning rate must be a positive number")
    if not 0 < args.target <= 1:
        parser.error(f"--target={args.target}: a validation accuracy, in (0, 1]")
    if args.steps < 2 * args.steps_per_epoch or args.steps % args.steps_per_epoch:
        parser.error(f"--steps={args.steps}: must be a multiple of --steps_per_epoch={args.steps_per_epoch}, "
                     "at least 2 epochs (the first is warm-up)")
    if set(FAST_RUNS) & set(args.runs) and args.steps_per_epoch % args.steps_per_call:
        parser.error(f"--steps_per_epoch={args.steps_per_epoch} must be a multiple of --steps_per_call")
    if not args.runs or set(args.runs) - set(RUNS):
        parser.error(f"--runs={args.runs!r}: use letters from {''.join(RUNS)}")
    return args


def output_file(out: str | None) -> Path:
    """Where the JSON goes, decided before minutes of runs: a new file, never one that exists, in a place bench can
    write. In a directory (the working one by default) that is bench.json, or bench_2.json, ... if that exists."""
    folder = Path(".")
    if out is not None:
        path = Path(out)
        if not (path.is_dir() or out.endswith(("/", os.sep))):
            if path.exists():
                raise ConfigError(f"--out {out}: exists, and bench never overwrites a file; pass a new name")
            if not path.parent.is_dir():
                raise ConfigError(f"--out {out}: the directory {path.parent} does not exist")
            return writable(path, out)
        if not path.is_dir():
            raise ConfigError(f"--out {out}: the directory does not exist; create it first")
        folder = path
    path, n = folder / "bench.json", 2
    while path.exists():
        path, n = folder / f"bench_{n}.json", n + 1
    return writable(path, out or ".")


def writable(path: Path, given: str) -> Path:
    """Create the file and remove it again: no permission, a read-only disk or a folder like /proc is then one line
    now, not a traceback after the runs (their table printed, their numbers lost)."""
    try:
        path.open("x").close()
    except OSError as error:
        raise ConfigError(f"--out {given}: cannot create {path} ({error.strerror}); pass a folder you can write to") \
            from None
    path.unlink()
    return path


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch here (use --device cpu or auto)")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def describe(device: torch.device) -> str:
    from prevpos.fast.threads import cpu_threads_for_training

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{cpu_threads_for_training()} torch threads for training)")


def main(argv: list[str]) -> None:
    args = parse(argv)
    device = pick_device(args.device)
    skipped = {key: "needs a CUDA GPU (on a CPU the same code runs eagerly; tests/test_fast_path.py checks it)"
               for key in FAST_RUNS if key in args.runs and device.type != "cuda"}
    if not set(args.runs) - set(skipped):
        on_cpu = "".join(key for key in RUNS if key not in FAST_RUNS)
        raise ConfigError(f"--runs={args.runs}: {', '.join(f'({key})' for key in skipped)} need a CUDA GPU, and "
                          f"there is none here: nothing to time (the runs {on_cpu} time on a CPU)")
    out = output_file(args.out)
    args.out = str(out)
    from prevpos.workers import analysis_process

    analysis_place = analysis_process.analysis_place(device.type)
    if set(PLUGIN_RUNS) & set(args.runs) and analysis_place == "process":
        analysis_process.prestart()  # as `fit` does: its imports overlap the next ones instead of delaying (c)
    from prevpos.bench.runs import run_one  # heavy imports (TransformerLens, Lightning) only once the args are fine

    runs = {key: [] for key in args.runs if key in RUNS and key not in skipped}
    with tempfile.TemporaryDirectory(prefix="prevpos-bench-") as scratch:
        for repeat in range(args.repeats):
            for key in runs:
                print(f"[bench] repeat {repeat + 1}/{args.repeats}: ({key}) {RUNS[key]} ...", file=sys.stderr, flush=True)
                runs[key].append(run_one(key, args, device, os.path.join(scratch, f"{key}{repeat}")))
    medians = {key: {m: _median([r[m] for r in results]) for m in METRICS} for key, results in runs.items()}
    report = {"device": describe(device), "torch": torch.__version__, "analysis_place": analysis_place,
              "args": vars(args), "runs": runs,
              "median": medians, "ratios": ratios(medians), "skipped": skipped}
    print(table(report))
    with open(out, "x") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {out}")


def _median(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None  # None: never reached the target


def ratios(medians: dict) -> dict:
    def ratio(top: str, bottom: str, metric: str) -> float | None:
        if top in medians and bottom in medians and medians[bottom][metric]:
            return medians[top][metric] / medians[bottom][metric]
        return None

    return {"b/a steps_per_s": ratio("b", "a", "steps_per_s"), "c/b train_s": ratio("c", "b", "train_s"),
            "d/b steps_per_s": ratio("d", "b", "steps_per_s"), "e/d train_s": ratio("e", "d", "train_s")}


def table(report: dict) -> str:
    args = report["args"]
    with_plugins = [f"({key})" for key in PLUGIN_RUNS if key in report["median"]]
    place = f"  {', '.join(with_plugins)}: analyses in a {report['analysis_place']}" if with_plugins else ""
    lines = [f"device: {report['device']}  torch {report['torch']}  batch {args['batch_size']}  lr {args['lr']}  "
             f"{args['steps']} steps  medians of {args['repeats']}{place}",
             f"{'run':<26}{'steps/s':>9}{'to ' + str(args['target']) + ' (s)':>13}{'(steps)':>9}{'train (s)':>11}"
             f"{'end (s)':>9}{'peak MiB':>10}{'val acc':>9}"]
    for key, m in report["median"].items():
        lines.append(f"({key}) {RUNS[key]:<22}" + "".join(_cell(m[name], width, decimals) for name, width, decimals in (
            ("steps_per_s", 9, 1), ("time_to_target_s", 13, 2), ("steps_to_target", 9, 0), ("train_s", 11, 2),
            ("end_s", 9, 2), ("peak_mib", 10, 0), ("val_acc", 9, 4))))
    for key, reason in report["skipped"].items():
        lines.append(f"({key}) {RUNS[key]}: skipped, {reason}")
    ratio_line = "  ".join(f"{name} = {v:.3f}" for name, v in report["ratios"].items() if v is not None)
    return "\n".join(lines + ([ratio_line] if ratio_line else []))


def _cell(value: float | None, width: int, decimals: int) -> str:
    return f"{'-' if value is None else f'{value:.{decimals}f}':>{width}}"  # "-": never reached, or unknown
