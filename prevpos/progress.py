"""fit's default progress bar: Lightning's Rich bar, redrawn 10 times a second rather than 100, naming the version."""

from lightning.pytorch.callbacks import RichProgressBar

REDRAWS_PER_SECOND = 10


class RunProgressBar(RichProgressBar):
    """Lightning's Rich bar, naming the run's version as it is (Lightning formats it as a metric: `v_num: 0.000`)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        if "v_num" in metrics:
            metrics = {"version": str(metrics.pop("v_num")), **metrics}
        return metrics


def calm_default_progress_bar(trainer, configured: list) -> None:
    """Swap the Rich bar Lightning adds by default (never one in `configured`, the user's callbacks) for one redrawn
    REDRAWS_PER_SECOND times a second. Rich redraws on a thread of its own, in Python, so at Lightning's 100 a second
    it takes the GIL from a training loop that is bound by Python: ~1.4 ms a step at batch 8 on our CPU (README)."""
    bar = trainer.progress_bar_callback
    if type(bar) is RichProgressBar and not any(callback is bar for callback in configured):
        trainer.callbacks[trainer.callbacks.index(bar)] = RunProgressBar(refresh_rate=REDRAWS_PER_SECOND)
