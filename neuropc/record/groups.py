"""A recording's native HDF5 groups read directly, for the views of other tools (the exports and
the plots): attributes as Python values, the labels of every row, rows streamed in blocks, and
recording names usable as file or NWB object names.

Unlike :mod:`neuropc.record.reader`, nothing here pads or labels the data: the exports stream the
rows as stored, so a recording of any size is read a block at a time.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

_BLOCK_BYTES = 1 << 22  # bytes read per block when streaming (plots, reductions)


def require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f'{what} needs the optional dependency {module!r}: pip install "neuropc[{extra}]"'
        ) from e


def attributes(obj: h5py.HLObject) -> dict:
    """The HDF5 attributes of ``obj`` as Python values (str, list, int, float)."""
    out = {}
    for k, v in obj.attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def sanitize(name: str) -> str:
    """A recording name as a file or NWB object name: ``"h1:error"`` -> ``"h1_error"``,
    ``"h1->h2:weights"`` -> ``"h1_to_h2_weights"``."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("->", "_to_")).strip("_.")
    return s or "recording"


def unique_names(names: list[str]) -> dict[str, str]:
    """Sanitized names, made unique with a numeric suffix where two collide."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:
        base = s = sanitize(n)
        i = 2
        while s.lower() in used:
            s = f"{base}_{i}"
            i += 1
        used.add(s.lower())
        out[n] = s
    return out


def row_index(group: h5py.Group) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Per-row labels of a native recording group: ``(item, step, n)``.

    ``item[r]`` is the trial (or batch) id of row ``r``, ``step[r]`` its inference step (None for
    recordings without steps), ``n`` the number of rows that are complete and labelled (a killed
    writer can leave the data and its ids uneven). Reads both layouts: one ``nsteps`` count per
    item, or one ``step`` per row.
    """
    ds = group["data"]
    key = "trial" if "trial" in group else "batch"
    ids = np.asarray(group[key][()], np.int64)
    every = int(attributes(group).get("every", 1))
    if "nsteps" in group:
        ns = np.asarray(group["nsteps"][()], np.int64)
        m = min(len(ids), len(ns))
        ids, ns = ids[:m], ns[:m]
        ends = np.cumsum(ns)
        m = int(np.searchsorted(ends, ds.shape[0], side="right"))  # whole items only
        ids, ns, ends = ids[:m], ns[:m], ends[:m]
        n = int(ends[-1]) if m else 0
        item = np.repeat(ids, ns)
        step = (np.arange(n, dtype=np.int64) - np.repeat(ends - ns, ns)) * every
        return item, step, n
    if "step" in group:
        n = min(ds.shape[0], len(ids), group["step"].shape[0])
        return ids[:n], np.asarray(group["step"][:n], np.int64), n
    n = min(ds.shape[0], len(ids))
    return ids[:n], None, n


def block_rows(ds: h5py.Dataset) -> int:
    """Rows per streamed block of ``ds`` (about 4 MiB)."""
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    return max(1, _BLOCK_BYTES // row)


def iter_blocks(ds: h5py.Dataset, n: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` blocks of the first ``n`` rows of ``ds``."""
    k = block_rows(ds)
    for i in range(0, n, k):
        yield i, ds[i : min(n, i + k)]


def window_text(window: Any) -> str:
    """A summary probe's window (the JSON attribute ``[first, stop]``) as ``"steps [0, end)"``."""
    w0, w1 = json.loads(window) if isinstance(window, str) else window
    return f"steps [{w0}, {'end' if w1 is None else w1})"
