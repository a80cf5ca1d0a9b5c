"""Shared fixtures: CPU only, small sizes, and one trained default-shape model per test session."""

import logging
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

# Tests send SIGINT to the commands they start, as a terminal's Ctrl-C does. A test run started in the background of
# a non-interactive shell (`pytest &` in a script) inherits SIGINT ignored, and so would every command it starts,
# since Python keeps an ignored SIGINT ignored: those tests then failed. A handler is reset by exec, an ignore is not.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from prevpos.data import PrevTokenData  # noqa: E402
from prevpos.module import PrevTokenModel  # noqa: E402
from prevpos.workers import analysis_process  # noqa: E402


def quiet_trainer(**overrides) -> L.Trainer:
    """A CPU Trainer with no progress bar, model summary or checkpoints unless asked for."""
    kwargs = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


@contextmanager
def lightning_info_lines():
    """The messages Lightning's info lines ("GPU available: ...") carry within the block, as they reach its handler."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def build_data(**overrides) -> PrevTokenData:
    kwargs = dict(batch_size=64, steps_per_epoch=5, val_size=256, probe_size=128)
    kwargs.update(overrides)
    return PrevTokenData(**kwargs)


@pytest.fixture(scope="session")
def trained_module() -> PrevTokenModel:
    """The default model trained 400 steps at batch 256 (~10 s on 2 cores): the mechanism has formed."""
    module = PrevTokenModel(lr=3e-3)
    data = PrevTokenData(batch_size=256, steps_per_epoch=100, val_size=1024)
    quiet_trainer(max_epochs=4, gradient_clip_val=1.0).fit(module, data)
    module.eval()
    return module


@pytest.fixture(scope="session")
def trained_two_heads():
    """experiments/two_heads.yaml's model (2 heads of 64 per layer), trained 300 steps (~10 s on 2 cores)."""
    module = PrevTokenModel(n_heads=2, d_head=64)
    quiet_trainer(max_epochs=3, gradient_clip_val=1.0).fit(module, build_data(batch_size=256, steps_per_epoch=100))
    return module.eval().model


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    """Run in a fresh directory, so lightning_logs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def needs_cuda(test):
    """A test that runs only with a CUDA GPU, and the only kind that sees it (`_cpu_only` hides it from the rest)."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@pytest.fixture(autouse=True)
def _cpu_only(request, monkeypatch):
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    else:
        analysis_process.stop()  # one an earlier test started cannot see the GPU
    torch.set_grad_enabled(True)


@pytest.fixture()
def offline_wandb(monkeypatch):
    """W&B offline and quiet; its service, which resolves a relative `dir` from where it started, ends with the test
    (without that, a second test's W&B files did not land in that test's directory)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    yield wandb
    wandb.finish()
    wandb.teardown()
