"""Figures of a recording (``neuropc plot FILE``): energies over inference steps and activity maps.

Needs matplotlib (``pip install "neuropc[plot]"``). Figures are drawn on matplotlib's Agg canvas
without pyplot, so plotting never opens a window or changes the global backend. Data are read in
row blocks (averages accumulate block by block), so any recording fits in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..record.export import _attrs, _require, _unique_names, iter_blocks, row_index, window_text

MAX_TRIALS = 1000  # rows shown in a trial x unit map (the first ones)
_PHASES = ("train", "test")


def _figure(**kw) -> Any:
    """A matplotlib ``Figure`` with an Agg canvas."""
    _require("matplotlib", "plot", "plotting")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _phases(ids: np.ndarray, table: dict, key: str) -> tuple[list[str], np.ndarray]:
    """The phases of the items ``ids`` (trial or batch ids; "?" where the table has no row), in
    order train, test, others, and each id's index into that list."""
    known = np.asarray(table.get(key, np.zeros(0, np.int64)), np.int64)
    size = max(int(known.max()) + 1 if len(known) else 0, int(ids.max()) + 1 if len(ids) else 0)
    per_id = np.full(size, "?", dtype=object)
    if len(known):
        per_id[known] = table["phase"]
    present = {str(p) for p in per_id[np.unique(ids)]}
    names = [p for p in _PHASES if p in present] + sorted(present - set(_PHASES))
    code = {p: i for i, p in enumerate(names)}
    per_id_code = np.array([code.get(str(p), 0) for p in per_id], np.int64)
    return names, per_id_code[ids]


def group_mean(ds: h5py.Dataset, n: int, keys: np.ndarray, n_keys: int,
               column: int | None = None) -> np.ndarray:  # fmt: skip
    """Mean of rows ``[0, n)`` of ``ds`` per key (``keys[r]`` in ``[0, n_keys)``), streamed in
    blocks: ``(n_keys, width)``, NaN for keys without rows."""
    width = 1 if column is not None else int(np.prod(ds.shape[1:], dtype=np.int64))
    sums = np.zeros((n_keys, width))
    counts = np.zeros(n_keys)
    for i, block in iter_blocks(ds, n):
        block = block.reshape(len(block), -1).astype(np.float64)
        if column is not None:
            block = block[:, column : column + 1]
        k = keys[i : i + len(block)]
        np.add.at(sums, k, block)
        counts += np.bincount(k, minlength=n_keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _by_phase_and_step(g: h5py.Group, table: dict, key: str, column: int | None = None):
    """``(phases, steps, means, items)``: the mean over the items (trials or batches) of each
    phase at each step, ``means`` ``(phases, steps, width)``, and the items per phase."""
    item, step, n = row_index(g)
    phases, p_idx = _phases(item, table, key)
    steps, s_idx = np.unique(step, return_inverse=True)
    m = group_mean(g["data"], n, p_idx * len(steps) + s_idx, len(phases) * len(steps), column)
    first = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])  # an item's rows are contiguous
    items = np.bincount(p_idx[first], minlength=len(phases))
    return phases, steps, m.reshape(len(phases), len(steps), -1), items


def _energy(rec, outdir: str, fname: str) -> str | None:
    """Energy per population over inference steps, mean over the batches of each phase."""
    f = rec.file
    pops = [p["name"] for p in rec.config.get("network", {}).get("populations", [])]
    curves = []  # (target, phases, steps, means, batches per phase)
    for name in rec.names:
        g = f["recordings"][name]
        a = _attrs(g)
        if a["variable"] != "energy" or a["mode"] != "steps" or row_index(g)[2] == 0:
            continue
        curves.append((a["target"], *_by_phase_and_step(g, rec.batches, "batch_id", 0)))
    if not curves:
        return None
    from matplotlib.ticker import MaxNLocator

    rank = {p: i for i, p in enumerate(pops)}
    curves.sort(key=lambda c: (c[0] == "total", rank.get(c[0], len(rank)), c[0]))
    present = {p for c in curves for p in c[1]}
    phases = [p for p in _PHASES if p in present] + sorted(present - set(_PHASES))
    fig = _figure(figsize=(5.5 * len(phases) + 1.2, 4.0), layout="constrained")
    axes = fig.subplots(1, len(phases), squeeze=False)[0]
    style = {  # one colour per target in every panel; the total black and dashed
        c[0]: dict(color="black", linestyle="--", linewidth=2) if c[0] == "total"
        else dict(color=f"C{j % 10}") for j, c in enumerate(curves)
    }  # fmt: skip
    labelled: set[str] = set()
    for ax, ph in zip(axes, phases):
        nb = 0
        for target, ph_list, steps, means, items in curves:
            if ph not in ph_list:
                continue
            i = ph_list.index(ph)
            nb = max(nb, int(items[i]))
            ax.plot(steps, means[i, :, 0], marker="." if len(steps) < 40 else None,
                    label=None if target in labelled else target, **style[target])  # fmt: skip
            labelled.add(target)
        ax.set_title(f"{ph}: energy, mean over {nb} batch{'es' if nb != 1 else ''}")
        ax.set_xlabel("inference step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("energy (a.u.)")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside right center", fontsize="small", title="population",
               title_fontsize="small")  # fmt: skip
    path = os.path.join(outdir, fname)
    fig.savefig(path, dpi=100)
    return path


def _limits(a: np.ndarray, diverging: bool) -> dict:
    """Colour map and limits shared by all panels: diverging and centred on 0 for errors and
    noise, viridis over the data's range otherwise."""
    finite = a[np.isfinite(a)]
    if not diverging:
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        return {"cmap": "viridis", "vmin": lo, "vmax": hi if hi > lo else lo + 1.0}
    v = float(np.max(np.abs(finite))) if finite.size else 1.0
    return {"cmap": "RdBu_r", "vmin": -(v or 1.0), "vmax": v or 1.0}


def _unit_ticks(ax: Any, g: h5py.Group, axis: str) -> None:
    """Label the unit axis with the units' indices in their population (a probe may record a
    subset); integer ticks only."""
    from matplotlib.ticker import MaxNLocator

    ids = np.asarray(g["mapping/node_ids"][()], np.int64)
    if len(ids) <= 20:
        set_ticks = ax.set_yticks if axis == "y" else ax.set_xticks
        set_ticks(np.arange(len(ids)), [str(i) for i in ids])
    else:
        (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(integer=True))


def _heatmap_steps(rec, name: str, path: str) -> str | None:
    """Trial-average unit x step map of a steps recording, one panel per phase."""
    from matplotlib.ticker import MaxNLocator

    g = rec.file["recordings"][name]
    a = _attrs(g)
    if row_index(g)[2] == 0:
        return None
    phases, steps, means, n_trials = _by_phase_and_step(g, rec.trials, "trial_id")
    every = float(steps[1] - steps[0]) if len(steps) > 1 else 1.0
    w = means.shape[2]
    fig = _figure(figsize=(5.5 * len(phases), 1.6 + min(6.0, 0.25 * w + 1.0)),
                  layout="constrained")  # fmt: skip
    axes = fig.subplots(1, len(phases), squeeze=False)[0]
    lim = _limits(means, a["variable"] in ("error", "noise"))
    for ax, ph, m, nt in zip(axes, phases, means, n_trials):
        im = ax.imshow(m.T, aspect="auto", origin="lower", interpolation="nearest",
                       extent=(steps[0] - every / 2, steps[-1] + every / 2, -0.5, w - 0.5),
                       **lim)  # fmt: skip
        ax.set_title(f"{name} ({ph}): mean over {nt} trials")
        ax.set_xlabel("inference step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{a['target']} unit")
        _unit_ticks(ax, g, "y")
        fig.colorbar(im, ax=ax, label=f"{a['variable']} ({a['units']})")
    fig.savefig(path, dpi=100)
    return path


def _heatmap_trials(rec, name: str, path: str) -> str | None:
    """Trial x unit map of a settled or summary recording (the first MAX_TRIALS trials)."""
    g = rec.file["recordings"][name]
    a = _attrs(g)
    item, _, n = row_index(g)
    if n == 0:
        return None
    m = min(n, MAX_TRIALS)
    data = g["data"][:m].astype(np.float64)
    w = data.shape[1]
    fig = _figure(figsize=(2.0 + min(10.0, 0.3 * w + 2.0), 4.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(data, aspect="auto", origin="upper", interpolation="nearest",
                   extent=(-0.5, w - 0.5, m - 0.5, -0.5),
                   **_limits(data, a["variable"] in ("error", "noise")))  # fmt: skip
    what = a["mode"] if a["mode"] == "settled" else f"{a['reduce']} over {window_text(a['window'])}"
    shown = f"first {m} of {n} trials" if m < n else f"{n} trials"
    ax.set_title(f"{name}: {what} ({shown})")
    ax.set_xlabel(f"{a['target']} unit")
    ax.set_ylabel("trial (row)")
    if m <= 20:
        ax.set_yticks(np.arange(m), [str(i) for i in item[:m]])
        ax.set_ylabel("trial id")
    _unit_ticks(ax, g, "x")
    fig.colorbar(im, ax=ax, label=f"{a['variable']} ({a['units']})")
    fig.savefig(path, dpi=100)
    return path


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the pyplot figure ``fig`` as a PNG to ``path``, close it, and return the file's
    absolute path (scripts print it, e.g. with :func:`neuropc.runner.wrote`)."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(os.path.abspath(path))


def plot_file(path: str | os.PathLike, outdir: str | os.PathLike) -> list[str]:
    """Save PNG figures of the recording at ``path`` into ``outdir``; returns the files written.

    * ``energy.png``: the energy of every population (and the total) over inference steps, the
      mean over batches, one panel per phase (from the ``<pop>:energy`` steps recordings).
    * ``<recording>.png`` for every per-sample recording: for steps recordings a unit x step map
      of the trial average (one panel per phase), for settled and summary recordings a
      trial x unit map of the first :data:`MAX_TRIALS` trials. Errors and noise use a diverging
      colour map centred on 0.

    The paths returned are absolute. Needs matplotlib (``pip install "neuropc[plot]"``). Raises
    :class:`~neuropc.errors.RecordingError` when the file is not a readable recording.
    """
    _require("matplotlib", "plot", "plotting")
    from ..record.reader import open as _open

    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    written: list[str] = []
    with _open(path) as rec:
        names = _unique_names(["energy", *rec.names])
        p = _energy(rec, outdir, names["energy"] + ".png")
        if p:
            written.append(p)
        for name in rec.names:
            a = _attrs(rec.file["recordings"][name])
            if a["row_kind"] != "sample" or json.loads(a.get("columns", "[]")):
                continue
            out = os.path.join(outdir, names[name] + ".png")
            p = (_heatmap_steps if a["mode"] == "steps" else _heatmap_trials)(rec, name, out)
            if p:
                written.append(p)
    return written
