"""One fit at a time in a run directory. `fit --resume` of a run that is still training (say, from a second
terminal) would have TensorBoard purge the live run's events past the checkpoint's step, and overwrite its
checkpoints."""

import json
import os
import socket
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from prevpos.live_fit import LOCK, process_start, refuse_a_live_run
from prevpos.resume import FOLDER_PER_RUN, run_folder


class RunLock(Callback):
    """Holds RUN_DIR/fit.lock (this process's id and machine) while a fit trains into RUN_DIR, on global rank 0."""

    def __init__(self):
        self._lock: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        run_dir = run_folder(trainer)  # on every rank: Lightning broadcasts trainer.log_dir, and the ranks must all ask
        if not trainer.is_global_zero or run_dir is None:
            return
        refuse_a_live_run(run_dir)
        self._lock = Path(run_dir, LOCK)
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        self._lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                          "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                          "process_start": process_start(os.getpid())}))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._release()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None


def claim_a_new_version(logger) -> None:
    """Give a TensorBoard or CSV logger with no version chosen the next version_N whose folder this process created.

    Lightning picks the next version by listing the folder, and the run's folder appears later, when its event
    file is opened: fits started at once (a loop of `fit ... &`) could list the same free version and write into one
    folder. Creating the folder is atomic: whoever creates version_N has it, and the others go on to N+1."""
    if not isinstance(logger, FOLDER_PER_RUN):
        return
    version = logger.version  # the next free one, as Lightning lists them
    while True:
        logger._version = version
        Path(logger.log_dir).parent.mkdir(parents=True, exist_ok=True)
        try:
            Path(logger.log_dir).mkdir()
            return
        except FileExistsError:
            version += 1


def share_the_run_folder(loggers: list) -> None:
    """Several loggers of one run (TensorBoard and CSV, say) write into the first one's version_N, where each would
    have taken the next free version: version_0 and version_1, which the next fit and `report` took for two runs.
    A CSV logger opens its writer now, while the folder is empty: opened beside TensorBoard's events, it warned
    that "previous log files in this directory will be deleted" (only its own metrics.csv would be)."""
    first = loggers[0] if loggers else None
    if not isinstance(first, FOLDER_PER_RUN):
        return
    for logger in loggers[1:]:
        if isinstance(logger, FOLDER_PER_RUN) and logger._version is None and logger.root_dir == first.root_dir:
            logger._version = first.version
            if isinstance(logger, CSVLogger) and not any(Path(logger.log_dir).iterdir()):
                _ = logger.experiment  # its writer, opened now
