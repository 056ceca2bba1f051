"""Scaling of the PC training minibatch: width, batch size and inference steps.

Varies one axis at a time around the standard task (784-W-W-10, tanh, B = 128, T = 20, float32,
Adam): widths 128-2048, batches 32-1024, T 5-100. Prints a Markdown table of ms per batch,
effective GFLOP/s, the MKL-class ceiling (``torch.mm`` on the batch's own gemm calls) measured in
the same run and the efficiency against it, the peak memory of the process, and then the fitted
exponents: ms per batch against the FLOP count (all rows), and peak memory against T and against
batch x width. Also writes the rows as JSON.
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
import math
import platform
import subprocess
import sys
import time

WIDTHS = (128, 256, 512, 1024, 2048)
BATCHES = (32, 128, 512, 1024)
STEPS = (5, 20, 50, 100)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    print(f"# {cpu_model()}, {time.strftime('%Y-%m-%d')}, backend {args.backend}")
    print(
        "| width | batch | T | ms/batch | GFLOP/s | MKL ceiling ms | efficiency (MKL) | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for w, b, t in configs(args.quick):
        cmd = [
            sys.executable, "-m", "neuropc.cli", "bench", "--json", "--sizes", f"784,{w},{w},10",
            "--batch", str(b), "--steps", str(t), "--backend", args.backend, "--no-bp",
            "--timed", str(max(3, min(args.timed, int(2e4 / (w * b / 128))))),
        ]  # fmt: skip
        reps = []
        for _ in range(args.repeats):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            reps.append(json.loads(out.strip().splitlines()[-1]))
        r = min(reps, key=lambda x: x["ms_per_batch"])
        r.update(width=w)
        rows.append(r)
        print(
            f"| {w} | {b} | {t} | {r['ms_per_batch']:.2f} | {r['gflops_effective']:.0f} | "
            f"{r['mkl_ceiling_ms']:.2f} | {1 / r['over_mkl_ceiling']:.2f} | "
            f"{r['peak_rss_mb']:.0f} |",
            flush=True,
        )
    fits = fitted_exponents(rows)
    for k, v in fits.items():
        print(f"{k}: {v:.3f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "fits": fits}, f, indent=1)


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (c - my) for a, c in zip(lx, ly)) / den if den else float("nan")


def fitted_exponents(rows: list[dict]) -> dict:
    """``ms ~ FLOPs^a`` over every row; peak memory ``~ T^b`` (the T axis) and ``~ (B W)^c``
    (the batch and width axes), each as the slope of a log-log least-squares fit."""
    out = {"ms_vs_flops": _slope([r["mflop_per_batch"] for r in rows],
                                 [r["ms_per_batch"] for r in rows])}  # fmt: skip
    t_axis = [r for r in rows if r["width"] == 128 and r["batch"] == 128]
    bw_axis = [r for r in rows if r["steps"] == 20]
    if len({r["steps"] for r in t_axis}) > 1:
        out["peak_mb_vs_T"] = _slope(
            [r["steps"] for r in t_axis], [r["peak_rss_mb"] for r in t_axis]
        )
    if len(bw_axis) > 1:
        out["peak_mb_vs_batch_x_width"] = _slope([r["batch"] * r["width"] for r in bw_axis],
                                                 [r["peak_rss_mb"] for r in bw_axis])  # fmt: skip
    return out


if __name__ == "__main__":
    main()
