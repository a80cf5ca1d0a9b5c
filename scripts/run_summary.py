"""What a finished run's TensorBoard events say about training: when val/acc first reached 0.99, whether it held.
    python scripts/run_summary.py lightning_logs/NAME/version_0
Used by scripts/gpu_check.sh for the 10x-length stability run (a collapse shows as val/acc falling back after 0.99)."""

import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run_dir = sys.argv[1]
# The run's folder, not one event file: a resumed run has one per session, which TensorBoard's reader merges.
events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "images": 0}).Reload()
val = [(e.step, e.value) for e in events.Scalars("val/acc")]
late = val[-1][0] // 10
losses = [e.value for e in events.Scalars("train/loss") if e.step > late] if "train/loss" in events.Tags()["scalars"] else []
first = next((step for step, acc in val if acc >= 0.99), None)
after = [acc for step, acc in val if first is not None and step >= first]
lowest = f"{min(after):.4f}" if after else "-"
print(f"{len(val)} validations to step {val[-1][0]}: val/acc first >= 0.99 at step {first}, lowest after that {lowest}, "
      f"final {val[-1][1]:.4f}; largest train/loss after step {late}: {f'{max(losses):.4f}' if losses else '-'}")
print("val/acc every tenth validation:", [(step, round(acc, 4)) for step, acc in val[::max(len(val) // 10, 1)]])
