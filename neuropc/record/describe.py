"""A readable summary of a recording (``neuropc inspect FILE``): :func:`describe`."""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import RecordingError
from .groups import attributes, row_index, window_text


def _counts(values: np.ndarray, limit: int = 12) -> str:
    """``"std 6, dev 2"``: counts per value, in order of first appearance."""
    if len(values) == 0:
        return "(none)"
    u, first, counts = np.unique(values.astype(str), return_index=True, return_counts=True)
    order = np.argsort(first)
    parts = [f"{u[i] or '(empty)'} {counts[i]}" for i in order[:limit]]
    if len(order) > limit:
        parts.append(f"... ({len(order) - limit} more values)")
    return ", ".join(parts)


def _table(rows: list[list[str]], indent: str) -> list[str]:
    if not rows:
        return []
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]


def describe(path: str | os.PathLike) -> str:
    """A readable tree of what the recording at ``path`` holds (``neuropc inspect FILE``).

    File metadata, network populations, every recording (dims and shape as the reader sees them,
    units, mode, every), the trials table (rows, label columns, counts per label value), the
    batches and the progress counter. Raises :class:`~neuropc.errors.RecordingError` when the file
    is not a readable recording.
    """
    from .reader import open as _open

    with _open(path) as rec:
        f, a = rec.file, rec.attrs
        out = [f"{os.fspath(path)}"]
        meta = [
            ["schema", f"{a.get('schema')} version {a.get('schema_version')}"],
            ["neuropc", str(a.get("neuropc_version", "?"))],
            ["created", str(a.get("created", "?"))],
            ["backend", f"{a.get('backend', '?')} ({a.get('dtype', '?')})"],
            ["seed", str(a.get("seed", "?"))],
            ["time unit", f"{a.get('time_unit', '?')} (dt {a.get('dt', '?')})"],
        ]
        prog = rec.progress
        meta.append(["progress", f"{prog['batches']} batches, {prog['trials']} trials"])
        out += _table(meta, "  ")

        pops = f["network/populations"]
        order = [p["name"] for p in rec.config.get("network", {}).get("populations", [])]
        names = [n for n in order if n in pops] + [n for n in pops if n not in order]
        out.append(
            f"network: {len(names)} populations, {len(f['network/connections'])} connections"
        )
        rows = []
        for n in names:
            pa = attributes(pops[n])
            rows.append([n, f"size {pa.get('size')}", f"role {pa.get('role')}",
                         f"activation {pa.get('activation')}",
                         "error units" if pa.get("has_error") else ""])  # fmt: skip
        out += _table(rows, "  ")
        conns = [attributes(g).get("name", k) for k, g in f["network/connections"].items()]
        if conns:
            out.append("  connections: " + ", ".join(conns))

        out.append(f"recordings: {len(rec.names)}")
        rows = []
        for name in rec.names:
            g = f["recordings"][name]
            ra = attributes(g)
            try:
                arr = rec[name]
                shape = f"{' x '.join(arr.dims)} {tuple(arr.shape)}"
            except RecordingError as e:  # a recording the reader cannot label: show the rows
                _, _, n = row_index(g)
                shape = f"rows x width ({n}, {g['data'].shape[1]}) [{e}]"
            mode = ra.get("mode")
            extra = (
                f"{ra.get('reduce')} over {window_text(ra['window'])}" if mode == "summary" else ""
            )
            rows.append([name, shape, str(ra.get("units")), f"mode {mode}",
                         f"every {ra.get('every')}", extra])  # fmt: skip
        out += _table(rows, "  ")

        tr = rec.trials
        n_tr = len(tr.get("trial_id", ()))
        labels = json.loads(attributes(f["trials"]).get("label_columns", "[]"))
        out.append(f"trials: {n_tr} rows; label columns: {', '.join(labels) or '(none)'}")
        rows = [["phase", _counts(tr["phase"])]] if n_tr else []
        rows += [[c, _counts(tr[c])] for c in labels if c in tr and n_tr]
        out += _table(rows, "  ")
        bt = rec.batches
        n_b = len(bt.get("batch_id", ()))
        out.append(f"batches: {n_b}" + (f" ({_counts(bt['phase'])})" if n_b else ""))
        return "\n".join(out) + "\n"
