"""The benchmark's baseline: a plain PyTorch loop training the same HookedTransformer the same way."""

import inspect

import torch

from prevpos.bench.timing import SpeedMeter
from prevpos.data import PrevTokenData
from prevpos.lightning_cli import TRAINER_DEFAULTS
from prevpos.loss import correct_predictions, previous_token_loss
from prevpos.module import PrevTokenModel, warmup_cosine
from prevpos.optimizer import adamw
from prevpos.sequences import random_sequences
from prevpos.transformer import build_transformer


class PlainTraining:
    """PrevTokenModel's recipe by hand: same init, batches, float64 loss, fit's gradient clipping, AdamW, warm-up +
    cosine over `total_steps`. `step()` trains on one fresh batch; `model` is the HookedTransformer."""

    def __init__(self, device: torch.device, lr: float, total_steps: int, warmup_steps: int | None = None,
                 init_seed: int | None = None, data_seed: int = 0):
        hp = {name: p.default for name, p in inspect.signature(PrevTokenModel.__init__).parameters.items()}
        self.device = device
        self.model = build_transformer(seed=hp["init_seed"] if init_seed is None else init_seed)
        self.model.to(device, print_details=False)  # TransformerLens prints "Moving model to device" otherwise
        self.model.cfg.device = str(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adamw(self.params, lr, hp["weight_decay"], hp["betas"])
        warmup = hp["warmup_steps"] if warmup_steps is None else warmup_steps
        self.schedule = warmup_cosine(self.optimizer, lr, warmup, total_steps, hp["min_lr_ratio"])
        self.generator = torch.Generator(device).manual_seed(data_seed)
        self.n_ctx, self.d_vocab = hp["n_ctx"], hp["d_vocab"]

    def step(self, batch_size: int) -> torch.Tensor:
        """One optimizer step; its training loss (still on the device: reading it would be a GPU sync)."""
        tokens = random_sequences(batch_size, self.n_ctx, self.d_vocab, self.d_vocab - 1, self.generator, self.device)
        loss = previous_token_loss(self.model(tokens), tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, TRAINER_DEFAULTS["gradient_clip_val"])
        self.optimizer.step()
        self.schedule.step()
        return loss.detach()

    def held_out(self, size: int, batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
        """The fixed validation set, made by fit's datamodule, in its validation batches, on this device."""
        data = PrevTokenData(batch_size=batch_size, val_size=size, n_ctx=self.n_ctx, d_vocab=self.d_vocab)
        return tuple(batch.to(self.device) for batch in data.held_out(seed))


def plain_loop(device: torch.device, steps: int, steps_per_epoch: int, batch_size: int, lr: float,
               meter: SpeedMeter, warmup_steps: int | None = None, val_size: int = 2048, seed: int = 0) -> None:
    """PlainTraining for `steps` steps, with a held-out accuracy check every `steps_per_epoch` steps (as fit's
    validation), timed by `meter`."""
    training = PlainTraining(device, lr, steps, warmup_steps, data_seed=seed)
    held_out = training.held_out(val_size, batch_size, seed + 1)
    meter.begin()
    for step in range(steps):
        if step % steps_per_epoch == 0:
            meter.epoch_start()
        training.step(batch_size)
        if (step + 1) % steps_per_epoch == 0:
            meter.epoch_end(step // steps_per_epoch, steps_per_epoch)
            meter.validated(held_out_accuracy(training.model, held_out), step + 1)
    meter.finished()


@torch.no_grad()
def held_out_accuracy(model, batches) -> float:
    correct = torch.cat([correct_predictions(model(tokens), tokens).flatten() for tokens in batches])
    return correct.float().mean().item()
