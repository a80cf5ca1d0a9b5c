"""fit's default progress bar: Lightning's Rich bar, redrawn 10 times a second rather than 100."""

from lightning.pytorch.callbacks import RichProgressBar

REDRAWS_PER_SECOND = 10


def calm_default_progress_bar(trainer, configured: list) -> None:
    """Swap the Rich bar Lightning adds by default (never one in `configured`, the user's callbacks) for one redrawn
    REDRAWS_PER_SECOND times a second. Rich redraws on a thread of its own, in Python, so at Lightning's 100 a second
    it takes the GIL from a training loop that is bound by Python: ~1.4 ms a step at batch 8 on our CPU (README)."""
    bar = trainer.progress_bar_callback
    if type(bar) is RichProgressBar and not any(callback is bar for callback in configured):
        trainer.callbacks[trainer.callbacks.index(bar)] = RichProgressBar(refresh_rate=REDRAWS_PER_SECOND)
