#!/usr/bin/env bash
# The GPU checks, prepared to run at once when a GPU is lent:
#   here:       bash ../shared/device/prepare.sh
#   on device:  carry [".device"], command: bash .device/check.sh        (the quick check, about 8 minutes)
#                                           bash .device/check.sh full   (the paper's slimming VGG-19 row, 9.5 minutes)
# check.sh sources setup_remote.sh (wheels, CIFAR-10 into $CIFAR_ROOT), then runs this script.
#
# quick (default): each step with its own timeout, each run even when an earlier one failed:
#   1. the CUDA-only tests (pytest -m gpu);
#   2. scripts/bench_epoch.py, VGG-19-BN batch 64: DataLoader reference (1 and 8 workers), eager, fast path, an
#      epoch's evaluation and checkpoint, one training alone and through the scheduler, and 1, 2, 4 and 6
#      trainings in flight (the concurrency curve);
#   3. a short slimming VGG-19 comparison of two seeds, every stage in flight together, on the fast path.
# full: `method=slimming model=vgg19` on the paper's schedule (schedule=cifar: 160 epochs; finetune 40;
#   Scratch-B's budget; all four strategies), one seed, the fast path, on $CIFAR_ROOT, cut at 540 s. It prints
#   the table and the schedule (each stage's start, end, wall time, epochs, s/epoch, compile time); cut short,
#   each stage's epochs done, s/epoch and the seconds it still needed. STEP=graph captures the eager step in one
#   CUDA graph instead of compiling it (train.compile=graph: seconds to capture against inductor's tens of seconds a
#   stage, slower steps); the quick check's bench prints after how many epochs of a stage compiling pays off.
# Everything lands under $OUT; summary.txt has one line per step with its exit status.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
MODE=${1:-quick}
FAST=(train.precision=bf16 train.channels_last=true "train.compile=${STEP:-on}" "train.backend=${BACKEND:-inductor}")

step() {  # step NAME SECONDS COMMAND...: run with a timeout (SIGTERM: the run logs where it stood), log to $OUT/NAME.txt
  local name=$1 limit=$2 t0 rc
  shift 2
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  tail -n 40 "$OUT/$name.txt"
}

{ nvidia-smi -L; $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } \
  > "$OUT/machine.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu_use.csv" 2>/dev/null &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT

if [ "$MODE" = full ]; then
  if [ -z "${CIFAR_ROOT:-}" ]; then echo "full: CIFAR_ROOT unset (source .device/setup_remote.sh)" | tee -a "$OUT/summary.txt"; exit 1; fi
  step full_row 540 $PY -m prunebench method=slimming model=vgg19 dataset.root="$CIFAR_ROOT" progress=false \
    "${FAST[@]}" cache_dir=/tmp/prunebench-stages hydra.run.dir=/tmp/full_row
  cp /tmp/full_row/results.md "$OUT/full_row_results.md" 2>/dev/null
  cat "$OUT/full_row_results.md" 2>/dev/null
  echo "== the schedule"
  sed -n '/schedule, \|where each stage stood/,/^\[/p' "$OUT/full_row.txt" | tee "$OUT/full_row_schedule.txt"
  cat "$OUT/summary.txt"
  exit 0
fi

ROOT_ARGS=()
if [ -n "${CIFAR_ROOT:-}" ]; then ROOT_ARGS=(--root "$CIFAR_ROOT"); else echo "CIFAR_ROOT unset: benchmark on synthetic images" | tee -a "$OUT/summary.txt"; fi
step gpu_tests 150 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step bench_epoch 220 $PY scripts/bench_epoch.py "${ROOT_ARGS[@]}" --model vgg19 --batch 64 --steps 200 \
  --warmup 10 --workers 1,8 --in-flight 1,2,4,6
if [ -n "${CIFAR_ROOT:-}" ]; then
  step slimming_vgg19 150 $PY -m prunebench method=slimming model=vgg19 dataset.root="$CIFAR_ROOT" \
    "seeds=[0,1]" progress=false schedule=short schedule.epochs=3 strategy.finetune.epochs=2 \
    "strategies=[finetune,scratch_b]" "${FAST[@]}" cache_dir=/tmp/prunebench-stages hydra.run.dir=/tmp/slimming_vgg19
  cp /tmp/slimming_vgg19/results.md "$OUT/slimming_vgg19_results.md" 2>/dev/null  # few files come back: the table
fi
echo "== done; results under $OUT"
cat "$OUT/summary.txt"
