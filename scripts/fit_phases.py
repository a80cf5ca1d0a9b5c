"""Where a fit command's time goes: start-up (imports, parsing), set-up, the steps, the validations, the work between
epochs (checkpoints, the plugins' hand-off), the end wait (and when the last analysis and figure were done), the exit.
    python scripts/fit_phases.py [--repeats 1] [fit options, e.g. --config experiments/gpu.yaml]
Runs `python -m prevpos fit [options]` in a scratch folder with PhaseClock (below) added to its callbacks, and prints
each phase's seconds (medians over the repeats). On a GPU the clock waits for the device at each boundary."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

PHASES = {
    "start-up": "launch to the CLI's callbacks (Python, imports, parsing)",
    "set-up": "to the first step (run folder, model summary, first batch)",
    "steps": "the training steps themselves",
    "validations": "every validation (the one at step 0 and the last included)",
    "between epochs": "outside steps and validations: checkpoints, the plugins' epoch-end work",
    "end wait": "last step to the end of training (the last analyses and figures)",
    "exit": "to the end of the process",
    "command": "launch to the end of the process",
}
# In the end wait (seconds after the last step, the last validation included): what the run waited for.
END_MARKS = {
    "last analysis": "the last plugin's analysis returned",
    "last figure": "the last figure was written",
}


class PhaseClock(Callback):
    """Wall-clock marks at Lightning's hooks, written as JSON to $PREVPOS_PHASES when training ends."""

    def __init__(self):
        self.marks = [("init", time.time())]
        watch_analyses_and_figures(self.marks)

    def _mark(self, name: str, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.marks.append((name, time.time()))

    def on_train_epoch_start(self, trainer, pl_module):
        self._mark("epoch_start", trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            self._mark("epoch_last_step", trainer)

    def on_validation_start(self, trainer, pl_module):
        self._mark("validation_start", trainer)

    def on_validation_end(self, trainer, pl_module):
        self._mark("validation_end", trainer)

    def on_train_end(self, trainer, pl_module):
        self._mark("train_end", trainer)
        Path(os.environ["PREVPOS_PHASES"]).write_text(json.dumps(self.marks))


def watch_analyses_and_figures(marks: list) -> None:
    """Add a mark when each analysis returns and each figure is written (wrapping prevpos's own methods: this
    script's business only)."""
    from prevpos.analysis.render import BackgroundRenderer
    from prevpos.analysis.session import AnalysisSession

    analyze, write = AnalysisSession._analyze, BackgroundRenderer._write

    def timed_analyze(self, *args, **kwargs):
        result = analyze(self, *args, **kwargs)
        marks.append(("analysis", time.time()))
        return result

    def timed_write(self, *args, **kwargs):
        write(self, *args, **kwargs)
        marks.append(("figure", time.time()))

    AnalysisSession._analyze, BackgroundRenderer._write = timed_analyze, timed_write


def phases(launch: float, marks: list, exit_time: float) -> dict:
    times = {}
    for name, at in marks:
        times.setdefault(name, []).append(at)
    first_step, last_step = times["epoch_start"][0], times["epoch_last_step"][-1]
    validations = list(zip(times.get("validation_start", []), times.get("validation_end", [])))

    def validating(begin: float, end: float) -> float:  # seconds of validation between two marks
        return sum(stop - start for start, stop in validations if begin <= start < end)

    in_epochs = sum(end - start for start, end in zip(times["epoch_start"], times["epoch_last_step"]))
    end = times["train_end"][0]
    return {"start-up": times["init"][0] - launch,
            "set-up": first_step - times["init"][0] - validating(times["init"][0], first_step),
            "steps": in_epochs, "validations": validating(launch, exit_time),
            "between epochs": last_step - first_step - in_epochs - validating(first_step, last_step),
            "end wait": end - last_step - validating(last_step, end), "exit": exit_time - end,
            "command": exit_time - launch,
            "last analysis": max(times.get("analysis", [last_step])) - last_step,
            "last figure": max(times.get("figure", [last_step])) - last_step,
            "first analysis": min(times.get("analysis", [first_step])) - first_step,
            "figures": len(times.get("figure", [])),
            "figures after the last step": sum(at > last_step for at in times.get("figure", []))}


def one_fit(fit_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="prevpos-phases-") as scratch:
        env = {**os.environ, "PREVPOS_PHASES": f"{scratch}/phases.json",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        launch = time.time()
        result = subprocess.run([sys.executable, "-m", "prevpos", "fit", *fit_args,
                                 "--trainer.callbacks+=fit_phases.PhaseClock", "--trainer.enable_progress_bar=false"],
                                cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        exit_time = time.time()
        if result.returncode:
            raise SystemExit(f"fit failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        return phases(launch, json.loads(Path(f"{scratch}/phases.json").read_text()), exit_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args, fit_args = parser.parse_known_args()
    fit_args = [os.path.abspath(a) if os.path.isfile(a) else a for a in fit_args]  # the fit runs in a scratch dir
    runs = [one_fit(fit_args) for _ in range(args.repeats)]
    commands = ", ".join(f"{run['command']:.1f}" for run in runs)
    print(f"fit {' '.join(fit_args) or '(the default experiment)'}: seconds, median of {len(runs)} "
          f"(commands: {commands})")
    for name, what in PHASES.items():
        print(f"  {name:<15}{statistics.median(r[name] for r in runs):8.2f}  {what}")
    print("  in the end wait, seconds after the last step (the last validation included):")
    for name, what in END_MARKS.items():
        print(f"    {name:<13}{statistics.median(r[name] for r in runs):8.2f}  {what}")
    print(f"  figures written: {statistics.median(r['figures'] for r in runs):.0f}, of which after the last step: "
          f"{statistics.median(r['figures after the last step'] for r in runs):.0f}; the first analysis returned "
          f"{statistics.median(r['first analysis'] for r in runs):.2f} s after the first step (the analysis "
          "process's start-up shows here)")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
