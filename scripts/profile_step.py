"""Where a plain training step spends GPU time: torch.profiler over 20 steps of the benchmark's plain loop.
    python scripts/profile_step.py            (on a CUDA GPU; prints the top kernels at batch 256 and 4096)
It found the embedding's backward at 48% of an H100 step's GPU time at batch 4096 (prevpos.transformer.LookupEmbed).
"""

import torch
from torch.profiler import ProfilerActivity, profile

from prevpos.bench.baseline import plain_loop
from prevpos.bench.timing import SpeedMeter

device = torch.device("cuda")
for batch_size in (256, 4096):
    plain_loop(device, 20, 20, batch_size, 1e-2, SpeedMeter(device), val_size=8)  # warm-up
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        plain_loop(device, 20, 20, batch_size, 1e-2, SpeedMeter(device), val_size=8)
    print(f"=== batch {batch_size}, 20 steps")
    print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
