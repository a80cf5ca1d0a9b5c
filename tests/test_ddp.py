"""`fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu` (gloo): different batches per rank,
metrics reduced across ranks, plugins on rank 0 only, one TensorBoard run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).parents[1]


class _RankRecorder(Callback):
    """Each rank writes what it saw: its batches' first rows and its own (unreduced) losses, by step."""

    def __init__(self):
        self.seen: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen[trainer.global_step - 1] = {"first_row": batch[0].tolist(), "loss": float(outputs["loss"])}

    def on_train_end(self, trainer, pl_module) -> None:
        out = Path(os.environ["PREVPOS_DDP_RECORD"], f"rank{trainer.global_rank}.json")
        out.write_text(json.dumps({"world_size": trainer.world_size, "seen": self.seen}))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """~40-60 s on 2 cores (two processes each import TransformerLens). Run: pytest -m slow tests/test_ddp.py"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREVPOS_DDP_RECORD": str(tmp_path), "PREVPOS_RENDER": "inline",
           "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, "-m", "prevpos", "fit", "--trainer.strategy=ddp", "--trainer.devices=2",
            "--trainer.accelerator=cpu", "--trainer.max_epochs=2", "--data.steps_per_epoch=3", "--data.batch_size=32",
            "--data.val_size=64", "--data.probe_size=32", "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false", f"--trainer.callbacks=[{{class_path: AttentionPatterns, init_args: {{figure_every_n_epochs: 1}}}}, "
            f"{__name__}._RankRecorder]"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Grad strides do not match bucket view strides" not in result.stderr  # 3 lines per rank, harmless
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    steps = sorted(ranks[0]["seen"], key=int)
    assert len(steps) == 6 and sorted(ranks[1]["seen"], key=int) == steps

    # Each rank draws its own batches (seed + 1000 * rank).
    assert all(ranks[0]["seen"][s]["first_row"] != ranks[1]["seen"][s]["first_row"] for s in steps)

    # One run: one version directory, one event file (rank 0 logs), every plugin image once per analysed step.
    run_dirs = list((tmp_path / "lightning_logs" / "default").iterdir())
    assert [d.name for d in run_dirs] == ["version_0"] and len(list(run_dirs[0].glob("events.out.*"))) == 1
    events = EventAccumulator(str(run_dirs[0]), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Images("attention/mean_pattern/L1H0")] == [0, 3, 6]

    # train/loss is the mean over both ranks' batches, not rank 0's alone.
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    local = {int(s): [r["seen"][s]["loss"] for r in ranks] for s in steps}
    assert sorted(logged) == sorted(local)
    for step, (loss0, loss1) in local.items():
        assert logged[step] == pytest.approx((loss0 + loss1) / 2, rel=1e-5)
    assert max(abs(logged[s] - local[s][0]) for s in local) > 1e-4
