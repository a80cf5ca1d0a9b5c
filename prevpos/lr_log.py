"""The learning rate as a training curve, `train/lr`: the cosine decays over the run's own length, so at a given step
a longer run's lr is not the default run's."""

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor

LR_TAG = "train/lr"  # the scheduler's name (PrevTokenModel.configure_optimizers), which Lightning logs it under


class LearningRateLog(LearningRateMonitor):
    """Lightning's LearningRateMonitor at the training curves' steps (every log_every_n_steps), as `train/lr`. A run
    without a logger logs nothing (Lightning's callback refuses to start there)."""

    def __init__(self):
        super().__init__(logging_interval="step")

    def on_train_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)
