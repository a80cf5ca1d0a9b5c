"""What the progress bar costs a fit watched in a terminal: fit's default bar (10 redraws a second) against
Lightning's (100), alternating, each fit's output on a pseudo-terminal so that the bar is really drawn.
    python scripts/bar_cost.py [--repeats 2] [fit options, e.g. --config experiments/gpu.yaml --trainer.callbacks=[]]
Per run: the command's wall time, and val acc's first 0.99 after the first logged train/loss (TensorBoard's
wall times)."""

import argparse
import fcntl
import glob
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

BARS = {"10 a second (fit's)": [], "100 a second (Lightning's)": ["--trainer.callbacks+=RichProgressBar"]}


def one_fit(fit_args: list[str], scratch: str) -> tuple[float, float | None]:
    """(command seconds, seconds from the first logged train/loss to val acc 0.99, or None if never)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "prevpos", "fit", *fit_args], cwd=scratch,
                               stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    while True:  # drain the terminal, as a terminal would
        try:
            if not os.read(leader, 65536):
                break
        except OSError:  # the child closed its end
            break
    process.wait()
    wall = time.perf_counter() - start
    os.close(leader)
    if process.returncode:
        raise SystemExit(f"fit failed (exit {process.returncode}) in {scratch}")
    events = EventAccumulator(glob.glob(f"{scratch}/lightning_logs/*/version_0/events*")[0],
                              size_guidance={"scalars": 0}).Reload()
    first = events.Scalars("train/loss")[0].wall_time
    reached = next((e.wall_time for e in events.Scalars("val/acc") if e.value >= 0.99), None)
    return wall, None if reached is None else reached - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args, fit_args = parser.parse_known_args()
    fit_args = [os.path.abspath(a) if os.path.isfile(a) else a for a in fit_args]  # fits run in scratch dirs
    results = {bar: [] for bar in BARS}
    for repeat in range(args.repeats):
        for bar, extra in BARS.items():
            with tempfile.TemporaryDirectory(prefix="prevpos-bar-") as scratch:
                results[bar].append(one_fit([*fit_args, *extra], scratch))
            wall, to_target = results[bar][-1]
            print(f"repeat {repeat + 1}: bar redrawn {bar:<27} command {wall:6.1f} s  0.99 after "
                  f"{'-' if to_target is None else f'{to_target:.2f} s'}", flush=True)
    for bar, rows in results.items():
        reached = [t for _, t in rows if t is not None]
        print(f"bar redrawn {bar:<27} command median {statistics.median(w for w, _ in rows):6.1f} s  0.99 after "
              f"median {statistics.median(reached) if reached else float('nan'):.2f} s")


if __name__ == "__main__":
    main()
