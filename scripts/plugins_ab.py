"""Where (c)'s extra time goes: `bench`'s (b) and (c) beside variants of (c), alternating on one machine.
    python scripts/plugins_ab.py [--steps 600] [--repeats 3]        (a GPU picks itself; ~4 min on an H100)
    python scripts/plugins_ab.py --batch_size 8 --probe_size 8      (CPU: steps and analyses bound by Python, as
                                                                     on a GPU, so the GIL is what they share)
    python scripts/plugins_ab.py --variants b "b, fused AdamW" --batch_size 4096 --lr 1e-2 --steps_per_epoch 25
                                                                    (some variants only; gpu.yaml's recipe)
Variants: (b) with train/loss and train/acc on the progress bar (before they left it: a host read per step); (b)
with torch's fused AdamW, and with its default one (docs/speed.md change 11 and lease 4: one of the two is (b)); (c)
as `bench` runs it on a GPU (analyses in the analysis process, forced on a CPU too); (c) with the analyses in a
thread of the training process (before prevpos/analysis/worker.py); (c) with the analysis process's model on the
CPU (on a GPU: do its kernels slow training's, as another process's CUDA context?); (c) with TensorBoard's
pure-Python event checksums (before
prevpos/fast/tensorboard_crc.py); (c) drawing figures every 10 epochs in the dense phase too (before change 12); (c)
drawing figures only at step 0 and at the end. Each run's line is printed as it finishes."""

import argparse
import os
import statistics
import tempfile
from functools import partial

import torch
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer

from prevpos.analysis import session
from prevpos.bench import runs
from prevpos.fast import tensorboard_crc
from prevpos.fast import training as fast_path
from prevpos.module import PrevTokenModel
from prevpos.workers import analysis_process

DEFAULT_PLUGINS, DATA, INSTALL_CRC = runs.default_plugins, runs.PrevTokenData, tensorboard_crc.install
ANALYSIS_COPY = session.analysis_copy
PURE_PYTHON_CRC = pywrap_tensorflow.masked_crc32c  # nothing has installed the C one yet
LOG = PrevTokenModel.log
ADAMW = fast_path.adamw
VARIANTS = ["b", "b, train metrics on the progress bar", "b, fused AdamW", "b, unfused AdamW", "c",
            "c, analyses in a thread", "c, analyses on the CPU", "c, pure-Python event checksums",
            "c, figures every 10 epochs", "c, figures at start and end only"]


def plugins_for(variant: str) -> list:
    plugins = DEFAULT_PLUGINS()
    for plugin in plugins:
        if variant == "c, figures at start and end only":
            plugin.figure_every_n_epochs = plugin.dense_figure_every_n_epochs = 10**9
        elif variant == "c, figures every 10 epochs":
            plugin.dense_figure_every_n_epochs = plugin.figure_every_n_epochs
    return plugins


def log_with_bar(self, name, value, *args, **kwargs):
    return LOG(self, name, value, *args, **{**kwargs, "prog_bar": kwargs.get("prog_bar") or name.startswith("train/")})


def analysis_copy_on_cpu(model):
    model_copy = ANALYSIS_COPY(model).to("cpu", print_details=False)
    model_copy.cfg.device = "cpu"
    return model_copy


def set_checksums(pure_python: bool) -> None:
    if pure_python:
        record_writer.masked_crc32c = pywrap_tensorflow.masked_crc32c = PURE_PYTHON_CRC
        tensorboard_crc.install = lambda: False
    else:
        tensorboard_crc.install = INSTALL_CRC
        INSTALL_CRC()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--probe_size", type=int, default=256, help="sequences the analyses read (data.probe_size)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup_steps", type=int, default=20)
    parser.add_argument("--steps_per_epoch", type=int, default=10)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS, metavar="VARIANT",
                        help=f"the variants to run, of: {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args()
    bench_args = argparse.Namespace(steps=args.steps, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                                    lr=args.lr, warmup_steps=args.warmup_steps, target=0.99, steps_per_call=10,
                                    precision="32-true")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    analysis_process.prestart()  # as `fit` and `bench` do on a GPU: its imports overlap the (b) runs
    results = {variant: [] for variant in args.variants}
    runs.PrevTokenData = partial(DATA, probe_size=args.probe_size)
    with tempfile.TemporaryDirectory(prefix="prevpos-plugins-ab-") as scratch:
        for repeat in range(args.repeats):
            for number, variant in enumerate(args.variants):
                runs.default_plugins = lambda: plugins_for(variant)
                set_checksums(pure_python="pure-Python" in variant)
                PrevTokenModel.log = log_with_bar if "progress bar" in variant else LOG
                fast_path.adamw = partial(ADAMW, fused="unfused" not in variant) if "AdamW" in variant else ADAMW
                os.environ["PREVPOS_ANALYSIS"] = "thread" if "in a thread" in variant else "process"
                session.analysis_copy = analysis_copy_on_cpu if "on the CPU" in variant else ANALYSIS_COPY
                try:
                    result = runs.run_one(variant[0], bench_args, device, f"{scratch}/{repeat}-{number}")
                finally:
                    runs.default_plugins = DEFAULT_PLUGINS
                    set_checksums(pure_python=False)
                    PrevTokenModel.log = LOG
                    fast_path.adamw = ADAMW
                    os.environ.pop("PREVPOS_ANALYSIS")
                    session.analysis_copy = ANALYSIS_COPY
                results[variant].append(result)
                print(f"repeat {repeat + 1}: {variant:<38} {result['steps_per_s']:7.1f} steps/s  train "
                      f"{result['train_s']:6.2f} s  end wait {result['end_s']:5.2f} s  0.99 after "
                      f"{result['time_to_target_s'] or float('nan'):5.2f} s", flush=True)
    b_train = statistics.median(r["train_s"] for r in results[args.variants[0]])
    print(f"medians of {args.repeats} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, "
          f"batch {args.batch_size}, lr {args.lr}, probe {args.probe_size} (x: train time over {args.variants[0]}'s):")
    for variant, rows in results.items():
        train = statistics.median(r["train_s"] for r in rows)
        print(f"{variant:<38} {statistics.median(r['steps_per_s'] for r in rows):7.1f} steps/s  train {train:6.2f} s "
              f"({train / b_train:.3f} x)  end wait {statistics.median(r['end_s'] for r in rows):5.2f} s  0.99 after "
              f"{statistics.median(r['time_to_target_s'] or float('nan') for r in rows):5.2f} s")


if __name__ == "__main__":
    main()
