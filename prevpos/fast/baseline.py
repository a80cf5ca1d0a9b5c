"""The benchmark's baseline: a plain PyTorch loop training the same HookedTransformer the same way."""

import inspect

import torch

from prevpos.data import validation_batch_size
from prevpos.fast.timing import SpeedMeter
from prevpos.loss import correct_predictions, previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.sequences import random_sequences, seeded_sequences
from prevpos.transformer import build_transformer


def plain_loop(device: torch.device, steps: int, steps_per_epoch: int, batch_size: int, lr: float,
               meter: SpeedMeter, warmup_steps: int | None = None, val_size: int = 2048, seed: int = 0) -> None:
    """PrevTokenModel's recipe by hand: same init, batches, float64 loss, clip 1.0, AdamW, warm-up + cosine,
    and a held-out accuracy check every `steps_per_epoch` steps (as fit's validation), timed by `meter`."""
    hp = {name: p.default for name, p in inspect.signature(PrevTokenModel.__init__).parameters.items()}
    model = build_transformer(seed=hp["init_seed"]).to(device)
    model.cfg.device = str(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=hp["weight_decay"], betas=hp["betas"])
    warmup = hp["warmup_steps"] if warmup_steps is None else warmup_steps
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, 1 / max(warmup, 1), 1.0, max(warmup, 1)),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, warmup + 1) - warmup,
                                                   lr * hp["min_lr_ratio"])], [warmup])
    generator = torch.Generator(device).manual_seed(seed)
    n_ctx, d_vocab = hp["n_ctx"], hp["d_vocab"]
    held_out = seeded_sequences(val_size, n_ctx, d_vocab, d_vocab - 1, seed + 1).to(device)
    held_out = held_out.split(validation_batch_size(batch_size))
    meter.begin()
    for step in range(steps):
        if step % steps_per_epoch == 0:
            meter.epoch_start()
        tokens = random_sequences(batch_size, n_ctx, d_vocab, d_vocab - 1, generator, device)
        loss = previous_token_loss(model(tokens), tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % steps_per_epoch == 0:
            meter.epoch_end(step // steps_per_epoch, steps_per_epoch)
            meter.validated(held_out_accuracy(model, held_out), step + 1)
    meter.finished()


@torch.no_grad()
def held_out_accuracy(model, batches) -> float:
    correct = torch.cat([correct_predictions(model(tokens), tokens).flatten() for tokens in batches])
    return correct.float().mean().item()
