"""Write findings to a run's loggers: scalars and text at once, figures drawn to PNG off the training thread."""

import os
import weakref

from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.analysis.findings import Findings
from prevpos.analysis.render import RENDER_MODES, BackgroundRenderer
from prevpos.analysis.sinks import sinks_for
from prevpos.errors import ConfigError
from prevpos.fast import tensorboard_crc

DEFAULT_RENDER = "process"


def render_mode(render: str | None = None) -> str:
    """Where figures are drawn: PREVPOS_RENDER if set, else `render`, else the default; ConfigError if unknown."""
    from_environment = os.environ.get("PREVPOS_RENDER")
    mode = from_environment or render or DEFAULT_RENDER
    if mode not in RENDER_MODES:
        raise ConfigError(f"{'PREVPOS_RENDER' if from_environment else 'render'}={mode}: must be one of "
                          f"{', '.join(RENDER_MODES)} (unset: {DEFAULT_RENDER})")
    return mode


class FindingsWriter:
    """Scalars go to every logger; text and figures to each logger that keeps them (`sinks_for`): the first
    TensorBoard logger's events, W&B's media, a CSV log's folder of PNGs.

    Figures are drawn in a background process by default (matplotlib holds the GIL, so a thread would stall
    the training loop's Python between torch ops); each PNG lands at the step it was recorded for as soon as it
    is drawn. `finish()` waits for every figure; it also runs at interpreter exit if a run dies before it.

    Args:
        loggers: The trainer's loggers.
        render: "process" (default), "thread" or "inline"; the environment variable PREVPOS_RENDER overrides it.
    """

    def __init__(self, loggers, render: str | None = None):
        self.loggers = list(loggers)
        self.sinks = sinks_for(self.loggers)
        render = render_mode(render)
        if any(isinstance(logger, TensorBoardLogger) for logger in self.loggers):
            tensorboard_crc.install()  # the writer thread's checksums would otherwise hold the GIL for ~0.7 s a run
        self.renderer = BackgroundRenderer(self.sinks, render) if self.sinks else None
        if self.renderer is not None:
            weakref.finalize(self, self.renderer.finish)  # a run that raised never reaches on_train_end

    def write(self, findings: Findings, step: int, plugin: str | None = None) -> None:
        """Log `findings` at `step`; `plugin`: whose they are (named if a figure of theirs cannot be drawn)."""
        if findings.scalars:
            for logger in self.loggers:
                logger.log_metrics(findings.scalars, step)
        if self.renderer is None:
            return
        for tag, text in findings.texts.items():
            self.text(tag, text, step)
        for tag, spec in findings.figures.items():
            if plugin is not None:
                self.renderer.drawn_for[tag] = plugin
            self.renderer.submit(tag, spec.render, spec.data, step)

    def text(self, tag: str, text: str, step: int) -> None:
        for sink in self.sinks:
            sink.text(tag, step, text)

    def deliver(self) -> None:
        """Hand figures drawn since the last call to the sinks that take them on the training thread only (W&B)."""
        for sink in self.sinks:
            sink.deliver()

    def finish(self) -> None:
        """Wait until every figure is with its sinks, then flush them. Safe to call more than once."""
        if self.renderer is not None:
            self.renderer.finish()
