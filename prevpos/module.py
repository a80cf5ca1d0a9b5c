"""The LightningModule: the HookedTransformer, its loss, optimizer, schedule and metrics, and where the fast path's
captured step plugs in."""

import math

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.functional.classification import multiclass_accuracy

from prevpos.errors import ConfigError, check_seed
from prevpos.fast import training as fast_path
from prevpos.fast.training import FastStep
from prevpos.loss import previous_token_loss, targets
from prevpos.metrics import HeldOutMetrics, held_out_names
from prevpos.optimizer import refuse_float16_weights
from prevpos.transformer import Positional, build_transformer

LR_TAG = "train/lr"


def fit_metric_names(n_ctx: int) -> list[str]:
    """Every name a fit logs through Lightning (log_training_step, log_held_out), so its callback_metrics: what
    --checkpoint.monitor can watch (tests/test_fit_settings.py checks them against a fit's)."""
    return ["train/loss", "train/acc", LR_TAG, *(f"val/{name}" for name in held_out_names(n_ctx))]


class PrevTokenModel(L.LightningModule):
    """A transformer trained to output the previous token.

    Args:
        n_layers: Attention layers.
        n_heads: Heads per layer.
        d_model: Residual stream width.
        d_head: Width of each head.
        n_ctx: Sequence length, BOS included.
        d_vocab: Vocabulary size; the last token is BOS.
        attn_only: No MLPs (the tutorial's model).
        positional: "none" (zeroed, frozen W_pos: the point of the project) or "learned" (the control).
        init_seed: Seed of the weight initialisation.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (never applied to the frozen W_pos and biases: they are not optimized).
        betas: AdamW betas.
        warmup_steps: Linear warm-up steps.
        min_lr_ratio: Cosine decay from lr to lr * min_lr_ratio over the run (keeps long runs stable).
        fast: The fast GPU path (prevpos/fast/training.py): K optimizer steps per Lightning step, each a CUDA
            graph replay; with data.batches_per_step = K (experiments/gpu_fast.yaml).
    """

    def __init__(
        self, n_layers: int = 2, n_heads: int = 1, d_model: int = 128, d_head: int = 128, n_ctx: int = 10,
        d_vocab: int = 101, attn_only: bool = True, positional: Positional = "none", init_seed: int = 0,
        lr: float = 3e-3, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 20, min_lr_ratio: float = 0.1, fast: FastStep | None = None,
    ):
        super().__init__()
        if not lr > 0:
            raise ConfigError(f"model.lr={lr}: the learning rate must be positive (e.g. 3e-3)")
        if weight_decay < 0:
            raise ConfigError(f"model.weight_decay={weight_decay}: must be >= 0")
        if not 0 <= min_lr_ratio <= 1:
            raise ConfigError(f"model.min_lr_ratio={min_lr_ratio} must be in [0, 1] (the final lr as a fraction of the peak)")
        if warmup_steps < 0:
            raise ConfigError(f"model.warmup_steps={warmup_steps}: must be >= 0 (0: no warm-up)")
        check_seed("model.init_seed", init_seed)
        if not all(0 <= beta < 1 for beta in betas):  # torch refused them later, as a traceback in a new run folder
            raise ConfigError(f"model.betas={list(betas)}: each must be in [0, 1) (AdamW's usual: [0.9, 0.999])")
        self.save_hyperparameters()
        self.fast = fast
        self.automatic_optimization = fast is None
        self.model = build_transformer(n_layers, n_heads, d_model, d_head, n_ctx, d_vocab, attn_only, positional,
                                       init_seed)
        self.held_out_metrics = HeldOutMetrics(n_ctx)  # validation's and test's

    def _apply(self, fn, *args, **kwargs):
        # TransformerLens moves inputs to cfg.device inside forward, and Lightning's .to() does not update it.
        super()._apply(fn, *args, **kwargs)
        self.model.cfg.device = str(self.model.W_E.device)
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def setup(self, stage: str) -> None:
        if stage == "fit":  # the CLI checks its config before making a run directory; this, fits from Python
            refuse_float16_weights(self.trainer.precision)
            fast_path.check_setup(self)
        # One training batch (all BOS: the count does not depend on the tokens): Lightning's model summary runs it
        # to report the forward's FLOPs and shapes; without it, it printed 0 FLOPs.
        batch_size = getattr(self.trainer.datamodule, "batch_size", 1)
        self.example_input_array = torch.full((batch_size, self.hparams.n_ctx), self.hparams.d_vocab - 1)

    def training_step(self, tokens: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.fast is not None:
            return fast_path.training_step(self, tokens)
        logits = self.model(tokens)
        loss = previous_token_loss(logits, tokens)
        self.log_training_step(loss, logits, tokens)
        return loss

    def log_training_step(self, loss: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor,
                          lr: float | None = None) -> None:
        """train/loss, train/acc and train/lr of one batch, on the steps the logger writes (log_every_n_steps) only:
        each self.log costs ~0.5 ms of Python, as much as the whole step's GPU work at batch 256 (an H100).

        train/lr is the lr the step trained at (`lr`; by default the schedule's now, before Lightning steps it): the
        cosine decays over the run's own length, so a longer run's lr at a step is not the default run's. Logged here,
        not by Lightning's LearningRateMonitor, which on the fast path (K steps per batch) missed the logging steps."""
        if not self.trainer._logger_connector.should_update_logs:
            return
        # The functional accuracy of this batch, not a Metric object: a Metric's forward and Lightning's handling
        # of a logged Metric cost ~5x more (216 vs 43 us, CPU), for the same number.
        accuracy = multiclass_accuracy(logits[:, 1:].argmax(-1), targets(tokens), self.hparams.d_vocab,
                                       average="micro", validate_args=False)
        # sync_dist: under DDP both are means over the ranks' equal-sized batches (no-ops on one device).
        # Not on the progress bar: Lightning reads a prog_bar value on the host at every later step of the epoch, a
        # GPU sync per step; the bar shows val/loss and val/acc instead, read once per validation.
        self.log("train/loss", loss, sync_dist=True)
        self.log("train/acc", accuracy, sync_dist=True)
        self.log(LR_TAG, self.lr_schedulers().get_last_lr()[0] if lr is None else lr)  # a float: no sync

    def validation_step(self, tokens: torch.Tensor, batch_idx: int) -> None:
        self.held_out_metrics.update(self.model(tokens), tokens)

    def on_validation_epoch_end(self) -> None:
        self.log_held_out("val")

    def test_step(self, tokens: torch.Tensor, batch_idx: int) -> None:
        self.validation_step(tokens, batch_idx)  # the same metrics, on the datamodule's test set

    def on_test_epoch_end(self) -> None:
        self.log_held_out("test")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is not None and self.trainer.state.fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            # validate/test: log at the step the fit logged this checkpoint's validation, not at step 0, so that the
            # point sits on the run's curve in TensorBoard (Lightning counts steps there one behind global_step).
            stepped = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
            if "_batches_that_stepped" in stepped:
                self.trainer.fit_loop.epoch_loop._batches_that_stepped = max(stepped["_batches_that_stepped"] - 1, 0)

    def log_held_out(self, split: str) -> None:
        # Once per validation, not per batch (each self.log costs ~0.2 ms of Python on our CPU).
        # sync_dist: the values are already over all ranks (torchmetrics syncs in compute); the mean of equal
        # values is the same, and Lightning asks for it when logging an epoch's tensor under DDP.
        scores = self.held_out_metrics.compute()
        self.held_out_metrics.reset()
        if self.trainer.barebones:  # Lightning drops every self.log there, with a warning
            return
        for name, value in scores.items():
            self.log(f"{split}/{name}", value, prog_bar=name in ("loss", "acc"), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.build_optimizer(trainable)
        total = self.total_steps()
        if math.isinf(total):  # trainer.max_epochs -1 and no max_steps: Lightning counts inf steps
            rank_zero_info(f"prevpos: the run has no last step (trainer.max_epochs -1), so the cosine has no length: "
                           f"the lr stays at {hp.lr:g} after warm-up; set trainer.max_steps to decay it over them")
        schedule = warmup_cosine(optimizer, hp.lr, hp.warmup_steps, total, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def build_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return fast_path.optimizer(self, params)

    def total_steps(self) -> int:
        """Optimizer steps in the whole run: the length of the cosine decay."""
        return fast_path.total_steps(self)


def warmup_cosine(optimizer: torch.optim.Optimizer, lr: float, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over warmup_steps, cosine decay to lr * min_lr_ratio at total_steps (one step a call), then
    lr * min_lr_ratio. The hold matters when `fit --resume` extends a run: the checkpoint restores this run's
    schedule, and a cosine stepped past its end climbs back to the peak lr (it is periodic)."""
    total = max(total_steps, warmup_steps + 1)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / max(warmup_steps, 1), 1.0, max(warmup_steps, 1))
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total - warmup_steps, lr * min_lr_ratio)
    hold = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: min_lr_ratio)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, decay, hold], [warmup_steps, total])
