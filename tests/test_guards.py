"""StopOnDivergence: a diverging run stops with one line and its last checkpoint stays finite and loadable."""

import re
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from prevpos.cli import main
from prevpos.errors import DivergenceError
from prevpos.guards import StopOnDivergence
from prevpos.module import PrevTokenModel
from tests.conftest import build_data, quiet_trainer

TINY = ["--trainer.max_epochs=10", "--data.steps_per_epoch=4", "--data.batch_size=32", "--data.val_size=64",
        "--data.probe_size=16", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[]"]


def assert_finite_checkpoint(path, step: int) -> None:
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["global_step"] == step
    model = PrevTokenModel.load_from_checkpoint(path)  # loadable as a model
    assert all(torch.isfinite(p).all() for p in model.parameters())  # (buffers hold TransformerLens's -inf mask)


def test_lr_1e3_stops_with_one_line_and_keeps_the_last_good_checkpoint(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY, "--model.lr=1e3", "--trainer.gradient_clip_val=null"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    # The loss is checked every log_every_n_steps, the weights before every checkpoint: whichever sees it first.
    found = re.match(r"prevpos: error: (training loss|weight \S+) became (nan|non-finite) at step (\d+)", line)
    assert found, line
    assert "lower model.lr" in line
    checkpoints = in_tmp / "lightning_logs/default/version_0/checkpoints"
    assert str(checkpoints.relative_to(in_tmp)) in line
    # The epoch-end checkpoint (every 4 steps) before the step the guard caught it at (~7 with the unfused AdamW,
    # ~28 with the fused one: at lr 1e3 the loss is ~1e20 long before anything is non-finite).
    stopped_at = int(found.group(3))
    assert 4 < stopped_at < 40
    assert_finite_checkpoint(checkpoints / "last.ckpt", step=4 * ((stopped_at - 1) // 4))


class _PoisonLastStep(Callback):
    """Writes a NaN weight after the last step of epoch 1, while that step's loss was still finite."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                pl_module.model.W_E[0, 0] = float("nan")


def test_non_finite_weights_never_become_last_ckpt(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    trainer = quiet_trainer(max_epochs=3, callbacks=[StopOnDivergence(), _PoisonLastStep(), checkpoint],
                            enable_checkpointing=True)
    with pytest.raises(DivergenceError, match="weight model.embed.W_E became non-finite at step 6"):
        trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=3))
    assert_finite_checkpoint(tmp_path / "last.ckpt", step=3)
