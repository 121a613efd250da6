#!/usr/bin/env bash
# The GPU checks and benchmarks as run on a lent H100/H200 (figures: benchmarks/results/*gpu*).
# Usage, from the repository root: OUT=<folder> bash benchmarks/gpu_check.sh [bench args...]
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-/tmp/fxpath_gpu}"
mkdir -p "$OUT"
python3 -c "import fxpath.passes" 2>/dev/null || ln -sfn ../passes fxpath/passes  # no install
python3 -c "import torch, torchvision, timm; print(torch.__version__, torchvision.__version__,
timm.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$OUT/versions.txt"
timeout 200 python3 -m pytest tests/test_cuda.py tests/test_precision.py tests/test_graphs.py \
    -m '' -q \
    -p no:cacheprovider -p no:logging -W ignore 2>&1 | tee "$OUT/test_cuda.log"
timeout 40 python3 benchmarks/kernel_count.py --device cuda 2>&1 | grep -v USDT \
    | tee "$OUT/kernels.log"
timeout 200 python3 benchmarks/bench_path.py --device cuda --threads 16 "$@" 2>&1 \
    | tee "$OUT/bench.log"
timeout 60 python3 benchmarks/bench_path.py --device cuda --threads 16 --scaling "$@" 2>&1 \
    | tee "$OUT/scaling.log"
# what reading the live weights costs on the GPU (old cache hit against the live call)
timeout 90 python3 benchmarks/live_params.py --device cuda --models resnet18 resnet50 vgg16 \
    --repeats 11 2>&1 | tee "$OUT/live_params.log"
cp benchmarks/results/*gpu* benchmarks/results/*cuda* "$OUT/" 2>/dev/null
exit 0
