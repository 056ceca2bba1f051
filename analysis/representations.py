"""Figures of the digit representations recorded by ``models/representations.py``.

    python analysis/representations.py [runs/representations/representations.h5] [--out DIR]
        [--generalise POP]

Recomputes from the recording (the decoding seed and the number of test digits are in its
metadata) with :mod:`neuropc.analysis.measures` and writes to ``--out`` (default: the recording's folder):

* ``decoding.png``: cross-validated accuracy of the digit label against the inference step, from
  the values and from the errors, one panel per population (chance 0.1 dashed);
* ``rdms.png``: the correlation-distance RDMs of the digits' mean settled values per population,
  and of their mean input pixels;
* ``generalisation.png``: the temporal generalisation matrix (train at one step, test at another)
  of the values of one population (``--generalise``, default ``h1``).

The absolute path of every figure is printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.analysis.plotting import save_png
from neuropc.runner import ArgumentParser, run_main, wrote

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"value": "tab:blue", "error": "tab:red"}


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw the figures of the recording; returns the paths written."""
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path, nargs="?",
                    default=ROOT / "runs/representations/representations.h5")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--generalise", default="h1", help="population of the generalisation matrix")
    args = ap.parse_args(argv)
    A = npc.analysis
    with npc.open(args.recording) as rec:
        meta = rec.config["metadata"]
        pops, seed, folds = meta["populations"], int(meta["seed"]), int(meta["folds"])
        labels = rec.trials["label"].astype(str)
        curves = {(p, v): A.decode_over_steps(rec[f"{p}:{v}"].values, labels, folds=folds,
                                              seed=seed)
                  for p in pops for v in ("value", "error")}  # fmt: skip
        patterns = {p: A.condition_patterns(rec[f"{p}:value"].values[:, -1], labels)[1]
                    for p in pops}  # fmt: skip
        gen = A.temporal_generalisation(rec[f"{args.generalise}:value"].values, labels,
                                        folds=folds, seed=seed)  # fmt: skip
    pixels = npc.data.mnist("test")[0][: int(meta["n_test"])]
    conds, patterns["input"] = A.condition_patterns(pixels, labels)
    rdms = A.rdms_by_population(patterns, method="correlation")
    out = args.out or args.recording.parent
    out.mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = len(pops)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    for ax, pop in zip(axes[0], pops):
        first = pop == pops[0]
        for var in ("value", "error"):
            ax.plot(curves[pop, var], color=COLOURS[var], label=var if first else None)
        ax.axhline(0.1, color="grey", ls="--", lw=1, label="chance (0.1)" if first else None)
        ax.set_title(f"{pop}: decoding the digit")
        ax.set_xlabel("inference step")
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel(f"accuracy ({folds}-fold CV)")
    fig.legend(loc="outside right center", fontsize="small", title="decoded from",
               title_fontsize="small")  # fmt: skip
    written.append(save_png(fig, out / "decoding.png", dpi=100))

    names = ["input", *pops]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, name in zip(axes[0], names):
        im = ax.imshow(rdms[name], cmap="viridis", vmin=0)
        ax.set_title(f"{name} RDM" + ("" if name == "input" else ", settled value"))
        ax.set_xticks(range(len(conds)), [str(c) for c in conds])
        ax.set_yticks(range(len(conds)), [str(c) for c in conds])
        ax.set_xlabel("digit")
        ax.set_ylabel("digit")
        fig.colorbar(im, ax=ax, fraction=0.046, label="correlation distance 1 - r")
    written.append(save_png(fig, out / "rdms.png", dpi=100))

    fig, ax = plt.subplots(figsize=(4.8, 4), layout="constrained")
    im = ax.imshow(gen, origin="lower", cmap="magma", vmin=0.1, vmax=max(float(np.max(gen)), 0.11))
    ax.set_title(f"{args.generalise} values: temporal generalisation")
    ax.set_xlabel("test at inference step")
    ax.set_ylabel("train at inference step")
    fig.colorbar(im, ax=ax, label=f"accuracy ({folds}-fold CV; floor: chance 0.1)")
    written.append(save_png(fig, out / "generalisation.png", dpi=100))
    for p in written:
        wrote(p)
    return written


if __name__ == "__main__":
    run_main(main)
