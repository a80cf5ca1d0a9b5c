"""Checkpoint files: written atomically, and checked before a command loads one (one readable line if unusable)."""

import os
import re
import shutil
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from weakref import proxy

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from prevpos.analysis.session import settle_states
from prevpos.errors import ConfigError, NothingToTrain

# Values of --ckpt_path that Lightning resolves itself.
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
EXAMPLE_CHECKPOINT = "lightning_logs/default/version_0/checkpoints/last.ckpt"  # messages that ask for one


def names_a_file(ckpt_path) -> bool:
    """Is this --ckpt_path a file, rather than none or one of the names Lightning resolves itself?"""
    return ckpt_path is not None and ckpt_path not in SPECIAL_CKPT_PATHS


def refuse_last_or_best(ckpt_path, command: str) -> None:
    """`--ckpt_path last` or `best`: Lightning's names for a checkpoint of a fit earlier with the same trainer, and each
    command builds a new trainer, which has none. validate and test evaluated the untrained model; fit trained from
    scratch in a new run (last) or stopped with a ValueError traceback (best)."""
    if ckpt_path in ("last", "best"):
        what = (f"to continue a run use --resume RUN_DIR; to start from a checkpoint, pass its file (e.g. "
                f"{EXAMPLE_CHECKPOINT})" if command == "fit" else
                f"pass a checkpoint file of a fit, e.g. {EXAMPLE_CHECKPOINT} (or best-*.ckpt beside it)")
        raise ConfigError(f"{command} --ckpt_path {ckpt_path}: Lightning's name for the checkpoint of an earlier fit "
                          f"with the same trainer, and this command has none; {what}")


def refuse_a_file_as_the_folder(dirpath) -> None:
    """`--checkpoint.dirpath` naming a file (or a path through one): the fit trained its first epoch, then failed to
    save, leaving a run with no checkpoint."""
    if not dirpath:
        return
    there = next((p for p in (Path(dirpath), *Path(dirpath).parents) if p.exists()), None)
    if there is not None and not there.is_dir():
        raise ConfigError(f"checkpoint.dirpath {dirpath}: {there} is a file, not a folder; pass a folder for the "
                          "checkpoints, or leave it unset (each run keeps its own in RUN_DIR/checkpoints)")


def refuse_another_runs_checkpoints(dirpath, ckpt_path, continuing: bool = True) -> None:
    """A new run must not write its checkpoints among another run's (`--checkpoint.dirpath` of an earlier run): its
    best and last-v1 files went beside that run's, and `--resume` of either run could no longer tell them apart.
    Only a fit that continues that run (`continuing`: in its own log folder) from a checkpoint there may; a new run
    started from one (`--ckpt_path` alone) wrote its last.ckpt over that run's."""
    held = sorted(p.name for p in Path(dirpath).glob("*.ckpt")) if dirpath and Path(dirpath).is_dir() else []
    from_there = ckpt_path is not None and (not names_a_file(ckpt_path)
                                            or _same_folder(os.path.dirname(os.path.abspath(ckpt_path)), dirpath))
    if held and from_there and not continuing:
        raise ConfigError(f"checkpoint.dirpath {dirpath}: holds the checkpoints of the run --ckpt_path starts from, "
                          "and this fit is a new run, which would write over them; leave checkpoint.dirpath unset "
                          "(each run keeps its own in RUN_DIR/checkpoints); to continue that run, `python -m prevpos "
                          "fit --resume RUN_DIR`")
    if held and not from_there:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ConfigError(f"checkpoint.dirpath {dirpath}: already holds another run's checkpoints ({shown}); pick a new "
                          "folder, or leave it unset (each run keeps its own in RUN_DIR/checkpoints); to continue that "
                          "run, `python -m prevpos fit --resume RUN_DIR`")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, fsync, then rename over it.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the system temp dir:
    when that is another filesystem (tmpfs, node-local scratch) the final move is a copy into `last.ckpt`, and a
    crash during it leaves a truncated file. A rename within one directory is atomic: readers see the old file or
    the new one.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with _atomic_file(path) as file:
            torch.save(checkpoint, file)

    def copy_checkpoint(self, source, path) -> None:
        """`path` becomes a copy of the checkpoint file `source` (a copy, not a link: the two stay independent)."""
        with _atomic_file(path) as file, open(source, "rb") as original:
            shutil.copyfileobj(original, file)


def _same_folder(a: str, b) -> bool:
    try:
        return bool(a) and b is not None and os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or is not local)
        return False


@contextmanager
def _atomic_file(path):
    """A file open for writing beside `path`; flushed, fsynced and renamed over `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt is rewritten at every checkpoint epoch, as `save_last` promises, and copied
    from the best checkpoint when both are written at the same step.

    Lightning (2.6) writes last.ckpt only at a step that also wrote a top-k checkpoint. With fit's `monitor:
    val/acc`, last.ckpt stopped following the run as soon as val/acc stopped improving (it plateaus near 1.0):
    `fit --resume` went back to the best epoch and replayed the rest, and a finished run's last.ckpt was not its
    final model (tests/test_resume.py).
    At a step that improves the best, Lightning serialises the same state twice; the second is a file copy here.
    """

    _written: tuple[int, str, str] | None = None  # (step, file, the last.ckpt path that file's state names)
    _fitting = True
    _trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        with warnings.catch_warnings():
            if trainer.fast_dev_run:  # which writes no checkpoint: the folder's files are not at risk
                warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)  # runs before Lightning restores this callback's state
        self._fitting = stage == "fit"
        self._trainer = proxy(trainer)  # its ckpt_path is set only as the restore begins

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning (2.6) writes last.ckpt here even under fast_dev_run, which says "checkpointing is suppressed"
        # and logs nowhere: each such run left a checkpoints/last-vN.ckpt in the working directory.
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def load_state_dict(self, state_dict: dict) -> None:
        # validate and test write no checkpoints, so the fit's bookkeeping is of no use to them; Lightning also
        # warned there that the directory had changed (they log to a directory of their own).
        if not self._fitting:
            return
        state = self._in_this_folder(state_dict)
        # From another folder, a fit is a new run that starts from the checkpoint (`fit --ckpt_path FILE`): its best
        # checkpoints are its own. Lightning said "the dirpath has changed", and kept best_model_path, a file of
        # the other run.
        if state.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state)

    def _in_this_folder(self, state: dict) -> dict:
        """The saved bookkeeping with its paths in this callback's folder, when the checkpoint being resumed lies in
        it. Lightning keeps the bookkeeping only if the saved folder is spelled as now, and a resume from another
        working directory (or of a moved run) spells the same folder differently: last.ckpt then stayed behind
        while the run went on in last-v1.ckpt (the next resume went back to last.ckpt and lost those epochs), and
        every resume kept one more best checkpoint."""
        saved = state.get("dirpath")
        restoring = str(self._trainer.ckpt_path or "") if self._trainer is not None else ""
        if not saved or saved == self.dirpath or not _same_folder(os.path.dirname(restoring), self.dirpath):
            return state

        def here(path):
            inside = isinstance(path, str) and path.startswith(saved.rstrip(os.sep) + os.sep)
            return os.path.join(self.dirpath, os.path.relpath(path, saved)) if inside else path

        moved = {key: here(value) for key, value in state.items()}
        moved["best_k_models"] = {here(path): score for path, score in state.get("best_k_models", {}).items()}
        return {**moved, "dirpath": self.dirpath}

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last:  # Lightning writes last.ckpt right after this only if this step counts as saved
            self._last_global_step_saved = trainer.global_step

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        settle_states(trainer, trainer.global_step)  # plugins' state, of every analysis before this step
        step, source, names_last = self._written or (None, None, None)
        io = trainer.strategy.checkpoint_io
        if (step == trainer.global_step and filepath == self.last_model_path == names_last
                and isinstance(io, AtomicCheckpointIO) and _is_local_file_protocol(filepath)):
            # Same step and same checkpoint state (this callback's included): its bytes are those of `source`.
            if trainer.is_global_zero:
                io.copy_checkpoint(source, filepath)
            trainer.strategy.barrier("RunCheckpoint.copy")
            self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath
            if trainer.is_global_zero:  # as Lightning's save does (e.g. a logger that uploads checkpoints)
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
            return
        super()._save_checkpoint(trainer, filepath)
        self._written = (trainer.global_step, filepath, self.last_model_path)

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: runs checkpointed before this class resume with their checkpoint state.
        return ModelCheckpoint.__qualname__ + super().state_key.removeprefix(type(self).__qualname__)


def refuse_a_folder(option: str, path, then: str = "") -> None:
    """One line for a run's folder given where a checkpoint file goes, naming the file meant."""
    if Path(path).is_dir():
        raise ConfigError(f"{option} {path}: a directory; pass a checkpoint file, e.g. "
                          f"{Path(path, 'checkpoints', 'last.ckpt')} for a run's last one{then}")


SAVED_BY_FIT = "pass a .ckpt file saved by `python -m prevpos fit`"


def read_checkpoint(path, named_by: str = "--ckpt_path", fix: str = SAVED_BY_FIT) -> dict:
    """The checkpoint at `path` (tensors memory-mapped, so this is cheap), or ConfigError saying why not: the option
    that named it first, `fix` last (`fit --resume` names the run and its other checkpoints)."""
    refuse_a_folder("--ckpt_path", path, then=" (to continue the run: --resume RUN_DIR)")
    if not Path(path).is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file (a run keeps its checkpoints in RUN_DIR/checkpoints/; "
                          "to continue a run use --resume RUN_DIR)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # as Lightning reads it
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = load_failure(error, path)
        raise ConfigError(f"{named_by} {path}: not a readable checkpoint ({reason}); {fix}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{named_by} {path}: a torch file but not a Lightning checkpoint (no state_dict); {fix}")
    return checkpoint


def replaced_settings(section: str, given: dict, defaults, loaded) -> list[str]:
    """`SECTION.K=loaded (given X)` for each setting given (not left at its default) that the checkpoint's (or its
    run's) replaced: LightningCLI loads a checkpoint's hyperparameters over the command line's, silently."""
    return [f"{section}.{key}={loaded[key]} (given {value})" for key, value in given.items()
            if key in loaded and value != defaults[key] and value != loaded[key]]


def shape_mismatches(saved: dict, expected: dict) -> list[tuple[str, tuple, tuple]]:
    """(name, saved shape, expected shape) for every tensor both state dicts hold with different shapes."""
    return [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in expected.items()
            if isinstance(saved.get(k), torch.Tensor) and tuple(saved[k].shape) != tuple(v.shape)]


def refuse_unknown_model_settings(checkpoint: dict, accepted, path) -> None:
    """A checkpoint whose model settings this prevpos does not take (one of another version of it): Lightning said
    "does not accept option 'model.foo'", an option the user never typed."""
    unknown = sorted(set(checkpoint.get("hyper_parameters") or {}) - set(accepted) - {"_instantiator", "_class_path"})
    if unknown:
        raise ConfigError(f"--ckpt_path {path}: saved with model settings this prevpos does not take "
                          f"({', '.join(unknown)}; from another version of it?); `python -m prevpos analyze --weights "
                          f"{path} --out DIR` reads its weights alone")


def check_fits(checkpoint: dict, model: torch.nn.Module, path) -> None:
    """ConfigError naming the differing settings if the checkpoint's weights do not fit `model`."""
    saved, expected = checkpoint["state_dict"], model.state_dict()
    wrong = [f"{k} {got} vs {want}" for k, got, want in shape_mismatches(saved, expected)]
    wrong += [f"{k} missing" for k in expected if k not in saved]
    if not wrong:
        return
    hparams = checkpoint.get("hyper_parameters", {})
    differ = [f"model.{k}={hparams[k]}" for k in hparams if k in model.hparams and hparams[k] != model.hparams[k]]
    trained = f"it was trained with {', '.join(differ)}" if differ else "it is from a different model"
    raise ConfigError(f"--ckpt_path {path}: its weights do not fit this model ({wrong[0]}); {trained}: pass the "
                      "same model settings (e.g. --config RUN_DIR/config.yaml)")


def epochs_trained(checkpoint: dict) -> int:
    """The epochs a fit checkpoint had trained every batch of: the fit loop's `processed` count, which Lightning's own
    stop test reads. Its `epoch` is the index of the epoch saved in, one short at an epoch's end."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", checkpoint.get("epoch", 0)))


def refuse_fewer_epochs(checkpoint: dict, max_epochs, path, fast_dev_run=False) -> None:
    """ConfigError if fit would continue `checkpoint` to a trainer.max_epochs below the epochs it trained (Lightning
    raises that from inside fit, as a traceback, or, one epoch short, trains nothing)."""
    done = epochs_trained(checkpoint)
    if max_epochs in (None, -1) or done <= max_epochs:
        return
    at = f"the checkpoint {path} has trained {done} epochs (step {checkpoint.get('global_step')})"
    if fast_dev_run:  # it set max_epochs=1 itself: raising that cannot help
        raise ConfigError(f"trainer.fast_dev_run runs one batch of epoch 0 and {at}: to smoke-test these settings, "
                          "leave out --resume and --ckpt_path")
    raise ConfigError(f"trainer.max_epochs={max_epochs}: {at}; to train on, pass more, e.g. --trainer.max_epochs "
                      f"{2 * done}")


def fit_finished(checkpoint: dict, max_epochs, max_steps: int) -> tuple[str, str] | None:
    """(the setting reached, the option to train on) if `checkpoint` already reached trainer.max_steps or max_epochs."""
    step = checkpoint.get("global_step", 0)
    if max_steps > 0 and step >= max_steps:
        return f"trainer.max_steps={max_steps}", f"--trainer.max_steps {2 * step}"
    done = epochs_trained(checkpoint)
    if max_epochs in (None, -1) or done < max_epochs:
        return None
    return f"trainer.max_epochs={max_epochs}", f"--trainer.max_epochs {2 * done}"


def stop_a_finished_fit(checkpoint: dict, max_epochs, max_steps: int, path) -> None:
    """Raise NothingToTrain if `checkpoint` already finished the fit (fit_finished). Lightning then ran no step but
    still wrote a new event file and config.resumeN.yaml into the run, and said to read the report."""
    finished = fit_finished(checkpoint, max_epochs, max_steps)
    if finished is not None:
        setting, fix = finished
        raise NothingToTrain(f"the checkpoint {path} (step {checkpoint.get('global_step', 0)}) already finished this "
                             f"fit, {setting}: nothing to train. To train on, raise it, e.g. {fix}")


def pickled_object(error: Exception) -> str | None:
    """The class of the object torch.load refused to unpickle with weights_only (torch.save(model) pickles the whole
    module, and loading it would run the code it names), or None for other failures."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return found.group(1).rsplit(".", 1)[-1] if found else None


def load_failure(error: Exception, path) -> str:
    """Why torch.load could not read `path`, in a few words. Its own message is a paragraph of advice about
    weights_only, or for a file of another kind a bare "list index out of range" or "101" from its unpickler."""
    if pickled := pickled_object(error):
        return f"a pickled {pickled} object, not weights"
    if not zipfile.is_zipfile(path):  # what torch.save has written since torch 1.6
        return "not a complete zip archive written by torch.save: another kind of file, or one cut short"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if line.startswith(("Unsupported", "invalid", "PytorchStreamReader"))]
    return " ".join((useful or lines or [type(error).__name__])[0].split()).split(". ")[0][:160]
