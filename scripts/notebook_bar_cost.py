"""What the progress bar costs a fit run in a real Jupyter kernel: fit's default bar against Lightning's
RichProgressBar (which redraws at every batch there), alternating in one kernel after a warm-up fit.
nbclient executes the notebook as a browser would, receiving every display update over ZMQ; the browser's own
drawing is not included. Needs `pip install nbclient ipykernel ipywidgets` (Rich draws its bar in Jupyter through
ipywidgets; without them it draws nothing and neither bar costs anything).
    python scripts/notebook_bar_cost.py [--repeats 3] [fit options; default: 600 steps at batch 8, no plugins]"""

import argparse
import re
import tempfile

import nbformat
from nbclient import NotebookClient

DEFAULT_FIT = ["--trainer.max_epochs=60", "--data.batch_size=8", "--trainer.callbacks=[]",
               "--trainer.enable_model_summary=false"]
BARS = {"fit's default": [], "Lightning's RichProgressBar": ["--trainer.callbacks+=RichProgressBar"]}


def timed_fit_cell(label: str, args: list[str]) -> str:
    return (f"start = time.perf_counter(); main({['fit', *args]!r}); "
            f"print('RESULT', {label!r}, round(time.perf_counter() - start, 2))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args, fit_args = parser.parse_known_args()
    fit_args = fit_args or DEFAULT_FIT
    cells = ["import time\nfrom prevpos.cli import main",
             f"main({['fit', *fit_args, '--trainer.max_epochs=2']!r})"]  # warm-up: imports, first kernels
    for _ in range(args.repeats):
        cells += [timed_fit_cell(label, fit_args + extra) for label, extra in BARS.items()]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    with tempfile.TemporaryDirectory() as scratch:
        NotebookClient(notebook, timeout=1800, kernel_name="python3").execute(cwd=scratch)
    times: dict[str, list[float]] = {label: [] for label in BARS}
    for cell in notebook.cells:
        for output in cell.outputs:
            for label, seconds in re.findall(r"RESULT (.+) ([\d.]+)$", output.get("text", ""), re.M):
                times[label].append(float(seconds))
    for label, seconds in times.items():
        print(f"{label:30s} fit wall time (s): {', '.join(f'{s:.1f}' for s in seconds)}")


if __name__ == "__main__":
    main()
