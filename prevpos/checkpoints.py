"""Checkpoint files: written atomically, and checked before a command loads one (one readable line if unusable)."""

import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from prevpos.errors import ConfigError

# Values of --ckpt_path that Lightning resolves itself.
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


class BackgroundCheckpointIO(AsyncCheckpointIO):
    """AtomicCheckpointIO on Lightning's checkpoint thread: the training thread only copies the tensors.

    ModelCheckpoint writes twice an epoch (the best and last.ckpt), each fsynced. Measured on the 2-core CPU
    (`python scripts/checkpoint_cost.py`: its hooks timed over 30 epochs at batch 8, 2 runs each): 14.7-16.2 ms an
    epoch in the training loop when written there, 8.5-9.0 ms in the background (what is left is Lightning
    gathering the state). A fit that ends or fails waits for the writes (Strategy.teardown); a killed one keeps the
    last complete file.
    Removals queue behind the writes: Lightning's AsyncCheckpointIO removes at once, so on a slow disk an old best
    checkpoint removed before its write had landed came back and stayed (tests/test_resume.py).
    """

    def __init__(self):
        super().__init__(AtomicCheckpointIO())

    def remove_checkpoint(self, path) -> None:
        self._ensure_setup()

        def remove() -> None:
            try:
                self.checkpoint_io.remove_checkpoint(path)
            except BaseException as error:  # raised at the next save or at teardown, as a failed write is
                self._error = error

        self._executor.submit(remove)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt is rewritten at every checkpoint epoch, as `save_last` promises.

    Lightning (2.6) writes last.ckpt only at a step that also wrote a top-k checkpoint. With fit's `monitor:
    val/acc`, last.ckpt stopped following the run as soon as val/acc stopped improving (it plateaus near 1.0):
    `fit --resume` went back to the best epoch and replayed the rest, and a finished run's last.ckpt was not its
    final model (tests/test_resume.py).
    """

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last:  # Lightning writes last.ckpt right after this only if this step counts as saved
            self._last_global_step_saved = trainer.global_step

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: runs checkpointed before this class resume with their checkpoint state.
        return ModelCheckpoint.__qualname__ + super().state_key.removeprefix(type(self).__qualname__)


def read_checkpoint(path) -> dict:
    """The checkpoint at `path` (tensors memory-mapped, so this is cheap), or ConfigError saying why not."""
    if not Path(path).is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file (a run keeps its checkpoints in RUN_DIR/checkpoints/; "
                          "to continue a run use --resume RUN_DIR)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # as Lightning reads it
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = _reason(error)
        raise ConfigError(f"--ckpt_path {path}: not a readable checkpoint ({reason}); pass a .ckpt file saved by "
                          "`python -m prevpos fit`") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"--ckpt_path {path}: a torch file but not a Lightning checkpoint (no state_dict); pass a "
                          ".ckpt file saved by `python -m prevpos fit`")
    return checkpoint


def shape_mismatches(saved: dict, expected: dict) -> list[tuple[str, tuple, tuple]]:
    """(name, saved shape, expected shape) for every tensor both state dicts hold with different shapes."""
    return [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in expected.items()
            if isinstance(saved.get(k), torch.Tensor) and tuple(saved[k].shape) != tuple(v.shape)]


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


def _reason(error: Exception) -> str:
    """torch.load's first sentence (the rest is advice about torch.save options that does not apply here)."""
    text = " ".join(str(error).split())
    if "mmap can only be used" in text:
        return "not a zip archive written by torch.save"
    return text.split(". ")[0] if text else type(error).__name__
