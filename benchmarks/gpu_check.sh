#!/usr/bin/env bash
# The GPU checklist in one script (DEVELOPERS.md, docs/performance.md): the CUDA tests, the standard
# task on CUDA eager and compiled (reduce-overhead = CUDA graphs), the transformer language
# model's samples/s (issue 13), and the width-4096, B = 4096,
# T = 20 bench with its ratio to torch.mm on the same shapes in the same run.
# Usage, from the repository root on a machine with a CUDA GPU:  bash benchmarks/gpu_check.sh [LOG]
# Each part has its own time limit so that one slow part cannot starve the others.
# SKIP_TESTS=1 skips the CUDA tests, SKIP_WIDE=1 the width-4096 bench.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu_check.log}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# an array, not a function: timeout(1) runs programs only
BENCH=("$PY" -m neuropc.cli bench --backend torch --device cuda --json)
{
  echo "## $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c 'import torch, numba, numpy; print("torch", torch.__version__, "numba", numba.__version__, "numpy", numpy.__version__)'
  echo "## CUDA tests"
  [ "${SKIP_TESTS:-0}" = 1 ] || timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests -k cuda
  echo "## standard task, eager"
  timeout 60 "${BENCH[@]}"
  echo "## standard task, compiled reduce-overhead"
  timeout 120 "${BENCH[@]}" --compile reduce-overhead
  echo "## transformer language model (PC-F_KL, d 128, seq 32, B 32), eager: samples/s"
  timeout 90 "${BENCH[@]}" --model transformer --timed 20
  [ "${SKIP_WIDE:-0}" = 1 ] && exit 0
  echo "## width 4096, B = 4096, T = 20, eager"
  timeout 90 "${BENCH[@]}" --sizes 4096,4096,4096,4096 --batch 4096 --steps 20 --timed 10 --no-bp
} 2>&1 | tee "$LOG"
