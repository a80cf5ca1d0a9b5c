"""Where (c)'s extra time goes: `bench`'s (b) and (c) beside variants of (c), alternating on one machine.
    python scripts/plugins_ab.py [--steps 600] [--repeats 3]        (a GPU picks itself; ~3 min on an H100)
Variants: (c) as `bench` runs it; (c) drawing figures only at step 0 and at the end; (c) with only the analyses
that run every epoch early on (attention, OV, QK terms, explanation). Each run's line is printed as it finishes."""

import argparse
import statistics
import tempfile

import torch

from prevpos.fast import runs

DENSE = ("AttentionPatterns", "OVCircuit", "QKTermImportance", "Explanation")
DEFAULT_PLUGINS = runs.default_plugins


def plugins_for(variant: str) -> list:
    plugins = DEFAULT_PLUGINS()
    if variant == "c, figures at start and end only":
        for plugin in plugins:
            plugin.figure_every_n_epochs = 10**9
    if variant == "c, dense plugins only":
        plugins = [plugin for plugin in plugins if type(plugin).__name__ in DENSE]
    return plugins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench_args = argparse.Namespace(steps=args.steps, steps_per_epoch=10, batch_size=256, lr=3e-3, warmup_steps=20,
                                    target=0.99, steps_per_call=10, precision="32-true")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = ["b", "c", "c, figures at start and end only", "c, dense plugins only"]
    results = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="prevpos-plugins-ab-") as scratch:
        for repeat in range(args.repeats):
            for number, variant in enumerate(variants):
                runs.default_plugins = lambda: plugins_for(variant)
                try:
                    result = runs.run_one(variant[0], bench_args, device, f"{scratch}/{repeat}-{number}")
                finally:
                    runs.default_plugins = DEFAULT_PLUGINS
                results[variant].append(result)
                print(f"repeat {repeat + 1}: {variant:<34} {result['steps_per_s']:7.1f} steps/s  train "
                      f"{result['train_s']:6.2f} s  end wait {result['end_s']:5.2f} s", flush=True)
    b_train = statistics.median(r["train_s"] for r in results["b"])
    print(f"medians of {args.repeats} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}:")
    for variant, rows in results.items():
        train = statistics.median(r["train_s"] for r in rows)
        print(f"{variant:<34} {statistics.median(r['steps_per_s'] for r in rows):7.1f} steps/s  train {train:6.2f} s "
              f"({train / b_train:.3f} x b)  end wait {statistics.median(r['end_s'] for r in rows):5.2f} s")


if __name__ == "__main__":
    main()
