"""Figures of PC-vs-backprop gradient alignment from ``models/pc_vs_bp.py``'s ``alignment.json``.

    python analysis/pc_vs_bp.py runs/pc_vs_bp/alignment.json [--out DIR]

Writes ``cosine_vs_t.png`` (cosine against inference step, one panel per mode, a line per
connection, at the last epoch), ``error_vs_beta.png`` (strict PC's relative error against the
output nudging, log-log, with a slope-1 guide) and ``error_vs_output_precision.png``, and prints
their absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path

from neuropc.analysis.plotting import save_png
from neuropc.runner import ArgumentParser, run_main, wrote


def main(argv: list[str] | None = None) -> list[Path]:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("alignment", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    curves = json.loads(args.alignment.read_text())
    out = args.out or args.alignment.parent
    out.mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    rel = "relative error |g_PC - g_BP| / |g_BP|"
    modes = [m for m in ("strict", "fpa", "zil") if m in curves]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.6), sharey=True,
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, mode in zip(axes[0], modes):
        last = curves[mode][-1]
        first = ax is axes[0][0]
        for j, name in enumerate(last["names"]):
            ax.plot(last["steps"], [row[j] for row in last["cosine"]], marker="o", ms=3,
                    color=f"C{j}", label=name if first else None)  # fmt: skip
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":", label="1: same direction" if first else None)
        ax.set_title(f"{mode} (epoch {last['epoch']})")
        ax.set_xlabel("inference step t")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("cosine(PC update, BP gradient)")
    fig.legend(loc="outside right center", fontsize=8, title="connection", title_fontsize=8)
    written.append(save_png(fig, out / "cosine_vs_t.png"))

    if "beta" in curves:
        b = curves["beta"]
        fig, ax = plt.subplots(figsize=(4.8, 3.6), layout="constrained")
        ax.loglog(b["beta"], b["rel_error"], "o-", label=f"strict PC (slope {b['slope']:.2f})")
        ref = [b["rel_error"][-1] * x / b["beta"][-1] for x in b["beta"]]
        ax.loglog(b["beta"], ref, "--", color="0.6", label="slope 1")
        ax.set_xlabel("output nudging beta (dimensionless)")
        ax.set_ylabel(rel)
        ax.set_title("strict PC at equilibrium vs nudging")
        ax.legend(loc="upper left", fontsize=8)
        written.append(save_png(fig, out / "error_vs_beta.png"))
    if "output_precision" in curves:
        c = curves["output_precision"]
        fig, ax = plt.subplots(figsize=(4.8, 3.6), layout="constrained")
        ax.loglog(c["output_precision"], c["rel_error"], "o-")
        ax.set_xlabel("output precision (hidden precision 1)")
        ax.set_ylabel(rel)
        ax.set_title("strict PC (200 steps) vs output precision")
        written.append(save_png(fig, out / "error_vs_output_precision.png"))
    for p in written:
        wrote(p)
    return written


if __name__ == "__main__":
    run_main(main)
