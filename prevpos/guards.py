"""Stop a diverged run before a non-finite model can overwrite the last good checkpoint; say when a run collapses."""

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from prevpos.errors import DivergenceError
from prevpos.notices import warn


class StopOnDivergence(Callback):
    """Raise DivergenceError as soon as the training loss or a weight is not finite.

    The loss is checked every `check_every_n_steps` steps. The weights are checked at validation end and at
    train epoch end, which run before ModelCheckpoint saves (Lightning puts checkpoint callbacks last): a step
    with a finite loss can still write NaN weights (an inf gradient), and those must never become `last.ckpt`.

    Args:
        check_every_n_steps: Check the training loss every N steps.
    """

    def __init__(self, check_every_n_steps: int = 1):
        self.check_every_n_steps = check_every_n_steps
        self._last_loss = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check_loss(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._check_loss(trainer)
        self._check_weights(trainer, pl_module)

    def _check_loss(self, trainer: L.Trainer) -> None:
        if self._last_loss is not None and not math.isfinite(float(self._last_loss)):
            self._stop(trainer, f"training loss became {float(self._last_loss)}")

    def _check_weights(self, trainer: L.Trainer, pl_module) -> None:
        names, params = zip(*pl_module.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for p in params])
        if not finite.all():  # one host read (a GPU sync) for all the weights, not one per weight
            self._stop(trainer, f"weight {names[int(finite.logical_not().nonzero()[0])]} became non-finite")

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        raise DivergenceError(f"{what} at step {trainer.global_step}: lower model.lr (e.g. 3e-3) or "
                              f"clip harder (trainer.gradient_clip_val); the last good checkpoint is kept in {_checkpoint_dir(trainer)}")


def _checkpoint_dir(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    return str(callback.dirpath) if callback is not None and callback.dirpath else "the run's checkpoints/ folder"


class WarnOnCollapse(Callback):
    """Warn once if val/acc, having reached `learned`, falls below `below` of its best: a collapse, which stays finite
    and which StopOnDivergence therefore does not see (lr 1e-2 held without decay: loss ~20, acc 0.10 at ~2,400
    steps, docs/science.md). Not the transient dips gpu.yaml's recipe recovers from (0.99 to 0.64 at the deepest
    measured, README). The run goes on: the best checkpoint is kept, and the user decides.
    """

    def __init__(self, learned: float = 0.9, below: float = 0.5):
        self.learned, self.below = learned, below
        self._best: tuple[float, int] | None = None  # (val/acc, step) at its highest
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None or self._warned:
            return
        acc = float(acc)  # on the host already: the progress bar reads it at every validation
        if self._best is None or acc > self._best[0]:
            self._best = (acc, trainer.global_step)
        best, at = self._best
        if best >= self.learned and acc < self.below * best:
            self._warned = True
            warn(f"val/acc fell from {best:.3f} (step {at}) to {acc:.3f} at step {trainer.global_step}: the run may "
                 "have collapsed, as a constant lr of 1e-2 does (docs/science.md). The best checkpoint is kept "
                 "(checkpoint.monitor val/acc); lower model.lr, or let the lr decay (a trainer.max_epochs, not -1)")

    def state_dict(self) -> dict:
        return {"best": self._best, "warned": self._warned}

    def load_state_dict(self, state_dict: dict) -> None:
        self._best, self._warned = state_dict.get("best"), state_dict.get("warned", False)
