#!/usr/bin/env bash
# scripts/gpu_check.sh — the GPU checks and measurements, in one run on a machine with a CUDA GPU.
#   bash scripts/gpu_check.sh            (from the repo root; results and logs go to $OUT, default ./out)
#   expect: four `bench` tables (batch 256 default recipe; the fast path at its own epoch length;
#   experiments/gpu.yaml's batch 4096 / lr 1e-2 in 32-true and bf16-mixed), the fast-path and writer tests
#   passing on the GPU, and a short `fit --config experiments/gpu_fast.yaml`. ~5 minutes on an H100.
#   RERUN=1 bash scripts/gpu_check.sh, most wanted first: runs a-c at batch 256; where a gpu.yaml fit command's time
#   goes and what its end waits for (scripts/fit_phases.py); runs a-b with gpu.yaml's recipe; the fast path without
#   and with the plugins (d, e); the tests marked cuda (pytest -m cuda); (c) with the analysis process on the GPU or
#   the CPU (scripts/plugins_ab.py); what each piece of fit costs a step (scripts/step_ladder.py). Lease 5
#   ran it, without the ladder, in 388 s. EXTRA=1 adds what lease 4 measured (~3 minutes more): b in bf16-mixed, a
#   fit of gpu.yaml 10x as long (stability), and gpu.yaml on a terminal with the bar at 10 and 100 redraws a second.
#   LADDER=1 bash scripts/gpu_check.sh: the ladder alone, with cProfile, host reads and import times (~200 s).
# Packages the machine lacks (TransformerLens 3.9 and what it imports, jsonargparse, google-crc32c) are installed
# from wheels in .whl/, downloaded beforehand for the machine's Python (3.12):
#   pip download -d .whl --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     transformer-lens==3.9.0 jsonargparse beartype better-abc datasets dill docstring-parser fancy-einsum \
#     multiprocess typeguard typeshed-client google-crc32c
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Bytecode as an installed package has it (pip compiles at install): without it each process (the analysis process
# too) compiled the wheels' modules (TransformerLens, datasets, ...) from source at every import. Lease 6's imports
# took 18.7 s without it, ~1.9 s of them TransformerLens's; with it: not yet measured.
unset PYTHONDONTWRITEBYTECODE
QUICK=${QUICK:-0}  # QUICK=1: tiny sizes, to try this script on a CPU
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }  # the clock: how long each part took, for the next plan

if ! python3 -c "import transformer_lens, jsonargparse, google_crc32c" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  # datasets 5 wants a newer pyarrow than an image may have: .whl/fallback holds datasets 4.4.1 and its dill, multiprocess
  if ! python3 -c "import transformer_lens" 2>"$OUT/import_error.txt" && [ -d .whl/fallback ]; then
    tail -2 "$OUT/import_error.txt"; echo "== falling back to .whl/fallback" | tee -a "$OUT/log.txt"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/fallback/*.whl || exit 1
  fi
  python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1
fi
if ! python3 -c "import prevpos_plugins" 2>/dev/null; then  # not pip-installed here: the source tree instead
  mkdir -p /tmp/src && ln -sfn "$PWD/plugins" /tmp/src/prevpos_plugins
  export PYTHONPATH="$PWD:/tmp/src:${PYTHONPATH:-}"
fi
log "machine"
import_time() { ( TIMEFORMAT="import prevpos.lightning_cli (torch, Lightning, TransformerLens) %R s" && time python3 -c \
  "import prevpos.lightning_cli" ) 2>&1 | grep -v Warn | tee -a "$OUT/tables.txt"; }
echo -n "first time (writes whatever bytecode is missing): " | tee -a "$OUT/tables.txt"; import_time
echo -n "again: " | tee -a "$OUT/tables.txt"; import_time
{ nvidia-smi -L; python3 -c "import torch, lightning, transformer_lens; print('torch', torch.__version__, 'lightning',
  lightning.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "import os; from prevpos.analysis.render import worker_count; print('cores', os.cpu_count(), 'usable',
  len(os.sched_getaffinity(0)), 'figure processes', worker_count())"; } 2>&1 | tee -a "$OUT/log.txt" | grep -v Warning

if [ "$QUICK" = 1 ]; then S=20; E=10; R=1; FS=40; FE=20; BS=100; else S=600; E=10; R=3; FS=1000; FE=100; BS=300; fi
B4=4096; [ "$QUICK" = 1 ] && B4=256
bench() { local name=$1; shift; log "bench $name: $*"
  timeout 300 python3 -m prevpos bench --out "$OUT/bench_$name.json" "$@" 2>>"$OUT/log.txt" | tee -a "$OUT/tables.txt"; }

LS=400; [ "$QUICK" = 1 ] && LS=40
if [ "${LADDER:-0}" = 1 ]; then  # what each piece of fit costs a step on this GPU, where it reads the host, imports
  log "step ladder (scripts/step_ladder.py)"
  timeout 300 python3 scripts/step_ladder.py --steps $LS --repeats 2 --profile a b --syncs --top 40 2>>"$OUT/log.txt" \
    | tee -a "$OUT/tables.txt"
  python3 -X importtime -c "import prevpos.lightning_cli" 2>"$OUT/importtime.txt" >/dev/null
  sort -t'|' -k2 -n -r "$OUT/importtime.txt" | head -25 | tee -a "$OUT/tables.txt"
  log "done"; exit 0
fi
# ONLY="b256 phases gpu_yaml fast tests ladder plugins": the RERUN parts to run (default: all), e.g. in two calls
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
if [ "${RERUN:-0}" = 1 ]; then  # a later lease: the numbers the latest changes moved, most wanted first
  want b256 && bench b256 --runs abc --steps $S --steps_per_epoch $E --repeats $R
  want phases && log "where a gpu.yaml command's time goes, and what its end waits for (scripts/fit_phases.py)"
  PHASE_ARGS="--config experiments/gpu.yaml"
  [ "$QUICK" = 1 ] && PHASE_ARGS="$PHASE_ARGS --trainer.max_epochs 2 --data.batch_size 64 --trainer.accelerator cpu"
  want phases && timeout 120 python3 scripts/fit_phases.py $PHASE_ARGS 2>>"$OUT/log.txt" | tee -a "$OUT/tables.txt"
  # experiments/gpu.yaml's recipe, for its full 600 steps (the cosine decay runs over --steps; QUICK: 100)
  read -r LR WARMUP EVERY EPOCHS < <(python3 -c "import yaml; c = yaml.safe_load(open('experiments/gpu.yaml'))
print(c['model']['lr'], c['model'].get('warmup_steps', 20), c['data']['steps_per_epoch'], c['trainer']['max_epochs'])")
  GS=$((EVERY * EPOCHS)); [ "$QUICK" = 1 ] && GS=100
  GPU_YAML="--batch_size $B4 --lr $LR --warmup_steps $WARMUP --steps $GS --steps_per_epoch $EVERY"
  want gpu_yaml && bench b4096_gpu_yaml --runs ab $GPU_YAML --repeats 3  # 3: the median is not the cold first run (the JSON has it)
  want fast && bench fast --runs de --lr 1e-2 --steps $FS --steps_per_epoch $FE --repeats 3
  want tests && log "tests (CUDA)"
  want tests && timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/ 2>&1 | tail -12 | tee -a "$OUT/log.txt"
  want plugins && log "where (c)'s extra time goes (scripts/plugins_ab.py: the analysis process on the GPU or the CPU)"
  want plugins && timeout 300 python3 scripts/plugins_ab.py --steps $S --repeats 2 --variants b c \
    "c, analyses on the CPU" 2>>"$OUT/log.txt" | tee -a "$OUT/tables.txt"
  want ladder && log "what each piece of fit costs a step (scripts/step_ladder.py)"
  want ladder && timeout 200 python3 scripts/step_ladder.py --steps $LS --repeats 2 2>>"$OUT/log.txt" | tee -a "$OUT/tables.txt"
  if [ "${EXTRA:-0}" = 1 ]; then  # measured in lease 4; again when the recipe, the bar or the precision changes
    bench b4096_gpu_yaml_bf16 --runs b $GPU_YAML --repeats 1 --precision bf16-mixed
    log "fit --config experiments/gpu.yaml, 10x as long, no plugins (stability)"
    LONG_ARGS="--trainer.max_epochs $((EPOCHS * 10)) --trainer.callbacks=[] --trainer.enable_progress_bar false"
    [ "$QUICK" = 1 ] && LONG_ARGS="--trainer.max_epochs 2 --data.steps_per_epoch 2 --data.batch_size 64 --trainer.callbacks=[] --trainer.enable_progress_bar false --trainer.accelerator cpu"
    ( cd "$(mktemp -d)" && TIMEFORMAT="fit wall %R s" && time timeout 240 python3 -m prevpos fit \
        --config "$OLDPWD/experiments/gpu.yaml" $LONG_ARGS >fit.log 2>&1; tail -1 fit.log
      python3 "$OLDPWD/scripts/run_summary.py" lightning_logs/gpu/version_0 ) 2>&1 | grep -v Warn | tee -a "$OUT/log.txt"
    log "fit --config experiments/gpu.yaml on a terminal, progress bar redrawn 10 vs 100 times a second"
    BAR_ARGS="--config experiments/gpu.yaml --trainer.callbacks=[]"
    [ "$QUICK" = 1 ] && BAR_ARGS="$BAR_ARGS --trainer.max_epochs 2 --data.batch_size 64 --trainer.accelerator cpu"
    timeout 200 python3 scripts/bar_cost.py --repeats 2 $BAR_ARGS 2>&1 | grep -v Warn | tee -a "$OUT/log.txt"
  fi
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
