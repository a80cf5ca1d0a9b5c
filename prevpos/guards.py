"""Stop a diverged run before a non-finite model can overwrite the last good checkpoint."""

import math

import lightning as L
from lightning.pytorch.callbacks import Callback

from prevpos.errors import DivergenceError


class StopOnDivergence(Callback):
    """Raise DivergenceError as soon as the training loss is not finite.

    Checked every `check_every_n_steps` steps and always at epoch end, which runs before ModelCheckpoint saves
    (Lightning runs checkpoint callbacks last), so a NaN model never becomes `last.ckpt`.
    """

    def __init__(self, check_every_n_steps: int = 1):
        self.check_every_n_steps = check_every_n_steps
        self._last_loss = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._last_loss is None:
            return
        loss = float(self._last_loss)
        if not math.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss} at step {trainer.global_step}: lower model.lr or raise "
                f"trainer.gradient_clip_val; the last good checkpoint is kept in {_checkpoint_dir(trainer)}")


def _checkpoint_dir(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    return str(callback.dirpath) if callback is not None and callback.dirpath else "the run's checkpoints/ folder"
