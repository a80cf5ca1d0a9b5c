"""StopOnDivergence: a diverging run stops with one line and its last checkpoint stays finite and loadable.
WarnOnCollapse: a run whose val/acc falls back to chance, finite all along, is said to have collapsed."""

import re
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from prevpos.cli import main
from prevpos.errors import DivergenceError
from prevpos.guards import StopOnDivergence, WarnOnCollapse
from prevpos.notices import PrevposWarning
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


def validated(guard: WarnOnCollapse, history: list[tuple[int, float]]) -> None:
    for step, acc in history:
        trainer = SimpleNamespace(callback_metrics={"val/acc": torch.tensor(acc)}, global_step=step,
                                  sanity_checking=False)
        guard.on_validation_end(trainer, None)


def test_a_collapse_is_said_once_and_a_dip_that_recovers_is_not(recwarn):
    """lr 1e-2 held without decay: val/acc 0.99, then 0.10 from step ~2,400, finite all along (docs/science.md);
    nothing said it. gpu.yaml's recipe dips to 0.64 after 0.99 and recovers: not a collapse."""
    validated(WarnOnCollapse(), [(100, 0.5), (300, 0.995), (1000, 0.64), (1100, 0.99)])  # gpu.yaml's deepest dip
    validated(WarnOnCollapse(), [(100, 0.3), (200, 0.45), (300, 0.2)])  # never learned: no_bos-like, early noise
    assert not [w for w in recwarn if issubclass(w.category, PrevposWarning)]
    guard = WarnOnCollapse()
    with pytest.warns(PrevposWarning) as warned:
        validated(guard, [(100, 0.5), (2300, 0.995), (2410, 0.102), (2500, 0.101)])
    assert [str(w.message) for w in warned] == [
        "val/acc fell from 0.995 (step 2300) to 0.102 at step 2410: the run may have collapsed, as a constant lr of "
        "1e-2 does (docs/science.md). The best checkpoint is kept (checkpoint.monitor val/acc); lower model.lr, or "
        "let the lr decay (a trainer.max_epochs, not -1)"]
    resumed = WarnOnCollapse()  # a resume keeps the best so far (and that it has been said)
    resumed.load_state_dict(guard.state_dict())
    with pytest.warns(PrevposWarning, match="fell from 0.995 .step 2300. to 0.100"):
        fresh = WarnOnCollapse()
        fresh.load_state_dict({"best": (0.995, 2300), "warned": False})
        validated(fresh, [(2600, 0.1)])
    recwarn.clear()
    validated(resumed, [(2600, 0.1)])
    assert not [w for w in recwarn if issubclass(w.category, PrevposWarning)]
