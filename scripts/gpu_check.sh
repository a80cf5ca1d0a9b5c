#!/usr/bin/env bash
# scripts/gpu_check.sh — the GPU checks and measurements, in one run on a machine with a CUDA GPU.
#   bash scripts/gpu_check.sh            (from the repo root; results and logs go to $OUT, default ./out)
#   expect: four `bench` tables (batch 256 default recipe; the fast path at its own epoch length;
#   experiments/gpu.yaml's batch 4096 / lr 1e-2 in 32-true and bf16-mixed), the fast-path and writer tests
#   passing on the GPU, and a short `fit --config experiments/gpu_fast.yaml`. ~5 minutes on an H100.
#   RERUN=1 bash scripts/gpu_check.sh: the GPU tests, the embedding A/B, runs a-c at batch 256 and a-b at 4096 (~4 min).
# Packages the machine lacks (TransformerLens 3.9 and what it imports, jsonargparse) are installed from
# wheels in .whl/ (see the README's GPU section for the download command).
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
QUICK=${QUICK:-0}  # QUICK=1: tiny sizes, to try this script on a CPU
log() { echo "== $*" | tee -a "$OUT/log.txt"; }

if ! python3 -c "import transformer_lens, jsonargparse" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
if ! python3 -c "import prevpos_plugins" 2>/dev/null; then  # not pip-installed here: the source tree instead
  mkdir -p /tmp/src && ln -sfn "$PWD/plugins" /tmp/src/prevpos_plugins
  export PYTHONPATH="$PWD:/tmp/src:${PYTHONPATH:-}"
fi
log "machine"
{ nvidia-smi -L; python3 -c "import torch, lightning, transformer_lens; print('torch', torch.__version__, 'lightning',
  lightning.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee -a "$OUT/log.txt" | grep -v Warning

if [ "$QUICK" = 1 ]; then S=20; E=10; R=1; FS=40; FE=20; BS=100; else S=600; E=10; R=3; FS=1000; FE=100; BS=300; fi
bench() { local name=$1; shift; log "bench $name: $*"
  timeout 300 python3 -m prevpos bench --out "$OUT/bench_$name.json" "$@" 2>>"$OUT/log.txt" | tee -a "$OUT/tables.txt"; }

if [ "${RERUN:-0}" = 1 ]; then  # a later lease: the GPU tests, then the numbers the overhead fixes moved
  log "tests (CUDA)"
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_fast_path.py tests/test_transformer.py 2>&1 | tail -3 | tee -a "$OUT/log.txt"
  log "embedding lookup"; timeout 120 python3 scripts/embedding_ab.py 2>&1 | grep -v "Warn\|Moving\|stopped\|Tip\|available\|LOCAL_RANK\|Loading" | tee -a "$OUT/log.txt"
  bench b256 --runs abc --steps $S --steps_per_epoch $E --repeats $R
  bench b4096 --runs ab --batch_size 4096 --lr 1e-2 --steps $BS --steps_per_epoch 25 --repeats 2
  grep -i "fail\|error" "$OUT/log.txt" | grep -v "^== " | head -5
  log "tables"; cat "$OUT/tables.txt"; exit 0
fi
bench b256 --steps $S --steps_per_epoch $E --repeats $R
bench fast --runs bd --lr 1e-2 --steps $FS --steps_per_epoch $FE --repeats $R
log "tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_fast_path.py tests/test_writer.py 2>&1 | tail -5 | tee -a "$OUT/log.txt"
bench b4096 --runs ab --batch_size 4096 --lr 1e-2 --steps $BS --steps_per_epoch 25 --repeats 2
bench b4096_bf16 --runs b --batch_size 4096 --lr 1e-2 --steps $BS --steps_per_epoch 25 --repeats 2 --precision bf16-mixed
log "fit --config experiments/gpu_fast.yaml (3 epochs)"
FIT_ARGS="--trainer.max_epochs 3 --trainer.enable_progress_bar false"
[ "$QUICK" = 1 ] && FIT_ARGS="$FIT_ARGS --trainer.accelerator cpu --data.batches_per_step 2"
( cd "$(mktemp -d)" && TIMEFORMAT="fit wall %R s" && time timeout 150 python3 -m prevpos fit \
    --config "$OLDPWD/experiments/gpu_fast.yaml" $FIT_ARGS >fit.log 2>&1; tail -2 fit.log
  python3 -c "
import glob
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(glob.glob('lightning_logs/*/version_0/events*')[0], size_guidance={'images': 0}).Reload()
print('val/acc by step', [(e.step, round(e.value, 4)) for e in ea.Scalars('val/acc')])
print(len(ea.Tags()['scalars']), 'scalar tags,', len(ea.Tags()['images']), 'image tags,',
      sum(len(ea.Images(t)) for t in ea.Tags()['images']), 'images')" ) 2>&1 | tee -a "$OUT/log.txt"
log "tables"
cat "$OUT/tables.txt"
