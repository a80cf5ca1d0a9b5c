#!/usr/bin/env bash
# seeds: the default experiment for N seeds (weight init AND data stream), then one report across them — do all
# seeds learn the same algorithm? Runs one after another (LightningCLI has no sweep; the CPU has 2 cores anyway).
#   bash experiments/seeds.sh            # 5 seeds -> lightning_logs/seeds/seed_{0..4}, lightning_logs/seeds/report.html
#   bash experiments/seeds.sh 8 --config experiments/long_context.yaml   # N, then any extra `fit` options
#                                        # -> lightning_logs/seeds_long_context/seed_{0..7}: a folder per config
#   measured (CPU, seeds 0-4, 600 steps each): all five learn the same algorithm, with the same timing. Final val acc
#   0.9976 ± 0.0002 (min 0.9973); prev-token score 0.680 ± 0.001; OV copy top-1 1.0 in all; zero-ablation loss
#   direct 6.30 ± 0.22 > qk_comp 1.31 ± 0.11 > k_comp 0.09 > q_comp 0.04 (same ranking in every seed); recovered:
#   restricted 95.3% ± 1.3, algorithm 99.6% ± 0.1, excluded 72.4% ± 1.9; acc at length 10/20/40 0.998/0.926/0.667.
#   First crossings identical to ±10 steps: copy 30, prev-token 80, val acc 0.9 at 99, 0.99 at 259-279.
set -euo pipefail
n="${1:-5}"
shift || true
name=seeds  # seeds_NAME for --config .../NAME.yaml: another experiment's seeds are not this one's
previous=""
for arg in "$@"; do
  case "$arg" in --config=*) name="seeds_$(basename "${arg#--config=}" .yaml)" ;; esac
  if [ "$previous" = "--config" ]; then name="seeds_$(basename "$arg" .yaml)"; fi
  previous="$arg"
done
for seed in $(seq 0 $((n - 1))); do
  if [ -e "lightning_logs/$name/seed_$seed/config.yaml" ]; then
    echo "lightning_logs/$name/seed_$seed exists: move lightning_logs/$name away to start over" >&2
    exit 2
  fi
done
for seed in $(seq 0 $((n - 1))); do
  # seed_everything too: nothing draws from the global seed (the weights are identical), but fit says "Seed set to N"
  python -m prevpos fit "$@" --seed_everything "$seed" --model.init_seed "$seed" --data.seed "$seed" \
    --trainer.logger.init_args.name "$name" --trainer.logger.init_args.version "seed_$seed" \
    --trainer.enable_progress_bar false
done
python -m prevpos report $(for seed in $(seq 0 $((n - 1))); do echo "lightning_logs/$name/seed_$seed"; done)
