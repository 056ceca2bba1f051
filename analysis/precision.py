"""Figures of the learned precisions recorded over training (``Probe(pop, "precision")``).

    python analysis/precision.py [runs/precision_autoencoder/precision_autoencoder.h5] [--out DIR]

Reads every per-batch ``precision`` recording in the file (written by
``models/precision_autoencoder.py``, or by any ``sim.record(path, [npc.Probe(pop,
"precision"), ...])``): one row per recorded batch, holding the population's per-unit precision
``Pi`` after that batch's precision step (for an EMA rule ``Pi = 1 / (S + damping)``; the
diagonal of a full precision). Draws ``precision.png`` into ``--out`` (default: the recording's
folder): one panel per population, against training time, with

* the mean of ``Pi`` over units (solid),
* the 10th to 90th percentile across units (band) and the median (dashed),
* ``1 / damping`` (dotted), the most an EMA precision can reach, where the network spec has one,
* for the image of a ``--hetero`` run (the metadata lists ``corrupted_pixels``), the medians of
  the corrupted and of the clean pixels.

Training time is in epochs when the metadata gives ``batches_per_epoch`` (the k-th learning batch
ends at epoch ``k / batches_per_epoch``), else in learning batches. Precision is in
``1 / a.u.^2`` (the inverse of the variance of a prediction error). The absolute path of every
figure is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.analysis.plotting import save_png
from neuropc.runner import ArgumentParser, check_input_file, run_main, wrote

ROOT = Path(__file__).resolve().parents[1]
PERCENTILES = (10, 50, 90)


@dataclass
class PrecisionTrace:
    """One population's recorded precision: ``values`` ``(rows, units)`` after each recorded
    batch, at training time ``time`` (``time_label`` says its unit), ``units`` the recorded unit
    indices, ``cap`` = 1 / damping of an EMA rule (None otherwise), ``groups`` named unit masks
    (e.g. corrupted / clean pixels)."""

    population: str
    values: np.ndarray
    time: np.ndarray
    time_label: str
    units: np.ndarray
    cap: float | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self, q: tuple[int, ...] = PERCENTILES) -> dict[str, np.ndarray]:
        """Per row: ``mean`` over units and the percentiles ``p10``, ``p50``, ``p90`` (by ``q``)."""
        out = {"mean": self.values.mean(axis=1)}
        for p, v in zip(q, np.percentile(self.values, q, axis=1)):
            out[f"p{p}"] = v
        return out


def _cap(spec: dict) -> float | None:
    prec = spec.get("distribution", {}).get("precision")
    if isinstance(prec, dict) and prec.get("learn") == "ema" and prec.get("damping", 0) > 0:
        return 1.0 / float(prec["damping"])
    return None


def read_precisions(path: str | Path) -> list[PrecisionTrace]:
    """The precision recordings of the recording at ``path``, in the network's population order
    (a ValueError when it has none)."""
    traces = []
    with npc.open(path) as rec:
        meta = rec.config.get("metadata") or {}
        specs = {p["name"]: p for p in rec.config["network"]["populations"]}
        b = rec.batches
        learned = b["batch_id"][(b["phase"] == "train") & (b["learned"] == 1)]
        per_epoch = meta.get("batches_per_epoch")
        for name in rec.names:
            a = rec[name]
            if a.attrs.get("variable") != "precision":
                continue
            ids = a.coords["batch"]
            k = np.searchsorted(learned, ids) + 1.0  # learning batches done, this one included
            if per_epoch:
                t, label = k / float(per_epoch), "training epoch"
            else:
                t, label = k, "learning batch"
            pop = str(a.attrs["target"])
            units = np.asarray(a.coords["unit"], np.int64)
            groups = {}
            corrupted = meta.get("corrupted_pixels")
            if corrupted is not None and pop == "image":
                hit = np.isin(units, np.asarray(corrupted, np.int64))
                groups = {"corrupted pixels": hit, "clean pixels": ~hit}
            traces.append(PrecisionTrace(pop, a.values.astype(np.float64), t, label, units,
                                         _cap(specs.get(pop, {})), groups))  # fmt: skip
    if not traces:
        raise ValueError(f"{str(path)!r} holds no precision recording (Probe(pop, 'precision'))")
    order = list(specs)  # the network's order (e.g. latent, hidden, image)
    return sorted(traces, key=lambda tr: order.index(tr.population) if tr.population in order
                  else len(order))  # fmt: skip


def draw(traces: list[PrecisionTrace], out: Path) -> Path:
    """``precision.png`` in ``out`` (see the module docstring); returns its absolute path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(traces)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.6), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    for ax, tr in zip(axes[0], traces):
        s = tr.summary()
        lo, hi = f"p{PERCENTILES[0]}", f"p{PERCENTILES[-1]}"
        ax.fill_between(tr.time, s[lo], s[hi], color="tab:blue", alpha=0.25, lw=0,
                        label=f"{PERCENTILES[0]}-{PERCENTILES[-1]}th percentile")  # fmt: skip
        ax.plot(tr.time, s["p50"], color="tab:blue", ls="--", lw=1, label="median")
        ax.plot(tr.time, s["mean"], color="tab:blue", lw=1.5, label="mean over units")
        for (label, mask), colour in zip(tr.groups.items(), ("tab:red", "tab:green")):
            if mask.any():
                ax.plot(tr.time, np.median(tr.values[:, mask], axis=1), color=colour, lw=1.2,
                        label=f"median, {label}")  # fmt: skip
        if tr.cap is not None:
            ax.axhline(tr.cap, color="grey", ls=":", lw=1, label="1 / damping (EMA bound)")
        ax.set_yscale("log")
        ax.set_title(f"{tr.population} ({len(tr.units)} units)")
        ax.set_xlabel(tr.time_label)
        ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
                  frameon=False)  # under the panel, off the data  # fmt: skip
    axes[0, 0].set_ylabel("learned precision Pi (1/a.u.^2)")
    return save_png(fig, out / "precision.png", dpi=100)


def main(argv: list[str] | None = None) -> list[Path]:
    """Draw the figure of the recording; returns the paths written."""
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path, nargs="?",
                    default=ROOT / "runs/precision_autoencoder/precision_autoencoder.h5")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    check_input_file(args.recording, "recording")
    traces = read_precisions(args.recording)
    out = args.out or args.recording.parent
    out.mkdir(parents=True, exist_ok=True)
    for tr in traces:
        s = tr.summary()
        print(f"{tr.population:<8} final precision: mean {s['mean'][-1]:.4g}, "
              f"10/50/90th percentile {s['p10'][-1]:.4g} / {s['p50'][-1]:.4g} / "
              f"{s['p90'][-1]:.4g} after {tr.time[-1]:.4g} {tr.time_label.replace('batch', 'batche')}s")  # fmt: skip
    written = [draw(traces, out)]
    for p in written:
        wrote(p)
    return written


if __name__ == "__main__":
    run_main(main)
