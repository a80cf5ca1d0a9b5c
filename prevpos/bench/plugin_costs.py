"""`python -m prevpos.bench.plugin_costs [cpu|cuda] [PROBE_SIZE]`: what one analysis step costs, plugin by plugin.

Prints each default plugin's analyze() time (device-synced, on the untrained model) and the CPU time of its thread,
and the CPU time to draw its figures: the costs that decide how often the plugins can run without slowing fit.
With a tiny probe (e.g. 8) the arithmetic is negligible and the thread time is the Python an analysis costs,
which is what slows a GPU run's training thread (they share the GIL).
"""

import sys
import time

import torch

from prevpos.analysis.probe import ProbeRun, analysis_mode
from prevpos.bench.runs import default_plugins
from prevpos.bench.timing import now
from prevpos.data import PrevTokenData
from prevpos.module import PrevTokenModel
from prevpos.workers.png import render_png


def main(device_name: str = "cpu", probe_size: str = "256") -> None:
    device = torch.device(device_name)
    model = PrevTokenModel().to(device).model
    run = ProbeRun(model, PrevTokenData(probe_size=int(probe_size)).probe_tokens().to(device))
    start = now(device)
    with analysis_mode(model):
        _ = run.cache
    print(f"probe of {probe_size}, run_with_cache: {now(device) - start:.3f} s")
    for plugin in default_plugins():
        for attempt in range(2):  # the second is the steady cost (the first pays one-off set-up)
            start, thread_start = now(device), time.thread_time()
            with analysis_mode(model):
                findings = plugin.analyze(run)
            analyze, thread = now(device) - start, time.thread_time() - thread_start
        for attempt in range(2):  # the second is the steady cost (the first loads fonts and colour maps)
            start = time.perf_counter()
            for spec in findings.figures.values():
                render_png(spec.render, spec.data)
        print(f"{type(plugin).__name__:<24} analyze {analyze:6.3f} s (thread CPU {thread:6.3f} s)   "
              f"{len(findings.figures)} figures drawn in {time.perf_counter() - start:6.3f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
