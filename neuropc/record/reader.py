"""Reading recordings: lazy labelled arrays over the HDF5 datasets, trials and epochs.

``neuropc.open(path)`` opens a recording read-only (also while another process is still writing it,
in SWMR mode). Nothing in a file is executed: metadata is JSON and attributes, data are numeric
arrays. Each recording is a :class:`LabelledArray` whose dims depend on its mode:

=====================  ====================================  ===================================
probe                  dims                                  coordinates
=====================  ====================================  ===================================
steps (per sample)     ``trial, step, unit``                 trial ids, step numbers, unit ids
settled / summary      ``trial, unit``                       trial ids, unit ids
energy, steps          ``batch, step, column``               batch ids, step numbers
energy settled, and    ``batch, column``                     batch ids, column names
per-batch probes
=====================  ====================================  ===================================

Indexing reads only the rows it selects (one HDF5 read of a union of hyperslabs; HDF5 fetches the
chunks that hold them). A recording whose runs had different step counts has as many steps as the
longest run; a trial's positions after its own last step are NaN. Rows a killed or live writer had
not flushed are absent.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
from h5py import h5s

from ..errors import RecordingError
from .schema import SCHEMA, SCHEMA_VERSION


class LabelledArray:
    """An n-d array with named dims and coordinates (an xarray-like minimum, no dependency).

    ``data`` is a numpy array or a lazy row source; ``coords[dim]`` labels the positions of dim.
    ``a[...]`` / :meth:`isel` index by position, :meth:`sel` by coordinate value; ``values`` or
    ``np.asarray(a)`` reads the data.
    """

    def __init__(self, data: Any, dims: Sequence[str], coords: Mapping[str, np.ndarray],
                 attrs: Mapping | None = None, name: str = "") -> None:  # fmt: skip
        self._data = data
        self.dims = tuple(dims)
        self.coords = {d: np.asarray(coords[d]) for d in self.dims if d in coords}
        self.attrs = dict(attrs or {})
        self.name = name
        if len(self.dims) != len(data.shape):
            raise ValueError(f"{len(self.dims)} dims for data of shape {data.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def values(self) -> np.ndarray:
        d = self._data
        return d[tuple(slice(None) for _ in self.dims)] if isinstance(d, _LAZY) else np.asarray(d)

    def __array__(self, dtype=None, copy=None):
        v = self.values
        return v.astype(dtype) if dtype is not None else v

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> LabelledArray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (len(self.dims) - len(key))
        if len(key) != len(self.dims):
            raise IndexError(f"{len(key)} indices for dims {self.dims}")
        data = self._data[key] if isinstance(self._data, _LAZY) else _outer(self._data, key)
        dims, coords = [], {}
        for d, k in zip(self.dims, key):
            if isinstance(k, int | np.integer):
                continue  # an integer drops the dim
            dims.append(d)
            if d in self.coords:
                coords[d] = self.coords[d][k]
        return LabelledArray(data, dims, coords, self.attrs, self.name)

    def isel(self, **idx) -> LabelledArray:
        """Index by position per dim: ``a.isel(trial=slice(0, 10), unit=[0, 3])``."""
        self._known(idx)
        return self[tuple(idx.get(d, slice(None)) for d in self.dims)]

    def sel(self, **labels) -> LabelledArray:
        """Index by coordinate value per dim: ``a.sel(step=[0, 10, 20])`` (exact matches)."""
        self._known(labels)
        idx = {}
        for d, v in labels.items():
            c = self.coords[d]
            want = np.atleast_1d(np.asarray(v))
            pos = [np.flatnonzero(c == w) for w in want]
            missing = [w for w, p in zip(want, pos) if len(p) == 0]
            if missing:
                raise KeyError(f"{d}={missing[0]!r} is not a coordinate of {self.name!r}")
            flat = np.concatenate(pos)
            idx[d] = int(flat[0]) if np.ndim(v) == 0 and len(flat) == 1 else flat
        return self.isel(**idx)

    def mean(self, dim: str) -> LabelledArray:
        """Mean over one dim (NaN-aware)."""
        self._known({dim: None})
        ax = self.dims.index(dim)
        v = np.nanmean(self.values.astype(np.float64), axis=ax)
        dims = [d for d in self.dims if d != dim]
        return LabelledArray(v, dims, {d: self.coords[d] for d in dims if d in self.coords},
                             self.attrs, self.name)  # fmt: skip

    def to_xarray(self):
        """An ``xarray.DataArray`` (needs xarray installed)."""
        import xarray as xr

        return xr.DataArray(self.values, dims=self.dims, coords=self.coords, attrs=self.attrs,
                            name=self.name)  # fmt: skip

    def _known(self, d: Mapping) -> None:
        for k in d:
            if k not in self.dims:
                raise ValueError(f"{self.name!r} has no dim {k!r}; dims: {', '.join(self.dims)}")

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}: {n}" for d, n in zip(self.dims, self.shape))
        return f"<LabelledArray {self.name!r} ({dims}) {self.attrs.get('units', '')}>"


class _Rows:
    """A lazy view of an HDF5 dataset ``(rows, width)`` as ``(n, kmax, width)`` (item ``i`` owns
    ``counts[i]`` consecutive rows; an item with fewer rows than ``kmax`` is padded with NaN) or,
    with ``counts=None``, ``(n, width)`` (one row per item).

    Indexing reads only the rows it selects: one HDF5 read of the union of hyperslabs that hold
    them (items in runs, steps in runs; never the steps or items between). HDF5 reads storage a
    whole chunk at a time, so what comes from disk is the chunks holding those rows.
    """

    MAX_SLABS = 512  # more hyperslabs than this: read the covering range, then index in memory

    def __init__(self, ds: h5py.Dataset, n: int, counts: np.ndarray | None) -> None:
        self.ds, self.n = ds, n
        w = ds.shape[1]
        self.dtype = ds.dtype
        if counts is None:
            self.counts = np.ones(n, np.int64)
            self.shape: tuple[int, ...] = (n, w)
        else:
            self.counts = np.asarray(counts[:n], np.int64)
            self.shape = (n, int(self.counts.max()) if n else 0, w)
        self.stepped = counts is not None
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __getitem__(self, key: tuple) -> np.ndarray:
        sel = [np.arange(m)[k] for m, k in zip(self.shape, key)]
        drop = tuple(0 if np.ndim(i) == 0 else slice(None) for i in sel)
        sel = [np.atleast_1d(i) for i in sel]
        if not self.stepped:
            sel.insert(1, np.zeros(1, np.int64))
        want, back = [], []  # sorted unique positions to read, and how to reorder them
        for i in sel:
            if len(i) < 2 or np.all(np.diff(i) > 0):
                want.append(i)
                back.append(None)
            else:
                u, inv = np.unique(i, return_inverse=True)
                want.append(u)
                back.append(inv.ravel())
        out = self._read(*want)  # (items, steps, columns)
        for axis, inv in enumerate(back):
            if inv is not None:
                out = np.take(out, inv, axis=axis)
        if not self.stepped:
            out = out[:, 0]
        return out[drop]

    def _read(self, items: np.ndarray, steps: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Rows of ``items`` x ``steps`` (sorted, unique positions), columns ``cols``; NaN where
        an item has no such step."""
        shape = (len(items), len(steps), len(cols))
        if 0 in shape:
            return np.zeros(shape, self.dtype)
        c0, c1 = int(cols[0]), int(cols[-1]) + 1  # a chunk holds whole rows: read the column range
        ritems, rsteps = items, steps
        if len(_runs(rsteps)) * len(_runs(ritems, self.counts)) > self.MAX_SLABS:
            rsteps = np.arange(rsteps[0], rsteps[-1] + 1)
        if len(_runs(rsteps)) * len(_runs(ritems, self.counts)) > self.MAX_SLABS:
            ritems = np.arange(ritems[0], ritems[-1] + 1)  # one contiguous range of the file
            rsteps = np.arange(self.shape[1] if self.stepped else 1)
        cnt = self.counts[ritems]
        valid = rsteps[None, :] < cnt[:, None]  # False: padding past an item's last row
        m = int(cnt.max())
        if not valid.any():
            flat = np.zeros((0, c1 - c0), self.dtype)
        elif (
            len(ritems) == ritems[-1] - ritems[0] + 1
            and len(rsteps) >= m
            and rsteps[m - 1] == m - 1
        ):
            # every row of a range of items: one plain slab of the file
            flat = self.ds[self.offsets[ritems[0]] : self.offsets[ritems[-1] + 1], c0:c1]
        else:
            flat = self._slabs(ritems, rsteps, c0, c1, int(valid.sum()))
        if valid.all():
            block = flat.reshape(len(ritems), len(rsteps), c1 - c0)
        else:
            block = np.full((len(ritems), len(rsteps), c1 - c0), np.nan, self.dtype)
            block[valid] = flat
        if ritems is not items:
            block = block[np.searchsorted(ritems, items)]
        if rsteps is not steps:
            block = block[:, np.searchsorted(rsteps, steps)]
        return block if c1 - c0 == len(cols) else block[:, :, cols - c0]

    def _slabs(self, items, steps, c0: int, c1: int, n_rows: int) -> np.ndarray:
        """One read of rows ``offsets[i] + s`` (i in items, s in steps, s < counts[i]), in file
        order, which is (item, step) order."""
        fspace = self.ds.id.get_space()
        fspace.select_none()
        cnt = self.counts
        for u0, u1 in _runs(items, cnt):
            k = int(cnt[u0])
            for s0, s1 in _runs(steps[steps < k]):
                fspace.select_hyperslab((int(self.offsets[u0]) + s0, c0), (u1 - u0, 1), (k, 1),
                                        (s1 - s0, c1 - c0), op=h5s.SELECT_OR)  # fmt: skip
        flat = np.empty((n_rows, c1 - c0), self.dtype)
        self.ds.id.read(h5s.create_simple(flat.shape), fspace, flat)
        return flat


class _Unflat:
    """A row source whose last axis, a shaped population's units (flat, C order), is read as the
    population's ``shape``: ``(..., n) -> (..., *shape)``. Indexing reads the selected rows whole
    and then indexes the population's axes (each on its own, as :func:`_outer`)."""

    def __init__(self, base: _Rows, shape: tuple[int, ...]) -> None:
        self.base, self.pshape = base, tuple(shape)
        self.shape = tuple(base.shape[:-1]) + self.pshape
        self.dtype = base.dtype

    def __getitem__(self, key: tuple) -> np.ndarray:
        lead = len(self.base.shape) - 1
        block = self.base[tuple(key[:lead]) + (slice(None),)]
        block = block.reshape(block.shape[:-1] + self.pshape)
        first = block.ndim - len(self.pshape)
        # last axis first, so that an integer (which drops its axis) leaves earlier ones in place
        for axis in reversed(range(len(self.pshape))):
            k = key[lead + axis]
            if not (isinstance(k, slice) and k == slice(None)):
                pos = np.arange(self.pshape[axis])[k]
                block = np.take(block, pos, axis=first + axis)
        return block


_LAZY = (_Rows, _Unflat)


def _outer(data, key: tuple) -> np.ndarray:
    """``data[key]`` indexing each dim on its own (as xarray does: two lists select a block, not
    pairs); an integer drops its dim."""
    a = np.asarray(data)
    pos = [np.arange(n)[k] for n, k in zip(a.shape, key)]
    out = a[np.ix_(*(np.atleast_1d(p) for p in pos))]
    return out[tuple(0 if np.ndim(p) == 0 else slice(None) for p in pos)]


def _runs(a: np.ndarray, counts: np.ndarray | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive values of the sorted ``a``; with ``counts``, a run
    also ends where ``counts[a]`` changes (items with as many rows each)."""
    if len(a) == 0:
        return []
    cut = np.diff(a) != 1
    if counts is not None:
        cut |= np.diff(counts[a]) != 0
    ends = np.flatnonzero(cut)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(a) - 1]])
    return [(int(a[s]), int(a[e]) + 1) for s, e in zip(starts, stops)]


class Recording:
    """An open recording (see :func:`open`)."""

    def __init__(self, file: h5py.File, owned: bool = True) -> None:
        self.file = file
        self._owned = owned
        _check_schema(file, file.filename)
        self.attrs = {k: _attr(v) for k, v in file.attrs.items()}
        self.config = json.loads(_str(file["config"][()]))

    # ---- contents -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The recordings (probe names)."""
        return list(self.file["recordings"].keys())

    def refresh(self) -> None:
        """See rows a live writer has flushed since (SWMR)."""
        self.file.flush() if self.file.mode == "r+" else None
        for g in (self.file["recordings"], self.file["trials"], self.file["batches"]):
            g.visititems(lambda _, o: o.refresh() if isinstance(o, h5py.Dataset) else None)
        self.file["progress"].refresh()

    @property
    def progress(self) -> dict[str, int]:
        v = self.file["progress"][()]
        return {"batches": int(v[0]), "trials": int(v[1])}

    def _table(self, group: str) -> dict[str, np.ndarray]:
        g = self.file[group]
        cols = {k: g[k][()] for k in g}
        n = min((len(v) for v in cols.values()), default=0)  # a kill can leave columns uneven
        out = {}
        for k, v in cols.items():
            v = v[:n]
            if v.dtype.kind == "S":
                v = np.array([s.decode("utf-8") for s in v], dtype=object)
            out[k] = v
        return out

    @property
    def trials(self) -> dict[str, np.ndarray]:
        """The trials table: ``trial_id, batch, sample, phase, steps, start_step, stop_step`` and
        the declared label columns (str)."""
        return self._table("trials")

    @property
    def batches(self) -> dict[str, np.ndarray]:
        return self._table("batches")

    def __contains__(self, name: str) -> bool:
        return name in self.file["recordings"]

    def __getitem__(self, name: str) -> LabelledArray:
        """The recording ``name`` as a lazy labelled array (see the module docstring)."""
        if name not in self.file["recordings"]:
            raise KeyError(f"no recording {name!r}; recordings: {', '.join(self.names)}")
        g = self.file["recordings"][name]
        attrs = {k: _attr(v) for k, v in g.attrs.items()}
        ds = g["data"]
        cols = json.loads(attrs["columns"])
        per_trial = attrs["row_kind"] == "sample"
        ids = g["trial" if per_trial else "batch"][()]
        n_rows = min(ds.shape[0], len(ids))
        first = "trial" if per_trial else "batch"
        last = "column" if cols else "unit"
        lastc = np.array(cols, dtype=object) if cols else g["mapping/node_ids"][()].astype(np.int64)
        if "nsteps" in g:  # item j's rows follow those of items < j
            ns = np.asarray(g["nsteps"][: ids.shape[0]], np.int64)
            n = int(np.searchsorted(np.cumsum(ns), ds.shape[0], side="right"))  # whole items
            rows = _Rows(ds, n, ns[:n])
            steps = np.arange(rows.shape[1]) * int(attrs.get("every", 1))
            dims, coords = (first, "step"), {first: ids[:n], "step": steps}
        else:
            rows = _Rows(ds, n_rows, None)
            dims, coords = (first,), {first: ids[:n_rows]}
        shaped = None if cols else self._population_axes(attrs.get("target"), lastc)
        if shaped is None:
            return LabelledArray(rows, (*dims, last), {**coords, last: lastc}, attrs, name)
        pdims, pshape = shaped
        coords.update({d: np.arange(k) for d, k in zip(pdims, pshape)})
        return LabelledArray(_Unflat(rows, pshape), (*dims, *pdims), coords, attrs, name)

    def _population_axes(self, target, units: np.ndarray) -> tuple[tuple, tuple] | None:
        """``(dims, shape)`` of a shaped population recorded whole (every unit, in order), else
        None (a flat population, or a subset of units: read by unit)."""
        pops = self.file.get("network/populations")
        if not isinstance(target, str) or pops is None or target not in pops:
            return None
        a = pops[target].attrs
        if "shape" not in a:
            return None
        shape = tuple(json.loads(_str(a["shape"])))
        if len(shape) < 2 or not np.array_equal(units, np.arange(int(np.prod(shape)))):
            return None
        return tuple(json.loads(_str(a["dims"]))), shape

    def epochs(
        self,
        name: str,
        window: tuple[int, int],
        *,
        onsets: Sequence[int] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> LabelledArray:
        """Cut a steps recording into epochs on the global step axis (trials end to end).

        ``window = (first, stop)`` in steps relative to each onset (first may be negative, for a
        baseline); ``onsets`` default to the trial onsets (``trials["start_step"]``), optionally of
        the trials matching ``where`` (e.g. ``{"condition": "deviant"}``). Returns dims
        ``epoch, lag, unit``; positions the recording does not hold are NaN. Coordinates: ``epoch``
        (the onset's trial id, or the onset), ``lag``.
        """
        a = self[name]
        if "step" not in a.dims:
            raise ValueError(f"{name!r} is not a steps recording (dims {a.dims}); epochs need one")
        if a.dims[0] != "trial":
            raise ValueError(f"{name!r} is per batch; epochs need per-trial rows")
        w0, w1 = (int(v) for v in window)
        if w1 <= w0:
            raise ValueError(f"window must be (first, stop) with first < stop; got {window}")
        tr = self.trials
        start = dict(zip(tr["trial_id"].tolist(), tr["start_step"].tolist()))
        stop = dict(zip(tr["trial_id"].tolist(), tr["stop_step"].tolist()))
        ids = a.coords["trial"]
        steps = a.coords["step"]
        if onsets is None:
            sel = np.ones(len(tr["trial_id"]), bool)
            for k, v in (where or {}).items():
                if k not in tr:
                    raise ValueError(f"no trial column {k!r}; columns: {', '.join(tr)}")
                col = tr[k]
                want = str(v) if col.dtype == object else v  # labels are stored as strings
                hit = col == want
                if not hit.any():
                    vals = ", ".join(map(str, sorted(set(col.tolist()), key=str)[:20]))
                    raise ValueError(f"no trial has {k}={v!r}; values: {vals}")
                sel &= hit
            labels = tr["trial_id"][sel]
            onset_t = tr["start_step"][sel]
        else:
            onset_t = labels = np.asarray(onsets, np.int64)
        # global time of every recorded row: trial start + step; a trial that ran fewer steps
        # than the longest (NaN padding) has no rows past its stop
        t_row = np.array([start.get(int(i), -(1 << 62)) for i in ids])[:, None] + steps[None, :]
        held = t_row < np.array([stop.get(int(i), 1 << 62) for i in ids])[:, None]
        flat_t = t_row[held]
        order = np.argsort(flat_t, kind="stable")
        flat_sorted = flat_t[order]
        every = int(a.attrs.get("every", 1))
        lags = np.arange(w0, w1, every)
        data = a.values[held].astype(np.float64)
        out = np.full((len(onset_t), len(lags), a.shape[-1]), np.nan)
        for e, o in enumerate(onset_t):
            want = o + lags
            pos = np.searchsorted(flat_sorted, want)
            ok = (pos < len(flat_sorted)) & (
                flat_sorted[np.minimum(pos, len(flat_sorted) - 1)] == want
            )
            out[e, ok] = data[order[pos[ok]]]
        coords = {"epoch": labels, "lag": lags, "unit": a.coords["unit"]}
        return LabelledArray(out, ("epoch", "lag", "unit"), coords, a.attrs, name)

    # ---- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        if self._owned:
            self.file.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Recording {self.file.filename!r}: {len(self.names)} recordings>"


def open(path: str | os.PathLike) -> Recording:
    """Open a recording read-only. Works on a file another process is still writing (SWMR)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RecordingError(f"no such recording: {path!r}")
    if os.path.isdir(path):
        raise RecordingError(f"{path!r} is a directory, not a recording")
    _check_length(path)
    try:
        try:
            f = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            f = h5py.File(path, "r")
        schema = f.attrs.get("schema")  # a damaged superblock or root header fails here
    except (OSError, KeyError, RuntimeError) as e:
        raise RecordingError(
            f"{path!r} is not a readable HDF5 file (corrupt or truncated?): {e}"
        ) from None
    del schema
    try:
        rec = Recording(f)
        _probe_readable(f, path)
        return rec
    except Exception:
        f.close()
        raise


def _check_length(path: str) -> None:
    """A file shorter than the end-of-file address its superblock records was truncated (HDF5
    itself may loop on such a file rather than fail). Superblock versions 2 and 3 (what
    ``libver="latest"`` writes) hold that address at byte 28 when offsets are 8 bytes."""
    with builtins.open(path, "rb") as fh:
        head = fh.read(48)
    if head[:8] != b"\x89HDF\r\n\x1a\n":
        return  # not HDF5 at offset 0: h5py's own error says so
    if head[8] in (2, 3) and head[9] == 8:
        eof = int.from_bytes(head[28:36], "little")
        size = os.path.getsize(path)
        if size < eof:
            raise RecordingError(
                f"{path!r} is not a readable HDF5 file (corrupt or truncated?): it has {size} "
                f"bytes, its superblock says {eof}"
            )


def _probe_readable(f: h5py.File, path: str) -> None:
    """Touch every object header and the last row of every dataset: a truncated or damaged file
    fails here, with a clear error, rather than at some later read."""

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[0] > 0:
            obj[obj.shape[0] - 1]

    try:
        f.visititems(visit)
    except (OSError, KeyError, RuntimeError, ValueError) as e:
        raise RecordingError(
            f"{path!r} is not a readable HDF5 file (corrupt or truncated?): {e}"
        ) from None


def _check_schema(f: h5py.File, path: str) -> None:
    if _attr(f.attrs.get("schema")) != SCHEMA or "config" not in f or "recordings" not in f:
        raise RecordingError(f"{path!r} is not a neuropc recording (no {SCHEMA!r} schema)")
    v = int(f.attrs.get("schema_version", -1))
    if v > SCHEMA_VERSION:
        raise RecordingError(
            f"{path!r} uses recording schema version {v} (written by neuropc "
            f"{_attr(f.attrs.get('neuropc_version'))}); this neuropc reads versions up to "
            f"{SCHEMA_VERSION}: upgrade neuropc to read it"
        )
    if v < 1:
        raise RecordingError(f"{path!r} has an invalid schema_version {v}")


def _str(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
