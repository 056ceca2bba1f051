"""Figures of the mismatch responses recorded by ``models/oddball.py``.

    python analysis/oddball.py [runs/oddball/oddball.h5] [--out DIR]

Reads the recording (the design is in its metadata), recomputes the summary with the model's own
:func:`summarise` (ERPs of the population free energy ``sum_u eps_u^2 / (2 Pi_u)`` per condition,
difference waves, Parras indices, the roving repetition curve) and writes to ``--out`` (default:
the recording's folder):

* ``erp.png``: DEV, CTR and STD waves against the lag after tone onset, one panel per error
  population (log scale: the three differ by more than an order of magnitude);
* ``difference_waves.png``: DEV-STD, DEV-CTR and CTR-STD per population;
* ``mismatch_indices.png``: the population iMM, iPE, iRS (bars), and per unit (one panel per
  population; for ``obs`` the unit is the position on the tonotopic axis, with the oddball
  tones marked);
* ``repetition.png``: the roving block's response against the repetition index, relative to the
  first presentation.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.plotting import save_png

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"deviant": "tab:red", "control": "tab:green", "standard": "tab:blue"}
SHORT = {"deviant": "DEV", "control": "CTR", "standard": "STD"}
DIFFS = {"dev_minus_std": "DEV - STD", "dev_minus_ctr": "DEV - CTR", "ctr_minus_std": "CTR - STD"}


def load_model():
    """``models/oddball.py`` as a module (for :func:`summarise` and the design constants),
    registered as ``oddball_model`` (its dataclasses need a ``sys.modules`` entry)."""
    name = "oddball_model"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "oddball.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw the figures of the recording; returns the paths written."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path, nargs="?", default=ROOT / "runs/oddball/oddball.h5")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model = load_model()
    with npc.open(args.recording) as rec:
        meta = rec.config["metadata"]
    s = model.summarise(args.recording, meta)
    pops = list(model.POPULATIONS)
    out = args.out or args.recording.parent
    out.mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = len(pops)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, pop in zip(axes[0], pops):
        for c in model.CONDITIONS:
            wave = np.asarray(s["erp"][pop][c])
            lag = np.arange(len(wave))
            ok = wave > 0  # lag 0 of the latent and hidden errors is exactly 0 (forward init)
            label = f"{SHORT[c]} (n={s['n_trials'][c]})"
            ax.semilogy(lag[ok], wave[ok], color=COLOURS[c], label=label)
        ax.set_title(f"{pop}: error energy")
        ax.set_xlabel("lag after tone onset (inference steps)")
    axes[0][0].set_ylabel("sum eps^2 / (2 Pi), trial mean")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    written.append(save_png(fig, out / "erp.png"))

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, pop in zip(axes[0], pops):
        for k, label in DIFFS.items():
            d = s["difference"][pop][k]
            ax.plot(d["wave"], label=f"{label} (peak {d['peak']:.3g} at {d['latency']})")
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.set_title(f"{pop}: difference waves")
        ax.set_xlabel("lag after tone onset (inference steps)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(save_png(fig, out / "difference_waves.png"))

    fig, axes = plt.subplots(1, n + 1, figsize=(4.0 * (n + 1), 3.4), squeeze=False)
    keys = ("iMM", "iPE", "iRS")
    x = np.arange(n)
    for j, k in enumerate(keys):
        axes[0][0].bar(x + (j - 1) * 0.27, [s["indices"][p][k] for p in pops], 0.27, label=k)
    axes[0][0].set_xticks(x, pops)
    axes[0][0].axhline(0.0, color="0.5", lw=0.8)
    axes[0][0].set_ylim(-1, 1)
    axes[0][0].set_title("population indices")
    axes[0][0].legend(fontsize=8)
    for ax, pop in zip(axes[0][1:], pops):
        per = s["unit_indices"][pop]["per_unit"]
        for k in keys:
            ax.plot(per[k], marker="o", ms=3, lw=1, label=f"{k} (mean {np.mean(per[k]):.2f})")
        if pop == "obs":
            cfg = meta["config"]
            for c in model.tones_centres(cfg["n_units"], cfg["n_tones"])[meta["control_tones"]]:
                ax.axvline(c, color="0.6", ls=":", lw=1)
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{pop}: per unit")
        ax.set_xlabel("unit" + (" (tonotopic position; dotted: oddball tones)" * (pop == "obs")))
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(save_png(fig, out / "mismatch_indices.png"))

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for pop in pops:
        r = s["repetition"][pop]
        resp = np.asarray(r["response"])
        ax.plot(r["repetition"], resp / resp[0], "o-", ms=4, label=pop)
    ax.set_xlabel("repetition in the train (roving block)")
    ax.set_ylabel("response / response to the first tone")
    ax.set_title("repetition suppression")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(save_png(fig, out / "repetition.png"))
    for p in written:
        print(p)
    return written


if __name__ == "__main__":
    main()
