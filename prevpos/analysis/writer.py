"""Write findings to a run's loggers: scalars to every logger, figures and text to TensorBoard."""

from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.analysis.findings import Findings


class FindingsWriter:
    def __init__(self, loggers):
        self.loggers = list(loggers)
        tensorboards = [lg for lg in self.loggers if isinstance(lg, TensorBoardLogger)]
        self.tensorboard = tensorboards[0].experiment if tensorboards else None

    def write(self, findings: Findings, step: int) -> None:
        if findings.scalars:
            for logger in self.loggers:
                logger.log_metrics(findings.scalars, step)
        if self.tensorboard is None:
            return
        for tag, text in findings.texts.items():
            self.tensorboard.add_text(tag, text, step)
        for tag, spec in findings.figures.items():
            self.tensorboard.add_figure(tag, spec.draw(), step, close=True)

    def finish(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()
