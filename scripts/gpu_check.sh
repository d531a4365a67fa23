#!/usr/bin/env bash
# The GPU check of the fast path (README "Speed"), prepared to run at once when a GPU is lent:
#   here:       bash ../shared/device/prepare.sh
#   on device:  carry [".device"], command: bash .device/check.sh   (sources setup_remote.sh, then runs this)
# Steps, each with its own timeout, each run even when an earlier one failed (about 8 minutes on one H100/H200):
#   1. the CUDA-only tests (pytest -m gpu): the whole step captured in one CUDA graph equals the eager step;
#   2. scripts/bench_epoch.py, VGG-19-BN batch 64: DataLoader reference (1 and 8 workers), eager, fast path,
#      5 seeds interleaved on the fast path (train.seed_batching=interleaved) as a multiple of one seed;
#   3. a short slimming VGG-19 comparison of two seeds (seeds=[0,1], interleaved; unpruned, sparse, pruned,
#      finetune) on $CIFAR_ROOT with the fast path (bf16, channels_last, compiled).
# Everything lands under $OUT (the slimming run's folder under /tmp, its results.md copied); summary.txt
# has one line per step with its exit status.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
ROOT_ARGS=()
if [ -n "${CIFAR_ROOT:-}" ]; then ROOT_ARGS=(--root "$CIFAR_ROOT"); else echo "CIFAR_ROOT unset: benchmark on synthetic images" | tee -a "$OUT/summary.txt"; fi

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.txt, never stop the script
  local name=$1 limit=$2 t0 rc
  shift 2
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "$name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.txt"
}

{ nvidia-smi -L; $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } \
  > "$OUT/machine.txt" 2>&1
step gpu_tests 190 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step bench_epoch 170 $PY scripts/bench_epoch.py "${ROOT_ARGS[@]}" --model vgg19 --batch 64 --steps 200 \
  --warmup 10 --workers 1,8 --loops reference,eager,fast,streams_fast --seeds 5
if [ -n "${CIFAR_ROOT:-}" ]; then
  step slimming_vgg19 175 $PY -m prunebench method=slimming model=vgg19 dataset.root="$CIFAR_ROOT" \
    "seeds=[0,1]" progress=false schedule=short schedule.epochs=3 strategy.finetune.epochs=2 "strategies=[finetune]" \
    train.precision=bf16 train.channels_last=true train.compile=on \
    cache_dir=/tmp/prunebench-stages hydra.run.dir=/tmp/slimming_vgg19
  cp /tmp/slimming_vgg19/results.md "$OUT/slimming_vgg19_results.md" 2>/dev/null  # few files come back: the table
fi
echo "== done; results under $OUT"
cat "$OUT/summary.txt"
