"""Export to Neurodata Without Borders: :func:`to_nwb` (needs ``pynwb``: ``pip install
"neuropc[nwb]"``; the layout and the time mapping are in ``docs/nwb.md``).

Per-sample recordings become ``TimeSeries`` on the global step axis (one inference step is
``seconds_per_step`` seconds), the trials table the NWB trials, energies and per-batch variables
``DynamicTable`` s in ``analysis``. Data are streamed from the recording in gzip-compressed
buffers of whole chunks, never read whole.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from ..errors import RecordingError
from .groups import attributes, require, row_index, sanitize, unique_names, window_text

SECONDS_PER_STEP = 1e-3  # NWB time of one inference step (see docs/nwb.md)
_NAMESPACE = uuid.UUID("5d0b6f2e-8a4c-5f3e-9c1b-6e7a2d4f0c11")  # NWB identifiers of neuropc files
_CHUNK_BYTES = 1 << 20  # NWB datasets: about 1 MiB per HDF5 chunk, full width
_BUFFER_CHUNKS = 16  # chunks per buffer read and written at once by the NWB export


_ROW_ITERATOR: type | None = None


def _row_iterator_class() -> type:
    """A ``GenericDataChunkIterator`` over the rows of an HDF5 dataset (built lazily: hdmf is an
    optional dependency)."""
    global _ROW_ITERATOR
    if _ROW_ITERATOR is not None:
        return _ROW_ITERATOR
    from hdmf.data_utils import GenericDataChunkIterator

    class RowIterator(GenericDataChunkIterator):
        """Streams rows ``[0, n)`` of ``ds`` (optionally one column, optionally in ``order``)
        in buffers of ``_BUFFER_CHUNKS`` chunks of about ``_CHUNK_BYTES``, full width."""

        def __init__(self, ds: h5py.Dataset, n: int, *, column: int | None = None,
                     order: np.ndarray | None = None) -> None:  # fmt: skip
            self.ds, self.n, self.column, self.order = ds, int(n), column, order
            shape = self._get_maxshape()
            row = max(1, int(np.prod(shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
            c = int(min(self.n, max(1, _CHUNK_BYTES // row)))
            b = int(min(self.n, c * _BUFFER_CHUNKS))
            super().__init__(chunk_shape=(c, *shape[1:]), buffer_shape=(b, *shape[1:]))

        def _get_data(self, selection: tuple) -> np.ndarray:
            rows, rest = selection[0], selection[1:]
            if self.order is not None:
                idx = self.order[rows]
                lo, hi = int(idx.min()), int(idx.max()) + 1
                block = self.ds[lo:hi][idx - lo]
            else:
                block = self.ds[rows]
            if self.column is not None:
                block = block[:, self.column]
            return block[(slice(None), *rest)]

        def _get_maxshape(self) -> tuple:
            if self.column is not None or self.ds.ndim == 1:
                return (self.n,)
            return (self.n, *self.ds.shape[1:])

        def _get_dtype(self) -> np.dtype:
            return self.ds.dtype

    _ROW_ITERATOR = RowIterator
    return RowIterator


def _stream(ds: h5py.Dataset, n: int, *, column: int | None = None,
            order: np.ndarray | None = None) -> Any:  # fmt: skip
    """``H5DataIO`` (gzip) over a row iterator of ``ds``."""
    from pynwb import H5DataIO

    it = _row_iterator_class()(ds, n, column=column, order=order)
    return H5DataIO(data=it, compression="gzip", chunks=it.chunk_shape)


def _identifier(rec) -> str:
    """A UUID determined by the recording: its creation time, configuration, progress and
    trials table (re-exporting the same recording gives the same identifier)."""
    h = hashlib.sha256()
    for k in ("created", "seed", "neuropc_version", "backend"):
        h.update(f"{k}={rec.attrs.get(k)};".encode())
    h.update(json.dumps(rec.config, sort_keys=True, default=str).encode())
    h.update(json.dumps(rec.progress, sort_keys=True).encode())
    for k, v in sorted(rec.trials.items()):
        h.update(k.encode())
        h.update(np.asarray(v).astype(str).tobytes() if v.dtype == object else v.tobytes())
    return str(uuid.uuid5(_NAMESPACE, h.hexdigest()))


def _start_time(created: Any) -> _dt.datetime:
    try:
        t = _dt.datetime.fromisoformat(str(created))
    except ValueError:
        raise RecordingError(
            f"the recording's 'created' attribute {created!r} is not an ISO 8601 time"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def _experiment_description(config: Mapping) -> str:
    net = config.get("network", {})
    pops = ", ".join(
        f"{p['name']} ({p['size']}, {p.get('role', '?')}, {p.get('activation', '?')})"
        for p in net.get("populations", [])
    )
    conns = ", ".join(f"{c['pre']}->{c['post']}" for c in net.get("connections", []))
    inf = config.get("inference", {})
    opt = config.get("optimizer", {})
    sim = config.get("simulator", {})
    return (
        "In-silico predictive-coding network simulated with neuropc. Populations (units, role, "
        f"activation): {pops}. Connections: {conns or 'none'}. Inference: {inf.get('steps')} "
        f"steps at rate {inf.get('rate')} (mode {inf.get('mode')}, init {inf.get('init')}, "
        f"temperature {inf.get('temperature')}). Optimizer: {opt.get('type')} "
        f"(lr {opt.get('lr')}). Backend {sim.get('backend')}, dtype {sim.get('dtype')}, seed "
        f"{sim.get('seed')}. The full configuration (JSON) is in general/source_script."
    )


def _subject(subject: Any, Subject: type) -> Any:
    if subject is None:
        return Subject(
            subject_id="neuropc-model",
            description="in-silico predictive-coding network; no animal",
        )
    if isinstance(subject, Subject):
        return subject
    if isinstance(subject, Mapping):
        return Subject(**subject)
    raise TypeError(f"subject must be a pynwb Subject, a mapping of its fields or None; got "
                    f"{type(subject).__name__}")  # fmt: skip


def _timing(t: np.ndarray, sps: float) -> dict:
    """``starting_time`` and ``rate`` where the rows are evenly spaced, else ``timestamps``."""
    d = np.diff(t)
    if len(t) >= 2 and d[0] > 0 and np.all(d == d[0]):
        return {"starting_time": float(t[0]) * sps, "rate": 1.0 / (float(d[0]) * sps)}
    from pynwb import H5DataIO

    return {"timestamps": H5DataIO(t.astype(np.float64) * sps, compression="gzip")}


def _nwb_file(rec, session_description: str | None, subject: Any, sps: float) -> Any:
    """The NWBFile with its metadata (no data yet)."""
    from pynwb import NWBFile
    from pynwb.file import Subject

    cfg, at = rec.config, rec.attrs
    meta = cfg.get("metadata", {}) or {}

    def listed(k: str) -> list[str] | None:
        v = meta.get(k)
        return None if v is None else [str(x) for x in (v if isinstance(v, list) else [v])]

    default = (
        f"neuropc simulation: {rec.progress['trials']} trials in {rec.progress['batches']} "
        f"batches, exported from {os.path.basename(rec.file.filename)}"
    )
    return NWBFile(
        session_description=session_description or default,
        identifier=_identifier(rec),
        session_start_time=_start_time(at.get("created")),
        experiment_description=_experiment_description(cfg),
        source_script=json.dumps(cfg, indent=1, default=str),
        source_script_file_name="neuropc-config.json",
        data_collection=(
            f"Simulated with neuropc {at.get('neuropc_version')} (backend {at.get('backend')}, "
            f"{at.get('dtype')}, seed {at.get('seed')})."
        ),
        notes=(
            f"Time: one inference step = {sps:g} s. Trials are laid end to end on one step axis "
            "in trial order, also when a batch ran them in parallel; a trial of T inference "
            "steps spans T + 1 steps (its initial state and T updates). "
            + str(at.get("time_semantics", ""))
        ),
        keywords=["predictive coding", "computational model", "simulation", "neuropc"],
        experimenter=listed("experimenter"),
        institution=meta.get("institution"),
        lab=meta.get("lab"),
        session_id=meta.get("session_id"),
        subject=_subject(subject, Subject),
    )


def _populations_table(rec) -> Any:
    from hdmf.common import DynamicTable, VectorData

    pops = rec.file["network/populations"]
    order = [p["name"] for p in rec.config.get("network", {}).get("populations", [])]
    names = [n for n in order if n in pops] + [n for n in pops if n not in order]
    pa = [attributes(pops[n]) for n in names]
    cols = [
        ("population", "population name", names),
        ("size", "number of units", [int(a["size"]) for a in pa]),
        ("role", "input, hidden or target", [str(a["role"]) for a in pa]),
        ("activation", "activation function", [str(a["activation"]) for a in pa]),
        ("has_error", "whether it has error units", [bool(a["has_error"]) for a in pa]),
        ("shape", "shape of the population (JSON); units are numbered in C order of it",
         [str(a.get("shape", f"[{int(a['size'])}]")) for a in pa]),
        ("dims", "names of the shape's axes (JSON)",
         [str(a.get("dims", '["unit"]')) for a in pa]),
    ]  # fmt: skip
    return DynamicTable(
        name="model_populations", description="populations of the simulated network",
        columns=[VectorData(name=k, description=d, data=v) for k, d, v in cols],
    )  # fmt: skip


class _Trials:
    """Start and stop step of every trial id (-1 where the trials table has no row)."""

    def __init__(self, table: Mapping[str, np.ndarray]) -> None:
        ids = np.asarray(table.get("trial_id", np.zeros(0, np.int64)), np.int64)
        self.size = int(ids.max()) + 1 if len(ids) else 0
        self.start = np.full(self.size, -1, np.int64)
        self.stop = np.full(self.size, -1, np.int64)
        if len(ids):
            self.start[ids], self.stop[ids] = table["start_step"], table["stop_step"]

    def known_prefix(self, item: np.ndarray) -> int:
        """Rows before the first row of a trial the (killed) writer had not listed yet."""
        ok = (item >= 0) & (item < self.size)
        ok[ok] = self.start[item[ok]] >= 0
        return len(item) if ok.all() else int(np.argmin(ok))

    def times(self, item: np.ndarray, step: np.ndarray | None) -> np.ndarray:
        """Global step of every row: the trial's start + the row's step (steps recordings), or
        the trial's last step (settled and summary rows)."""
        return self.start[item] + step if step is not None else self.stop[item] - 1


_HOW = {
    "steps": "one row per recorded inference step (every {every}) of each trial, trials end to end",
    "settled": "one row per trial: the state after inference, at the trial's last step",
    "summary": "one row per trial: the {reduce} over inference {window}, at the trial's last step",
}


def _add_series(misc: Any, rec, groups: dict, names: dict, trials: _Trials,
                sps: float) -> list[str]:  # fmt: skip
    """One TimeSeries per per-sample recording, and the model_units table; returns the names of
    recordings without rows (not exported)."""
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries

    units: dict[str, list] = {k: [] for k in ("population", "variable", "index_in_population",
                                              "series", "series_column")}  # fmt: skip
    skipped = []
    for name, g in groups.items():
        ra = attributes(g)
        if ra["row_kind"] != "sample":
            continue
        item, step, n = row_index(g)
        n = trials.known_prefix(item)
        if n == 0:
            skipped.append(name)
            continue
        item, step = item[:n], None if step is None else step[:n]
        t = trials.times(item, step)
        order = None
        if np.any(np.diff(t) < 0):  # e.g. Probe(samples=[3, 1]): rows in time order
            order = np.argsort(t, kind="stable")
            t = t[order]
        mode = ra["mode"]
        misc.add(TimeSeries(
            name=names[name],
            data=_stream(g["data"], n, order=order),
            unit=str(ra["units"]),
            description=f"{ra['variable']} units of population {ra['target']} ({mode}): "
            + _HOW[mode].format(**{**ra, "window": window_text(ra["window"])}),
            comments=f"neuropc recording {name!r}; columns are listed in model_units",
            continuity="continuous" if mode == "steps" else None,
            **_timing(t, sps),
        ))  # fmt: skip
        ids = np.asarray(g["mapping/node_ids"][()], np.int64)
        units["population"] += [str(ra["target"])] * len(ids)
        units["variable"] += [str(ra["variable"])] * len(ids)
        units["index_in_population"] += ids.tolist()
        units["series"] += [names[name]] * len(ids)
        units["series_column"] += list(range(len(ids)))
    if units["series"]:
        desc = {
            "population": "population of the unit",
            "variable": "recorded variable (value, error or noise)",
            "index_in_population": "index of the unit in its population (flat, in C order of "
            "the population's shape in model_populations)",
            "series": "name of the TimeSeries in this processing module",
            "series_column": "column of that TimeSeries' data",
        }
        misc.add(DynamicTable(
            name="model_units", description="one row per data column of the model's TimeSeries",
            columns=[VectorData(name=k, description=desc[k], data=v) for k, v in units.items()],
        ))  # fmt: skip
    return skipped


def _trials_table(rec, sps: float) -> Any | None:
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    tr = rec.trials
    if not len(tr.get("trial_id", ())):
        return None
    cols = [
        ("start_time", "start of the trial (s)", tr["start_step"].astype(np.float64) * sps),
        ("stop_time", "end of the trial (s)", tr["stop_step"].astype(np.float64) * sps),
        ("phase", "train (targets clamped, learning) or test", [str(x) for x in tr["phase"]]),
        ("batch", "batch id (analysis/batches)", tr["batch"].astype(np.int64)),
        ("sample", "position in its batch", tr["sample"].astype(np.int64)),
        ("steps", "inference steps run (fewer than configured after an early stop)",
         tr["steps"].astype(np.int64)),
    ]  # fmt: skip
    taken = {c[0] for c in cols} | {"tags", "timeseries", "id"}
    for c in json.loads(attributes(rec.file["trials"]).get("label_columns", "[]")):
        if c in tr:
            cols.append((c if c not in taken else f"label_{c}", f"trial label {c!r}",
                         [str(x) for x in tr[c]]))  # fmt: skip
    return TimeIntervals(
        name="trials", description="trials (samples) laid end to end in trial order",
        id=np.asarray(tr["trial_id"], np.int64),
        columns=[VectorData(name=k, description=d, data=v) for k, d, v in cols],
    )  # fmt: skip


def _add_analysis(nwb: Any, rec, groups: dict, names: dict) -> list[str]:
    """The batches table and one DynamicTable per energy or per-batch recording; returns the
    names of recordings without rows."""
    from hdmf.common import DynamicTable, VectorData

    bt = rec.batches
    if len(bt.get("batch_id", ())):
        bdesc = {
            "phase": "train or test", "first_trial": "id of its first trial",
            "n_samples": "trials in the batch", "steps": "configured inference steps",
            "steps_done": "inference steps run", "seed": "noise seed of the batch",
            "learned": "whether the parameters were updated",
        }  # fmt: skip
        cols = []
        for k, d in bdesc.items():
            if k in bt:
                v = bt[k]
                v = ([str(x) for x in v] if v.dtype == object
                     else v.astype(bool) if k == "learned" else v.astype(np.int64))  # fmt: skip
                cols.append(VectorData(name=k, description=d, data=v))
        nwb.add_analysis(DynamicTable(
            name="batches", description="batches of trials run by the simulator",
            id=np.asarray(bt["batch_id"], np.int64), columns=cols,
        ))  # fmt: skip
    skipped = []
    for name, g in groups.items():
        ra = attributes(g)
        if ra["row_kind"] == "sample":
            continue
        item, step, n = row_index(g)
        if n == 0:
            skipped.append(name)
            continue
        cols = [VectorData(name="batch", description="batch id (analysis/batches)", data=item)]
        if step is not None:
            cols.append(VectorData(name="step", description="inference step", data=step))
        for j, c in enumerate(json.loads(ra["columns"])):
            cols.append(VectorData(name=sanitize(str(c)), description=f"{c} ({ra['units']})",
                                   data=_stream(g["data"], n, column=j)))  # fmt: skip
        what = "batch-mean energy" if ra["variable"] == "energy" else ra["variable"]
        per = "one row per batch" + (" and recorded inference step" if step is not None else "")
        nwb.add_analysis(DynamicTable(
            name=names[name], columns=cols,
            description=f"{what} of {ra['target']} ({ra['mode']}), {per}; neuropc recording "
            f"{name!r}",
        ))  # fmt: skip
    return skipped


def to_nwb(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    session_description: str | None = None,
    subject: Any = None,
    seconds_per_step: float = SECONDS_PER_STEP,
) -> str:
    """Export the recording at ``path`` to the NWB file ``out`` (replaced if it exists); returns
    ``out``.

    * Per-sample recordings (value, error, noise; steps, settled, summary) become one
      ``TimeSeries`` each in the processing module ``misc``, data ``(rows, units)`` as in the
      recording. Steps rows lie on the global step axis (trials end to end); settled and summary
      rows at their trial's last step. Evenly spaced rows get ``starting_time`` and ``rate``,
      others ``timestamps``. A table ``model_units`` maps every data column to its population,
      variable and unit index; ``model_populations`` describes the network.
    * The trials table becomes the NWB trials (start/stop time, phase, batch, sample, steps and
      the label columns).
    * Energy and per-batch recordings (one row per batch or batch step) and the batches table
      go to ``analysis`` as ``DynamicTable`` s.

    One inference step is ``seconds_per_step`` seconds of NWB time (default 1 ms). Data are
    streamed in blocks and gzip-compressed. ``subject``: a ``pynwb.file.Subject``, a mapping of its
    fields, or None for an in-silico subject without age, sex or species (see ``docs/nwb.md`` for
    the nwbinspector checks that therefore fail). Needs ``pynwb`` (``pip install
    "neuropc[nwb]"``).
    """
    require("pynwb", "nwb", "NWB export")
    from pynwb import NWBHDF5IO

    from .reader import open as _open

    sps = float(seconds_per_step)
    if not (math.isfinite(sps) and sps > 0):
        raise ValueError(f"seconds_per_step must be a positive number; got {seconds_per_step!r}")
    out = os.fspath(out)
    if os.path.abspath(out) == os.path.abspath(os.fspath(path)):
        raise ValueError("the NWB file must not replace the recording it is exported from")

    with _open(path) as rec:
        nwb = _nwb_file(rec, session_description, subject, sps)
        misc = nwb.create_processing_module(
            "misc", "neuropc model activity: one TimeSeries per recording (value, error or noise "
            "of one population), the model's populations and the unit of every data column"
        )  # fmt: skip
        misc.add(_populations_table(rec))
        groups = {n: rec.file["recordings"][n] for n in rec.names}
        names = unique_names(list(groups))
        skipped = _add_series(misc, rec, groups, names, _Trials(rec.trials), sps)
        trials = _trials_table(rec, sps)
        if trials is not None:
            nwb.trials = trials
        skipped += _add_analysis(nwb, rec, groups, names)
        if skipped:
            nwb.notes += " Recordings without rows (not exported): " + ", ".join(skipped) + "."
        with NWBHDF5IO(out, "w") as io:
            io.write(nwb)
    return out
