"""AdamW as every training path builds it: fit, the fast path's CUDA graph, and bench's plain loop."""

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from prevpos.errors import ConfigError


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float, betas: tuple[float, float],
          capturable: bool = False, fused: bool = True) -> torch.optim.AdamW:
    """torch's fused AdamW wherever the device has its kernel (CPU, CUDA, ...) and `fused`: one call updates every
    parameter, where the default loops over them in Python. The same update up to float rounding: a default-length
    plain run had the same val acc, to 4 decimals, at all 60 validations. On our 2-core CPU a step at batch 8 is 10%
    faster, at batch 256 2.5% (medians of 3 and 6). `capturable`: the state lives on the device, for a CUDA graph."""
    fused = fused and all(p.device.type in _get_fused_kernels_supported_devices() and p.is_floating_point()
                          for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, capturable=capturable,
                             **({"fused": True} if fused else {}))


def refuse_float16_weights(precision) -> None:
    """ConfigError for trainer.precision 16-true ("16" is Lightning's old name for 16-mixed): AdamW cannot train
    float16 weights. Its eps (1e-8) is 0 in float16: a plain float16 loop went NaN at its first step, and the fused
    kernel diverged (loss 97 by step 60). bf16 has float32's range, so bf16-true trains."""
    if str(precision) == "16-true":
        raise ConfigError(f"trainer.precision={precision}: AdamW cannot train float16 weights (its eps, 1e-8, is 0 in "
                          "float16); use 16-mixed (float16 arithmetic, float32 weights), bf16-true or 32-true")
