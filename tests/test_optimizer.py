"""The optimizer every path builds: torch's fused AdamW where it can be, the same update as the default."""

import warnings

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from prevpos.bench.baseline import PlainTraining
from prevpos.errors import ConfigError
from prevpos.loss import previous_token_loss
from prevpos.module import PrevTokenModel
from prevpos.optimizer import adamw
from prevpos.sequences import random_sequences
from prevpos.transformer import build_transformer
from tests.conftest import build_data, needs_cuda, quiet_trainer


def trained(fused: bool, steps: int = 30) -> torch.optim.AdamW:
    model = build_transformer(seed=0)
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], 1e-2, 0.0, (0.9, 0.999), fused=fused)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        tokens = random_sequences(32, 10, 101, 100, generator)
        loss = previous_token_loss(model(tokens), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def test_fused_adamw_makes_the_default_update_up_to_rounding():
    fused, default = trained(fused=True), trained(fused=False)
    assert fused.param_groups[0]["fused"] and not default.param_groups[0]["fused"]
    initial = trained(fused=True, steps=0).param_groups[0]["params"]
    for a, b, before in zip(fused.param_groups[0]["params"], default.param_groups[0]["params"], initial):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert (a - before).abs().max() > 1e-3  # it trained


def test_fit_and_the_plain_loop_use_the_fused_optimizer_on_cpu():
    module = PrevTokenModel()
    quiet_trainer(max_epochs=1).fit(module, build_data(steps_per_epoch=2))
    assert module.optimizers().optimizer.param_groups[0]["fused"]
    assert PlainTraining(torch.device("cpu"), 1e-3, 10).optimizer.param_groups[0]["fused"]


def test_a_fit_from_python_refuses_float16_weights_before_training():
    """The CLI refuses trainer.precision 16-true on its config; a Trainer built in Python trained and went NaN."""
    module = PrevTokenModel()
    with pytest.raises(ConfigError, match="AdamW cannot train float16 weights"):
        quiet_trainer(max_epochs=1, precision="16-true").fit(module, build_data(steps_per_epoch=2))
    assert module.model.W_E.dtype == torch.float32 and module.global_step == 0


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "16"])  # "16": Lightning's old name for 16-mixed
def test_mixed_precision_from_the_command_line_trains_with_clipping(in_tmp, precision):
    """`fit --trainer.precision bf16-mixed` (the README's GPU option) crashed with a traceback once AdamW was fused:
    Lightning's AMP plugin refuses to clip for a fused optimizer, with or without a GradScaler."""
    from prevpos.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", f"--trainer.precision={precision}", "--trainer.max_epochs=1", "--data.steps_per_epoch=3",
              "--data.batch_size=16", "--data.val_size=64", "--trainer.enable_progress_bar=false",
              "--trainer.callbacks=[]"])
    # The weights stay float32: the model summary's size in 32 bits is right, and its warning is silenced.
    assert not [w for w in caught if "not supported by the model summary" in str(w.message)]
    checkpoint = torch.load(in_tmp / "lightning_logs/default/version_0/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3 and checkpoint["hyper_parameters"]["lr"] > 0
    assert not checkpoint["optimizer_states"][0]["param_groups"][0]["fused"]


def test_a_grad_scaler_with_clipping_gets_the_unfused_optimizer():
    """16-mixed on a GPU: Lightning unscales, then clips, then steps; a fused step would unscale itself, and
    Lightning refuses to clip for it ("does not allow for gradient clipping"). The CPU stands in for the GPU."""
    module = PrevTokenModel()
    amp = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    trainer = quiet_trainer(max_epochs=1, gradient_clip_val=1.0, plugins=[amp])
    trainer.fit(module, build_data(steps_per_epoch=2))
    assert trainer.global_step == 2 and not module.optimizers().optimizer.param_groups[0]["fused"]


@needs_cuda
def test_on_a_gpu_the_optimizer_is_fused_too():
    assert PlainTraining(torch.device("cuda"), 1e-3, 10).optimizer.param_groups[0]["fused"]
    params = [torch.nn.Parameter(torch.zeros(3, device="cuda"))]
    assert adamw(params, 1e-3, 0.0, (0.9, 0.999), capturable=True).param_groups[0]["fused"]
