#!/usr/bin/env bash
# genlab's GPU check: speed per family over batch sizes 128..8192 (fp32, bf16, torch.compile with CUDA
# graphs), seconds per 60k-image epoch, peak GPU memory, and CPU-vs-GPU loss agreement. Fits in 5 minutes
# on one H100/H200. Writes benchmarks/results/gpu_check.{json,md}; exit code 1 if CPU and GPU disagree.
#   benchmarks/gpu_check.sh                      # on the GPU machine
#   benchmarks/gpu_check.sh --device cpu --tiny  # the dry run (what tests/test_benchmark_gpu_check.py runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec timeout 300 python benchmarks/gpu_check.py "$@"
