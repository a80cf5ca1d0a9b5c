"""Where the plugins' figures and text go, for each kind of logger: TensorBoard events, W&B media, or files
beside a CSV log. Scalars go to every logger through Lightning's `log_metrics`; the rest has no common API."""

import itertools
import os
import shutil
import struct
import tempfile
from collections import deque
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from prevpos.notices import warn
from prevpos.step_files import FIGURES, TEXTS, step_file


def image_summary(tag: str, png: bytes) -> Summary:
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)  # 4 = RGBA
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class Sink:
    """Where one logger's figures and text go: image() and text() as they come; deliver() on the training thread
    between steps; flush() once every figure is drawn."""

    def deliver(self) -> None:
        pass

    def flush(self) -> None:
        pass


class TensorBoardSink(Sink):
    """Images and text in the run's event file (its writer queues events, so any thread may write)."""

    def __init__(self, summary_writer):
        self.summary_writer = summary_writer

    def image(self, tag: str, step: int, png: bytes) -> None:
        self.summary_writer._get_file_writer().add_summary(image_summary(tag, png), step)

    def text(self, tag: str, step: int, text: str) -> None:
        self.summary_writer.add_text(tag, text, step)

    def flush(self) -> None:
        self.summary_writer.flush()


class FolderSink(Sink):
    """Files beside a log that takes no images (CSV): RUN_DIR/figures/<tag>/step_000020.png, and text as .md in
    RUN_DIR/texts/. Each file appears whole (written aside, then renamed): `report` may read a run still training."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)

    def image(self, tag: str, step: int, png: bytes) -> None:
        self._write(step_file(self.run_dir / FIGURES, tag, step, ".png"), png)

    def text(self, tag: str, step: int, text: str) -> None:
        self._write(step_file(self.run_dir / TEXTS, tag, step, ".md"), text.encode())

    @staticmethod
    def _write(path: Path, content: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            partial.write_bytes(content)
            os.replace(partial, path)
        finally:  # a full disk left the half-written file in the run's folder
            partial.unlink(missing_ok=True)


class WandbSink(Sink):
    """W&B images and text, at the training step they belong to (Lightning's `trainer/global_step` axis).

    Figures are finished on the figure workers' callback thread; they wait here, as PNG files, and reach W&B on the
    training thread (`deliver`), since W&B does not document its logging as safe from several threads. W&B takes
    a file in 6 ms and a PIL image in 29 ms (it encodes that PNG again; 20 figures, measured on our 2-core CPU).
    """

    def __init__(self, logger: WandbLogger):
        self.logger = logger
        self._waiting: deque[tuple[str, int, Path]] = deque()
        self._folder = Path(tempfile.mkdtemp(prefix="prevpos-wandb-"))
        self._count = itertools.count()
        self._failed = False

    def image(self, tag: str, step: int, png: bytes) -> None:
        self._folder.mkdir(exist_ok=True)  # again, if a finished fit's trainer fits once more
        path = self._folder / f"{next(self._count)}.png"
        path.write_bytes(png)
        self._waiting.append((tag, step, path))

    def text(self, tag: str, step: int, text: str) -> None:
        import wandb

        self.logger.log_metrics({tag: wandb.Html(f"<pre>{_escape(text)}</pre>")}, step)

    def deliver(self) -> None:
        while self._waiting:
            tag, step, path = self._waiting.popleft()
            try:
                self.logger.log_image(tag, [str(path)], step)  # W&B copies it into the run's media
            except Exception as error:  # e.g. the W&B run already finished (a run that died, at interpreter exit)
                if not self._failed:
                    self._failed = True
                    warn(f"figure {tag} at step {step} could not go to W&B: {error!r}")
            path.unlink()

    def flush(self) -> None:
        self.deliver()
        shutil.rmtree(self._folder, ignore_errors=True)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


KEEP_FIGURES = (TensorBoardLogger, WandbLogger, CSVLogger)


def sinks_for(loggers) -> list:
    """One sink per logger that can keep figures: the first TensorBoard logger, each W&B and each CSV logger."""
    sinks, tensorboard = [], False
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and not tensorboard:
            tensorboard = True
            sinks.append(TensorBoardSink(logger.experiment))
        elif isinstance(logger, WandbLogger):
            sinks.append(WandbSink(logger))
        elif isinstance(logger, CSVLogger):
            sinks.append(FolderSink(logger.log_dir))
    return sinks


def figures_kept_nowhere(trainer) -> str | None:
    """The line to say as a fit starts if it has plugins and loggers, but no logger keeps figures (MLflow, say)."""
    from prevpos.analysis.plugin import plugins_of

    loggers = trainer.loggers
    if trainer.fast_dev_run:  # Lightning swapped the loggers for its DummyLogger and says logging is suppressed
        return None
    if not plugins_of(trainer) or not loggers or any(isinstance(logger, KEEP_FIGURES) for logger in loggers):
        return None
    names = " and ".join(type(logger).__name__ for logger in loggers)
    return (f"prevpos: {names} take{'s' if len(loggers) == 1 else ''} scalars only: the plugins' figures and text go "
            "nowhere (a TensorBoardLogger, CSVLogger or WandbLogger beside it keeps them)")
