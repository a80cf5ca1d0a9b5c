#!/usr/bin/env bash
# seeds: the default experiment for N seeds (weight init AND data stream), then one report across them — do all
# seeds learn the same algorithm? Runs one after another (LightningCLI has no sweep; the CPU has 2 cores anyway).
#   bash experiments/seeds.sh            # 5 seeds -> lightning_logs/seeds/seed_{0..4}, lightning_logs/seeds/report.html
#   bash experiments/seeds.sh 8 --config experiments/long_context.yaml   # N, then any extra `fit` options
#   measured: (filled in below after the run)
set -euo pipefail
n="${1:-5}"
shift || true
for seed in $(seq 0 $((n - 1))); do
  if [ -e "lightning_logs/seeds/seed_$seed/config.yaml" ]; then
    echo "lightning_logs/seeds/seed_$seed exists: move lightning_logs/seeds away to start over" >&2
    exit 2
  fi
done
for seed in $(seq 0 $((n - 1))); do
  python -m prevpos fit "$@" --model.init_seed "$seed" --data.seed "$seed" \
    --trainer.logger.init_args.name seeds --trainer.logger.init_args.version "seed_$seed" \
    --trainer.enable_progress_bar false
done
python -m prevpos report $(for seed in $(seq 0 $((n - 1))); do echo "lightning_logs/seeds/seed_$seed"; done)
