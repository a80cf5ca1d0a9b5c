"""fit's default progress bar: Lightning's Rich bar, redrawn 10 times a second rather than 100, naming the version."""

import sys
import time

from lightning.pytorch.callbacks import RichProgressBar

REDRAWS_PER_SECOND = 10
INTERACTIVE_REDRAWS_PER_SECOND = 2  # Jupyter, IPython, the Python prompt: each redraw runs on the training thread


def interactive() -> bool:
    """Lightning's own test for a Jupyter/IPython/REPL session, in which it redraws the bar at every batch."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive)


class RunProgressBar(RichProgressBar):
    """Lightning's Rich bar, naming the run's version as it is (Lightning formats it as a metric: `v_num: 0.000`).

    In an interactive session (a notebook) Rich cannot redraw on a thread of its own, so Lightning redraws the whole
    bar on the training thread at every batch: ~12 ms a redraw in Jupyter (Rich's author, Textualize/rich#434), more
    than a step of this model on a GPU. There this bar redraws at most INTERACTIVE_REDRAWS_PER_SECOND times a
    second, and always once more when a bar stops, so that its last frame shows the end.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_redraw = float("-inf")

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if "v_num" in metrics:
            metrics = {"version": str(metrics.pop("v_num")), **metrics}
        return metrics

    def _get_train_description(self, current_epoch: int) -> str:
        """Lightning's "Epoch 12/59", without the "/-2" it wrote for an endless run (trainer.max_epochs -1)."""
        epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch}" + (f"/{epochs - 1}" if epochs is not None and epochs >= 0 else "")
        return f"{description:{len(self.validation_description)}}"  # as wide as "Validation": no flicker

    def refresh(self, hard: bool = False) -> None:
        if hard or not interactive():
            super().refresh(hard)
            return
        now = time.monotonic()
        if self.progress is not None and now - self._last_redraw >= 1 / INTERACTIVE_REDRAWS_PER_SECOND:
            self._last_redraw = now
            self.progress.refresh()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._draw_last_frame()
        super().teardown(trainer, pl_module, stage)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._draw_last_frame()
        super().on_exception(trainer, pl_module, exception)

    def _draw_last_frame(self) -> None:
        """What changed since the last redraw, before Lightning stops the bar (Rich draws nothing at stop in Jupyter)."""
        if self.progress is not None and self.progress.live.is_started:
            self.progress.refresh()


def calm_default_progress_bar(trainer, configured: list) -> None:
    """Swap the Rich bar Lightning adds by default (never one in `configured`, the user's callbacks) for one redrawn
    REDRAWS_PER_SECOND times a second. Rich redraws on a thread of its own, in Python, so at Lightning's 100 a second
    it takes the GIL from a training loop that is bound by Python: ~1.4 ms a step at batch 8 on our CPU (README)."""
    bar = trainer.progress_bar_callback
    if type(bar) is RichProgressBar and not any(callback is bar for callback in configured):
        trainer.callbacks[trainer.callbacks.index(bar)] = RunProgressBar(refresh_rate=REDRAWS_PER_SECOND)
