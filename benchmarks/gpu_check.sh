#!/usr/bin/env bash
# The GPU checklist in one script (DEVELOPERS.md, docs/performance.md): the CUDA tests, the standard
# task on CUDA eager and compiled (reduce-overhead = CUDA graphs), the transformer language
# model's samples/s (issue 13), and the width-4096, B = 4096,
# T = 20 bench with its ratio to torch.mm on the same shapes in the same run.
# Usage, from the repository root on a machine with a CUDA GPU:  bash benchmarks/gpu_check.sh [LOG]
# Each part has its own time limit so that one slow part cannot starve the others.
# SKIP_TESTS=1 skips the CUDA tests, SKIP_WIDE=1 the width-4096 bench. DIST_NPROC=1,2,4,8 adds
# data-parallel throughput on the host's cores (gloo, benchmarks/distributed.py) at the end.
# T_TESTS sets the CUDA tests' time limit in seconds (default 300: with the benches the whole
# script stays under the device tool's 600 s per call; 14 workers ran 325 of 355 cases in 290 s).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu_check.log}
mkdir -p "$(dirname "$LOG")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# an array, not a function: timeout(1) runs programs only
BENCH=("$PY" -m neuropc.cli bench --backend torch --device cuda --json)
{
  echo "## $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c 'import torch, numba, numpy; print("torch", torch.__version__, "numba", numba.__version__, "numpy", numpy.__version__)'
  echo "## CUDA tests"
  if [ "${SKIP_TESTS:-0}" != 1 ]; then
    # The compiled and CUDA-graph cases compile for 10-20 s each: one process got through 43 of
    # 355 cases in 240 s on an H200 host, so the tests run on pytest-xdist workers where the
    # image has it. -v writes each outcome as it ends (to its own log), so a run cut off by its
    # time limit still names its failures; -rfE repeats them with their messages at the end.
    WORKERS=$("$PY" -c 'import os, xdist; print(max(1, min(14, (os.cpu_count() or 3) - 2)))' 2>/dev/null)
    TESTLOG="${LOG%.log}.tests.log"
    OMP_NUM_THREADS=1 timeout "${T_TESTS:-300}" "$PY" -m pytest -p no:cacheprovider -p no:benchmark \
      tests -k cuda -v -rfE ${WORKERS:+-n "$WORKERS"} >"$TESTLOG" 2>&1
    echo "pytest exit status $? (124: cut off at ${T_TESTS:-300} s); full log $TESTLOG"
    grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed|error)" "$TESTLOG" | tail -60
    for outcome in PASSED FAILED SKIPPED ERROR; do  # the progress lines, one per test
      printf '%s %s  ' "$(grep -E "^\[gw[0-9]+\] \[ *[0-9]+%\] $outcome |^[^ ]+::.* $outcome( |$)" "$TESTLOG" | grep -c .)" "$outcome"
    done
    echo
  fi
  echo "## standard task, eager"
  timeout 60 "${BENCH[@]}"
  echo "## standard task, compiled reduce-overhead"
  timeout 120 "${BENCH[@]}" --compile reduce-overhead
  echo "## transformer language model (PC-F_KL, d 128, seq 32, B 32), eager: samples/s"
  timeout 90 "${BENCH[@]}" --model transformer --timed 20
  [ "${SKIP_WIDE:-0}" = 1 ] && exit 0
  echo "## width 4096, B = 4096, T = 20, eager"
  timeout 90 "${BENCH[@]}" --sizes 4096,4096,4096,4096 --batch 4096 --steps 20 --timed 10 --no-bp
  [ -n "${DIST_NPROC:-}" ] || exit 0
  echo "## data-parallel throughput on the host CPU (gloo), processes ${DIST_NPROC}"
  timeout 150 "$PY" benchmarks/distributed.py --nproc "$DIST_NPROC" --epochs 1 --samples 4000
} 2>&1 | tee "$LOG"
