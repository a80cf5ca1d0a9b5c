"""TransformerLens's embedding lookup (W_E[tokens]) against LookupEmbed's F.embedding, on one CUDA GPU:
    python scripts/embedding_ab.py
the lookup's forward+backward alone, then the fast path (`bench` run d) with each, alternating, 3 repeats.
"""

import statistics
import tempfile
import time
from argparse import Namespace

import torch
from transformer_lens.components import Embed

from prevpos.bench.runs import run_one
import prevpos.transformer

LOOKUPS = {"W_E[tokens]": Embed, "F.embedding": prevpos.transformer.LookupEmbed}
device = torch.device("cuda")

embed = prevpos.transformer.build_transformer().embed.to(device)
for batch_size in (256, 4096):
    tokens = torch.randint(0, 100, (batch_size, 10), device=device)
    tokens[:, 0] = 100  # BOS, as in training: one row looked up by every sequence
    upstream = torch.randn(batch_size, 10, 128, device=device)
    for name, lookup in LOOKUPS.items():
        embed.__class__ = lookup  # the same module and W_E, looked up one way or the other
        for repeat in range(105):
            if repeat == 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            (embed(tokens) * upstream).sum().backward()
        torch.cuda.synchronize()
        print(f"batch {batch_size:5d} {name:12s} {(time.perf_counter() - start) * 10:.3f} ms per forward+backward")

for batch_size in (256, 4096):
    args = Namespace(steps=600, steps_per_epoch=100, batch_size=batch_size, lr=1e-2, target=0.99,
                     precision="32-true", steps_per_call=10)
    results = {name: [] for name in LOOKUPS}
    for repeat in range(3):
        for name, lookup in LOOKUPS.items():
            prevpos.transformer.LookupEmbed = lookup  # build_transformer gives the model's embed this class
            with tempfile.TemporaryDirectory() as scratch:
                results[name].append(run_one("d", args, device, scratch))
    prevpos.transformer.LookupEmbed = LOOKUPS["F.embedding"]
    for name, runs in results.items():
        print(f"fast path, batch {batch_size}, {name}: {statistics.median(r['steps_per_s'] for r in runs):.0f} steps/s, "
              f"0.99 in {statistics.median(r['time_to_target_s'] for r in runs):.3f} s")
