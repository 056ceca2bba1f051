"""Scaling of the PC training minibatch: width, batch size and inference steps.

Varies one axis at a time around the standard task (784-W-W-10, tanh, B = 128, T = 20, float32,
Adam) and prints a Markdown table of ms per batch, effective GFLOP/s, the BLAS ceiling measured on
the same shapes in the same run, and their ratio (efficiency). Also writes the rows as JSON.
Each configuration runs ``neuropc bench`` in a fresh process: torch's OpenMP threads keep spinning
after its backprop reference and would slow the next configuration's BLAS (two thread pools on
two cores). Each configuration is measured ``--repeats`` times (default 3), each in its own
process, and the repeat with the lowest ms per batch is kept with its own in-process ceiling: on a
shared 2-core machine whole processes sometimes run 2x slower (their BLAS ceiling drops too).

    python benchmarks/scaling.py [--backend numba] [--quick] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

WIDTHS = (128, 256, 512, 1024)
BATCHES = (32, 128, 512, 1024)
STEPS = (5, 20, 50, 100)


def configs(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(32, 16, 3), (64, 16, 3)]
    rows = [(w, 128, 20) for w in WIDTHS]
    rows += [(128, b, 20) for b in BATCHES if b != 128]
    rows += [(128, 128, t) for t in STEPS if t != 20]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timed", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}, backend {args.backend}"
    )
    print(
        "| width | batch | T | ms/batch | GFLOP/s | BLAS GFLOP/s | efficiency | torch BP ms | PC/BP |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for w, b, t in configs(args.quick):
        cmd = [
            sys.executable, "-m", "neuropc.cli", "bench", "--json", "--sizes", f"784,{w},{w},10",
            "--batch", str(b), "--steps", str(t), "--backend", args.backend,
            "--timed", str(args.timed),
        ]  # fmt: skip
        reps = []
        for _ in range(args.repeats):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            reps.append(json.loads(out.strip().splitlines()[-1]))
        r = min(reps, key=lambda x: x["ms_per_batch"])
        rows.append(r)
        print(
            f"| {w} | {b} | {t} | {r['ms_per_batch']:.2f} | {r['gflops_effective']:.0f} | "
            f"{r['blas_gflops']:.0f} | {r['efficiency']:.2f} | {r['bp_ms_per_batch']:.2f} | "
            f"{r['pc_over_bp']:.1f} |",
            flush=True,
        )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
