"""AdamW as every training path builds it: fit, the fast path's CUDA graph, and bench's plain loop."""

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


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
