"""Figures of the mismatch responses recorded by ``models/oddball.py``.

    python analysis/oddball.py [runs/oddball/oddball.h5] [--out DIR]

Reads the recording (the design is in its metadata), recomputes the summary with the model's own
:func:`summarise` (ERPs of the population free energy ``sum_u eps_u^2 / (2 Pi_u)`` per condition,
difference waves, Parras indices, the roving repetition curve) and writes to ``--out`` (default:
the recording's folder):

* ``erp.png``: DEV, CTR and STD waves against the lag after tone onset, one panel per error
  population (log scale: the three differ by more than an order of magnitude);
* ``difference_waves.png``: DEV-STD, DEV-CTR and CTR-STD per population, with their peaks and
  latencies in a legend under each panel;
* ``mismatch_indices.png``: the population iMM, iPE, iRS (bars), and per unit (one panel per
  population, the unit means in its title; for ``obs`` the unit is the position on the
  tonotopic axis, with the oddball tones dashed);
* ``repetition.png``: the roving block's response against the repetition index, relative to the
  first presentation.

Energies are in arbitrary units (a.u.), indices are dimensionless; legends sit beside or under
the data. The absolute path of every figure is printed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.analysis.plotting import save_png
from neuropc.runner import ArgumentParser, run_main, wrote

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"deviant": "tab:red", "control": "tab:green", "standard": "tab:blue"}
SHORT = {"deviant": "DEV", "control": "CTR", "standard": "STD"}
LAG = "lag after tone onset (inference steps)"
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
    ap = ArgumentParser(description=__doc__.splitlines()[0])
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
    energy = "error energy Σ ε² / (2Π) (a.u.)"
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, layout="constrained")
    for ax, pop in zip(axes[0], pops):
        for c in model.CONDITIONS:
            wave = np.asarray(s["erp"][pop][c])
            lag = np.arange(len(wave))
            ok = wave > 0  # lag 0 of the latent and hidden errors is exactly 0 (forward init)
            label = f"{SHORT[c]} (n={s['n_trials'][c]})" if pop == pops[0] else None
            ax.semilogy(lag[ok], wave[ok], color=COLOURS[c], label=label)
        ax.set_title(f"{pop}: error energy, trial mean")
        ax.set_xlabel(LAG)
        ax.set_ylabel(energy)
    fig.legend(loc="outside right center", fontsize=8)
    written.append(save_png(fig, out / "erp.png"))

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False, layout="constrained")
    for ax, pop in zip(axes[0], pops):
        for k, label in DIFFS.items():
            d = s["difference"][pop][k]
            ax.plot(d["wave"], label=f"{label}: peak {d['peak']:.3g} at lag {d['latency']}")
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":", label="zero")
        ax.set_title(f"{pop}: difference waves")
        ax.set_xlabel(LAG)
        ax.set_ylabel("error energy difference (a.u.)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7, frameon=False)
    written.append(save_png(fig, out / "difference_waves.png"))

    keys = ("iMM", "iPE", "iRS")
    colours = dict(zip(keys, ("tab:blue", "tab:orange", "tab:purple")))
    fig, axes = plt.subplots(1, n + 1, figsize=(4.0 * (n + 1), 3.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    bars, x = axes[0][0], np.arange(n)
    for j, k in enumerate(keys):
        bars.bar(x + (j - 1) * 0.27, [s["indices"][p][k] for p in pops], 0.27,
                 color=colours[k], label=k)  # fmt: skip
    bars.set_xticks(x, pops)
    bars.axhline(0.0, color="0.5", lw=0.8, ls=":", label="zero")
    bars.set_ylim(-1, 1)
    bars.set_title("population response indices")
    bars.set_xlabel("error population")
    bars.set_ylabel("index (dimensionless, -1 to 1)")
    for ax, pop in zip(axes[0][1:], pops):
        per = s["unit_indices"][pop]["per_unit"]
        for k in keys:
            ax.plot(per[k], marker="o", ms=3, lw=1, color=colours[k])
        if pop == "obs":
            cfg = meta["config"]
            for i, c in enumerate(
                model.tones_centres(cfg["n_units"], cfg["n_tones"])[meta["control_tones"]]
            ):
                ax.axvline(c, color="0.4", ls="--", lw=1, label="oddball tones" if i == 0 else None)
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_ylim(-1.05, 1.05)
        means = "  ".join(f"{k} {np.mean(per[k]):.2f}" for k in keys)
        ax.set_title(f"{pop}: per unit\nmeans: {means}", fontsize=10)
        ax.set_xlabel(f"{pop} unit" + (" (tonotopic position)" if pop == "obs" else ""))
        ax.set_ylabel("index (dimensionless)")
    fig.legend(loc="outside right center", fontsize=8)
    written.append(save_png(fig, out / "mismatch_indices.png"))

    fig, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    for pop in pops:
        r = s["repetition"][pop]
        resp = np.asarray(r["response"])
        ax.plot(r["repetition"], resp / resp[0], "o-", ms=4, label=pop)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":", label="first tone")
    ax.set_xlabel("repetition in the train (roving block)")
    ax.set_ylabel("response / response to the first tone")
    ax.set_title("repetition suppression")
    ax.legend(loc="lower left", fontsize=8)
    written.append(save_png(fig, out / "repetition.png"))
    for p in written:
        wrote(p)
    return written


if __name__ == "__main__":
    run_main(main)
