#!/usr/bin/env bash
# The one prepared GPU check: what a short GPU window is for, as one command that should finish within
# 10 minutes on one H100/H200, every step's output in one folder.
#
#     python benchmarks/cifar_subset.py data/gpu --archive ../shared/data/cifar-10-python.tar.gz   # here, once
#     bash benchmarks/gpu_check.sh [LOGS]      # on the GPU machine; LOGS: default $OUT, else runs/gpu-check
#
# It runs minivit from this checkout (PYTHONPATH) with what the machine has: CuPy, PyTorch with CUDA and
# pytest (pytest-xdist runs the tests in parallel where it is installed). The training runs read the
# CIFAR-10 cache in $MINIVIT_DATA (default data/gpu, made by the first command: the whole dataset is
# bigger than the 64 MiB that travels with a working tree). Each step has its own time limit, so one
# that hangs cannot take the window, and writes LOGS/<step>.log; LOGS/summary.txt lists each step's
# exit status and seconds, and `tail` of each log is the place to read its figures.
#
#   env        the GPU, driver, CUDA, Python, NumPy, CuPy and torch versions
#   tests      every CuPy test (each once: CuPy runs the plain ops, so there is no kernels twin)
#   vit-step   the tiny ViT's training step against PyTorch eager, batch 256
#   igpt-step  iGPT's gpu preset step against PyTorch with SDPA, batch 64
#   generate   cached against uncached sampling, cpu and gpu presets
#   gpu        the gpu recipe for 2 epochs;  igpt-gpu  the igpt-gpu recipe on 2,000 images for 1 epoch
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$LOGS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MINIVIT_DATA=${MINIVIT_DATA:-data/gpu}
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, record its status and time
    local name=$1 limit=$2 start status
    shift 2
    start=$(date +%s)
    echo "== $name: $*" | tee "$LOGS/$name.log"
    timeout --kill-after=10 "$limit" "$@" >>"$LOGS/$name.log" 2>&1
    status=$?
    printf '%-10s exit %3d  %4d s  (limit %d s)\n' "$name" "$status" "$(($(date +%s) - start))" "$limit" | tee -a "$LOGS/summary.txt"
}

: >"$LOGS/summary.txt"
step env 30 bash -c "nvidia-smi; $PY -c 'import sys, numpy, cupy, torch; print(sys.version); print(\"numpy\", numpy.__version__, \"cupy\", cupy.__version__, \"CUDA runtime\", cupy.cuda.runtime.runtimeGetVersion(), \"driver\", cupy.cuda.runtime.driverGetVersion(), \"torch\", torch.__version__, torch.cuda.is_available())'"
xdist=$($PY -c 'import xdist' 2>/dev/null && echo "-n 8")
step tests 200 $PY -m pytest tests -k cupy $xdist -q -p no:cacheprovider --durations 15
step vit-step 60 $PY benchmarks/train_step.py --backend cupy --preset tiny --batch-size 256 --rounds 3 --steps 10
step igpt-step 80 $PY benchmarks/train_step.py --backend cupy --model igpt --preset gpu --batch-size 64 --torch-sdpa --rounds 3 --steps 3
step generate 60 bash -c "$PY benchmarks/generate.py --backend cupy --rounds 2 && $PY benchmarks/generate.py --backend cupy --preset gpu --rounds 1"
step gpu 100 $PY -m minivit train --recipe gpu --epochs 2 --warmup-epochs 0.5 --run-dir "$LOGS/gpu-run" --no-progress
step igpt-gpu 60 $PY -m minivit train --recipe igpt-gpu --epochs 1 --train-subset 2000 --test-subset 500 --run-dir "$LOGS/igpt-gpu-run" --no-progress
cat "$LOGS/summary.txt"
