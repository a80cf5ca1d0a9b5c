"""Steps to a target held-out accuracy for several peak lrs, warm-ups and seeds: the plain loop of `bench`, stopped
at the target, with the schedule of a run of `--total` steps (warm-up, then cosine to lr/10).
    python scripts/lr_sweep.py --batch 4096 --lrs 1e-2,1.5e-2 --warmups 20,10 --seeds 0,1,2   (CPU: ~40 s a run)
On a CPU it found lr 1.5e-2 with 10 warm-up steps 60 steps to 0.99 in each of 3 seeds, against 75 for gpu.yaml;
on an H100 that recipe took 80 steps and spiked harder in a long run, so gpu.yaml kept its own (see its comments)."""

import argparse

import torch

from prevpos.bench.baseline import PlainTraining, held_out_accuracy


def steps_to_target(batch: int, lr: float, warmup: int, seed: int, total: int, every: int, most: int, target: float,
                    device: torch.device) -> tuple[int | None, list[float]]:
    training = PlainTraining(device, lr, total, warmup, init_seed=seed, data_seed=seed)
    held_out = training.held_out(2048, 256, seed=1)  # the same set whatever the seed (fit's default val set)
    accuracies = []
    for step in range(1, most + 1):
        training.step(batch)
        if step % every == 0:
            accuracies.append(held_out_accuracy(training.model, held_out))
            if accuracies[-1] >= target:
                return step, accuracies
    return None, accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--lrs", default="1e-2,1.5e-2,2e-2")
    parser.add_argument("--warmups", default="20,10,5")
    parser.add_argument("--seeds", default="0", help="init and batch seeds (the held-out set stays the same)")
    parser.add_argument("--total", type=int, default=600, help="length of the run whose schedule is used")
    parser.add_argument("--every", type=int, default=5, help="validate every N steps")
    parser.add_argument("--most", type=int, default=150, help="give up after N steps")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in map(int, args.seeds.split(",")):
        for lr in map(float, args.lrs.split(",")):
            for warmup in map(int, args.warmups.split(",")):
                step, accuracies = steps_to_target(args.batch, lr, warmup, seed, args.total, args.every, args.most,
                                                   args.target, torch.device(args.device))
                print(f"seed {seed}  lr {lr:g}  warm-up {warmup:3d}: {args.target} at step {step}   "
                      f"last val acc {[round(a, 3) for a in accuracies[-4:]]}", flush=True)


if __name__ == "__main__":
    main()
