"""What analyses beside a Python-bound training loop cost it, in a thread of its process or in a process of their own.
    python scripts/analysis_gil.py [--batch_size 8] [--seconds 6] [--repeats 2]
A plain training loop (the bench's baseline) at a small batch, so that each step is bound by Python as a GPU step
is, runs alone, then beside the default plugins analysing an 8-sequence probe without pause in a thread, then in a
spawned process; in turn, `repeats` times. Prints steps/s for each (one torch thread for each side)."""

import argparse
import multiprocessing
import threading
import time

import torch

from prevpos.analysis.probe import ProbeRun, analysis_mode
from prevpos.bench.baseline import PlainTraining
from prevpos.bench.runs import default_plugins
from prevpos.sequences import probe_tokens
from prevpos.transformer import build_transformer


def analyse_until(stop) -> None:
    torch.set_num_threads(1)
    model = build_transformer().eval().requires_grad_(False)
    plugins, tokens = default_plugins(), probe_tokens(8, 10, 101, 100, 1234)
    while not stop.is_set():
        run = ProbeRun(model, tokens)
        with analysis_mode(model):
            for plugin in plugins:
                plugin.analyze_checked(run)


def steps_per_second(batch_size: int, seconds: float) -> float:
    training = PlainTraining(torch.device("cpu"), 3e-3, 10**6)
    for _ in range(20):
        training.step(batch_size)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        training.step(batch_size)
        steps += 1
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spawn = multiprocessing.get_context("spawn")
    for repeat in range(args.repeats):
        for beside in ("nothing", "a thread", "a process"):
            if beside == "a thread":
                stop = threading.Event()
                other = threading.Thread(target=analyse_until, args=(stop,))
            elif beside == "a process":
                stop = spawn.Event()
                other = spawn.Process(target=analyse_until, args=(stop,))
            if beside != "nothing":
                other.start()
                time.sleep(1 if beside == "a thread" else 20)  # the process imports TransformerLens first
            rate = steps_per_second(args.batch_size, args.seconds)
            if beside != "nothing":
                stop.set()
                other.join()
            label = "the loop alone" if beside == "nothing" else f"beside analyses in {beside}"
            print(f"repeat {repeat + 1}: {label:<32} {rate:7.1f} steps/s", flush=True)


if __name__ == "__main__":
    main()
