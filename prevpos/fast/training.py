"""The fast path (model.fast): the same model, loss, optimizer and schedule, K optimizer steps per Lightning step."""

from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from prevpos.errors import ConfigError
from prevpos.fast.step import TrainStep
from prevpos.optimizer import adamw


@dataclass
class FastStep:
    """Manual optimization: one optimizer step per batch of each [K, batch, pos] block (data.batches_per_step = K).

    Lightning costs ~1 ms of Python per step, as much as a whole optimizer step of this model on a GPU, so one
    Lightning step runs K steps, each one replay of a CUDA graph. The batches are the datamodule's, in the same
    order, so on a CPU (or with capture off) the parameters equal the normal path's step for step.
    `global_step` counts optimizer steps. Needs trainer.precision 32-true and trainer.gradient_clip_val null.

    Args:
        capture: Record the step as a CUDA graph on a GPU (on a CPU it always runs eagerly).
        clip: Gradient-norm clipping inside the step (what trainer.gradient_clip_val does otherwise); null: none.
    """

    capture: bool = True
    clip: float | None = 1.0

    def __post_init__(self):
        if self.clip is not None and not self.clip > 0:  # 0 zeroed every gradient; below 0, gradient ascent
            raise ConfigError(f"model.fast.clip={self.clip}: the largest gradient norm must be positive; null for no "
                              "clipping")


def check_setup(module: L.LightningModule) -> None:
    """check_settings on what the trainer made of them (fit from Python; the CLI checks its config before that)."""
    trainer = module.trainer
    # fast_dev_run=N sets max_steps=N: "N batches", each K optimizer steps here, not a max_steps the user gave.
    max_steps = -1 if trainer.fast_dev_run else trainer.max_steps
    check_settings(module.fast is not None, getattr(trainer.datamodule, "batches_per_step", 1), trainer.precision,
                   max_steps)


def check_settings(fast: bool, batches_per_step: int, precision, max_steps: int, gradient_clip_val=None) -> None:
    """One clear line for settings that do not go with the fast path (or the lack of it)."""
    k = batches_per_step
    if not fast:
        if k > 1:
            raise ConfigError(f"data.batches_per_step={k} needs model.fast (K optimizer steps per Lightning step)")
        return
    # Lightning refuses trainer.gradient_clip_val with manual optimization too, but as a traceback from inside fit
    # (from Python, before setup runs: check_setup never sees it).
    if gradient_clip_val is not None:
        raise ConfigError(f"model.fast clips inside its own step (model.fast.clip): add --trainer.gradient_clip_val "
                          f"null (it is {gradient_clip_val}; experiments/gpu_fast.yaml sets both)")
    if precision not in (None, 32, "32", "32-true"):
        raise ConfigError(f"model.fast needs trainer.precision 32-true, not {precision}")
    if max_steps > 0 and max_steps % k:
        raise ConfigError(f"trainer.max_steps={max_steps} is not a multiple of data.batches_per_step={k}")


def uses_graph(module: L.LightningModule) -> bool:
    return module.fast is not None and module.fast.capture and module.device.type == "cuda"


def optimizer(module: L.LightningModule, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW as the normal path builds it; capturable (its state on the GPU, inside the graph) for the graph."""
    hp = module.hparams
    # Not fused under Lightning's AMP plugin (16-mixed, bf16-mixed): a fused step would unscale a GradScaler's
    # gradients itself, after Lightning clipped them, so the plugin refuses to clip (the default) for any fused
    # optimizer, scaler or not ("does not allow for gradient clipping").
    mixed = isinstance(module.trainer.precision_plugin, MixedPrecision)
    return adamw(params, hp.lr, hp.weight_decay, hp.betas, capturable=uses_graph(module), fused=not mixed)


def total_steps(module: L.LightningModule) -> int:
    trainer = module.trainer
    estimate = trainer.estimated_stepping_batches  # also sets up the train dataloader's length
    if module.fast is None or trainer.max_epochs in (None, -1):
        return estimate
    by_epochs = trainer.num_training_batches * trainer.max_epochs * getattr(trainer.datamodule, "batches_per_step", 1)
    return min(by_epochs, trainer.max_steps) if trainer.max_steps > 0 else by_epochs


def training_step(module: L.LightningModule, block: torch.Tensor) -> torch.Tensor:
    """K optimizer steps, one per batch of `block` [K, batch, pos] (or [batch, pos]: K = 1); the last loss."""
    block = block[None] if block.dim() == 2 else block
    if getattr(module, "_fast_step", None) is None:
        module._fast_step = TrainStep(module.model, module.optimizers().optimizer, module.fast.clip,
                                      uses_graph(module))
    step, scheduler = module._fast_step, module.lr_schedulers()
    for tokens in block:
        lr = scheduler.get_last_lr()[0]  # the lr this step trains at, which train/lr reports for the last
        step(tokens)
        scheduler.step()
    # Lightning counts manual steps through its optimizer wrapper, which the graph bypasses; and it logs at
    # its batch count (+1 per Lightning step, after this): both in optimizer steps, as on the normal path.
    loop = module.trainer.fit_loop.epoch_loop
    loop.manual_optimization.optim_step_progress.increment_by(len(block))
    loop._batches_that_stepped += len(block) - 1
    loss = step.loss.clone()
    module.log_training_step(loss, step.logits, step.tokens, lr)
    return loss
