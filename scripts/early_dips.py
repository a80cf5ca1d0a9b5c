"""gpu.yaml's recipe at the start of a run 10x its length: does val acc fall back after it first reaches 0.99?
The plain loop of `bench` (batch 4096, lr 1e-2, 20 warm-up steps, cosine over --total steps, so the lr stays near
its peak here), validated every 25 steps as gpu.yaml does; AdamW's beta2 and eps as options.
    python scripts/early_dips.py --seed 2                 (CPU, one thread: ~8 minutes for 700 steps)
    python scripts/early_dips.py --seed 2 --eps 1e-5
On our CPU (2026-11-28) seed 2 fell to 0.840 at step 525 and recovered by step 600, as lease 4's H100 run fell to
0.640; seeds 0 and 1 held >= 0.99. With eps 1e-5 seed 2 held but seed 1 fell to 0.888, and beta2 0.95 spiked seed 0:
neither was taken (experiments/gpu.yaml)."""

import argparse
import json

import torch

from prevpos.bench.baseline import PlainTraining, held_out_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="init and batch seed; the held-out set is seed + 1's")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--total", type=int, default=6000, help="length of the run whose schedule is used")
    parser.add_argument("--beta2", type=float, default=0.999)
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    training = PlainTraining(torch.device(args.device), 1e-2, args.total, 20, init_seed=args.seed, data_seed=args.seed)
    held_out = training.held_out(2048, 4096, args.seed + 1)
    for group in training.optimizer.param_groups:
        group.update(eps=args.eps, betas=(group["betas"][0], args.beta2))
    losses, accuracies = [], []
    for step in range(1, args.steps + 1):
        losses.append(training.step(4096))
        if step % 25 == 0:
            accuracies.append((step, round(held_out_accuracy(training.model, held_out), 4)))
    first = next((step for step, accuracy in accuracies if accuracy >= 0.99), None)
    after = [accuracy for step, accuracy in accuracies if first is not None and step >= first]
    print(json.dumps({"seed": args.seed, "beta2": args.beta2, "eps": args.eps, "first_0.99": first,
                      "lowest_after": min(after, default=None),
                      "largest_loss_after_100": torch.stack(losses[100:]).max().item() if len(losses) > 100 else None,
                      "val_acc": accuracies}))


if __name__ == "__main__":
    main()
