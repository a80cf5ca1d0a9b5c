"""Write findings to a run's loggers: scalars and text at once, figures drawn to PNG off the training thread."""

import os
import weakref

from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.analysis.findings import Findings
from prevpos.analysis.render import RENDER_MODES, BackgroundRenderer
from prevpos.fast import tensorboard_crc

DEFAULT_RENDER = "process"


class FindingsWriter:
    """Scalars go to every logger, text and figures to the first TensorBoard logger.

    Figures are drawn in a background process by default (matplotlib holds the GIL, so a thread would stall
    the training loop's Python between torch ops); each PNG lands at the step it was recorded for as soon as it
    is drawn. `finish()` waits for every figure; it also runs at interpreter exit if a run dies before it.

    Args:
        loggers: The trainer's loggers.
        render: "process" (default), "thread" or "inline"; the environment variable PREVPOS_RENDER overrides it.
    """

    def __init__(self, loggers, render: str | None = None):
        self.loggers = list(loggers)
        tensorboards = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        self.tensorboard = tensorboards[0].experiment if tensorboards else None
        render = os.environ.get("PREVPOS_RENDER") or render or DEFAULT_RENDER
        if render not in RENDER_MODES:
            raise ValueError(f"render={render!r}: must be one of {', '.join(RENDER_MODES)}")
        if self.tensorboard is not None:
            tensorboard_crc.install()  # the writer thread's checksums would otherwise hold the GIL for ~0.7 s a run
        self.renderer = BackgroundRenderer(self.tensorboard, render) if self.tensorboard is not None else None
        if self.renderer is not None:
            weakref.finalize(self, self.renderer.finish)  # a run that raised never reaches on_train_end

    def write(self, findings: Findings, step: int) -> None:
        if findings.scalars:
            for logger in self.loggers:
                logger.log_metrics(findings.scalars, step)
        if self.tensorboard is None:
            return
        for tag, text in findings.texts.items():
            self.tensorboard.add_text(tag, text, step)
        for tag, spec in findings.figures.items():
            self.renderer.submit(tag, spec.render, spec.data, step)

    def finish(self) -> None:
        """Wait until every figure is in TensorBoard, then flush. Safe to call more than once."""
        if self.renderer is not None:
            self.renderer.finish()
