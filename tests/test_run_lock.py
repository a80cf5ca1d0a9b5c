"""One fit at a time in a run directory: resuming a run that is still training is refused before anything is
written; a lock left by a fit that died, or held on another machine, is not in the way."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from prevpos.cli import main
from prevpos.module import PrevTokenModel
from prevpos.live_fit import LOCK, process_start
from prevpos.run_lock import RunLock
from tests.conftest import build_data, quiet_trainer

RUN = Path("lightning_logs/default/version_0")
TINY = ["--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32", "--data.probe_size=16",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.callbacks=[]"]


class _ReadLock(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.seen = json.loads(Path(trainer.log_dir, LOCK).read_text())


def test_a_fit_holds_its_run_directory_while_it_trains_and_lets_go_after(tmp_path):
    reader = _ReadLock()
    trainer = quiet_trainer(max_epochs=1, logger=TensorBoardLogger(tmp_path), callbacks=[RunLock(), reader])
    trainer.fit(PrevTokenModel(), build_data(steps_per_epoch=2))
    assert reader.seen["pid"] == os.getpid() and reader.seen["host"] == socket.gethostname()
    assert reader.seen["process_start"] == Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert not Path(trainer.log_dir, LOCK).exists()


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def steps_in_last_checkpoint(run: Path) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


def test_resuming_a_run_still_training_is_refused_until_its_fit_is_gone(in_tmp, capsys):
    main(["fit", "--trainer.max_epochs=1", *TINY])
    run = in_tmp / RUN
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands in for the fit
    holder = {"pid": live.pid, "host": socket.gethostname(), "started": "earlier"}
    try:
        (run / LOCK).write_text(json.dumps({**holder, "process_start": process_start(live.pid)}))
        before = files(run)
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--resume", str(run), "--trainer.max_epochs=2"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and "\n" not in err
        assert err == (f"prevpos: error: {RUN} is being trained right now, by process {live.pid} (started earlier): "
                       f"wait for it to end, or stop it, then resume (if no such fit is running, delete {RUN / LOCK})")
        assert files(run) == before  # no config.resume1.yaml, no purged events, no checkpoint
        # The same id, started at another time: the fit that wrote the lock died, and its id went to a new process.
        (run / LOCK).write_text(json.dumps({**holder, "process_start": "1"}))
        main(["fit", "--resume", str(run), "--trainer.max_epochs=2"])
        assert steps_in_last_checkpoint(run) == 4 and not (run / LOCK).exists()
    finally:
        live.kill()
        live.wait()
    (run / LOCK).write_text(json.dumps(holder))
    main(["fit", "--resume", str(run), "--trainer.max_epochs=3"])  # its process is gone, as after a kill -9
    assert steps_in_last_checkpoint(run) == 6 and not (run / LOCK).exists()
    (run / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": "another-node", "started": "earlier"}))
    main(["fit", "--resume", str(run), "--trainer.max_epochs=4"])  # another machine's: not checkable, not in the way
    assert steps_in_last_checkpoint(run) == 8 and not (run / LOCK).exists()


def test_fits_started_at_once_never_share_a_version(in_tmp, monkeypatch):
    """Lightning lists the folder for the next free version_N, and the run's folder appears only later: a fit that
    listed it before another made version_0 took version_0 too (here: a listing that always says 0)."""
    main(["fit", "--trainer.max_epochs=1", *TINY])
    first = files(in_tmp / RUN)
    monkeypatch.setattr(TensorBoardLogger, "_get_next_version", lambda self: 0)
    main(["fit", "--trainer.max_epochs=1", *TINY])  # was refused: "version_0 already holds a run"
    assert files(in_tmp / RUN) == first
    assert (in_tmp / RUN.parent / "version_1" / "checkpoints" / "last.ckpt").is_file()
