"""The recording file format (``docs/recording.md``, "Schema"): its identity, its layout, and
what is at a path before a new recording replaces it.

* :data:`SCHEMA` and :data:`SCHEMA_VERSION` mark a neuropc recording (root attributes ``schema``,
  ``schema_version``); the reader refuses other files and newer versions.
* :func:`write_layout` creates every group and dataset of a new recording before its first run,
  with the :class:`~neuropc.record.streams.Stream` s its rows go to.
* :func:`check_target` and :func:`identify` decide whether a path may be replaced by a new
  recording (only a neuropc recording, unless forced; never a directory, nor a file this process
  is writing), reading the file with h5py only.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import RecordingError
from . import probes as _probes
from .streams import Stream

SCHEMA = "neuropc-recording"
SCHEMA_VERSION = 1
LABEL_BYTES = 64  # trial labels: fixed-length UTF-8 (appendable under SWMR)
STR = h5py.string_dtype("utf-8")
#: The trials table's own columns (not allowed as label columns).
TRIAL_TABLE = ("trial_id", "batch", "sample", "phase", "steps", "start_step", "stop_step")
# the Inference settings stored per batch beside steps and seed: numbers, and names (with their
# widths, enough for every valid value)
INFERENCE_NUMBERS = ("rate", "temperature", "tol", "error_rate", "nudge")
INFERENCE_NAMES = {"mode": 6, "init": 7, "errors": 7}
#: Real paths of the recordings open for writing in this process (never replaced).
OPEN_FOR_WRITING: set[str] = set()


def version() -> str:
    """The neuropc version written into new recordings."""
    from .. import __version__

    return __version__


def label(x, column: str) -> bytes:
    """A trial label as the file stores it (UTF-8, at most :data:`LABEL_BYTES` bytes)."""
    b = str(x).encode("utf-8")
    if len(b) > LABEL_BYTES:
        raise ValueError(
            f"trial column {column!r}: label {str(x)[:20]!r}... is longer than {LABEL_BYTES} bytes"
        )
    return b


def jsonable(o):
    """``json.dumps(default=...)`` of the stored configuration: arrays as lists."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def row_kind(p: _probes.Probe) -> str:
    """``"batch"`` for energies and per-batch variables (a row per batch), else ``"sample"``."""
    return "batch" if p.per_batch or p.variable == "energy" else "sample"


# ---- the layout -------------------------------------------------------------------------------
@dataclass
class Layout:
    """The streams of a new recording: one dict per probe (``data`` and its row ids), the trials
    and batches tables, and the ``progress`` counter."""

    streams: dict[str, dict[str, Stream]]
    trial_streams: dict[str, Stream]
    batch_streams: dict[str, Stream]
    progress: h5py.Dataset


def write_layout(f: h5py.File, sim, bound: Sequence[_probes.Bound], trial_columns: Sequence[str],
                 chunk_bytes: int, compression: str | None, metadata: Mapping) -> Layout:  # fmt: skip
    """Create every attribute, group and dataset of a new recording of ``sim`` in ``f`` (before
    the first run: a reader sees the whole layout from the start); returns its streams."""
    plan = sim.plan
    f.attrs.update({
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "neuropc_version": version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": sim.seed, "backend": sim.backend.name, "dtype": str(sim.dtype),
        "time_unit": "step", "dt": 1.0,
        "time_semantics": "row t of a steps recording is the state before inference update t "
        "(t = 0 is the initial state, the last row the settled state); trials are laid end to "
        "end on the global step axis in trial order, also when a batch ran them in parallel",
        # SONATA markers, so /recordings groups can be exposed as SONATA reports
        "magic": np.uint32(0x0A7A), "version": np.array([0, 1], np.uint32),
    })  # fmt: skip
    config = {
        "network": sim.network.spec(),
        "simulator": {"backend": sim.backend.name, "dtype": str(sim.dtype), "seed": sim.seed},
        "inference": dataclasses.asdict(sim.inference),
        "optimizer": {
            "type": type(sim.optimizer).__name__,
            **dataclasses.asdict(sim.optimizer),
        },
        "probes": [b.probe.describe() for b in bound],
        "trial_columns": list(trial_columns),
        "metadata": dict(metadata),
    }
    f.create_dataset("config", data=json.dumps(config, default=jsonable), dtype=STR)
    net = f.create_group("network")
    pops = net.create_group("populations")
    for i, n in enumerate(plan.names):
        g = pops.create_group(n)
        g.attrs.update({"size": int(plan.sizes[i]), "role": plan.roles[i],
                        "has_error": bool(plan.has_err[i]),
                        "activation": sim.network[n].activation.name,
                        "shape": json.dumps(list(plan.shapes[i])),
                        "dims": json.dumps(list(sim.network[n].dims))})  # fmt: skip
    conns = net.create_group("connections")
    for c, name in enumerate(plan.conn_names):
        g = conns.create_group(name.replace("->", "__to__"))
        g.attrs.update({"name": name, "pre": plan.names[plan.cpre[c]],
                        "pres": json.dumps([plan.names[q] for q in plan.cpres[c]]),
                        "kind": plan.conn_kinds[c],
                        "post": plan.names[plan.cpost[c]]})  # fmt: skip
    recs = f.create_group("recordings")
    streams: dict[str, dict[str, Stream]] = {}
    for b in bound:
        p = b.probe
        g = recs.create_group(p.name)
        g.attrs.update({
            "target": p.target, "variable": p.variable, "units": _probes.UNITS[p.variable],
            "mode": "batch" if p.per_batch else p.mode, "every": int(p.every),
            "reduce": p.reduce, "window": json.dumps(list(p.window)),
            "phases": json.dumps(list(p.phases)),
            "row_kind": row_kind(p), "columns": json.dumps(list(b.columns)),
        })  # fmt: skip
        width = b.width
        data = Stream(g, "data", (width,), p.dtype, chunk_bytes, compression)
        data.ds.attrs["units"] = _probes.UNITS[p.variable]  # SONATA readers look here
        # one id per trial (or batch) and, for steps, its number of rows: rows of item j
        # follow those of items < j (the reader rebuilds step coordinates from ``every``)
        idx = "trial" if row_kind(p) == "sample" else "batch"
        s = {"data": data, idx: Stream(g, idx, (), np.int64, chunk_bytes // 8, None)}
        if p.mode == "steps" and not p.per_batch:
            s["nsteps"] = Stream(g, "nsteps", (), np.int32, chunk_bytes // 8, None)
        streams[p.name] = s
        m = g.create_group("mapping")  # SONATA report mapping
        ids = b.units if not b.columns else np.arange(width)
        m.create_dataset("node_ids", data=np.asarray(ids, np.uint64)).attrs["sorted"] = np.uint8(
            np.all(np.diff(ids) > 0)
        )
        m.create_dataset("index_pointers", data=np.arange(width + 1, dtype=np.uint64))
        m["index_pointer"] = m["index_pointers"]  # the spelling BMTK's reader uses
        m.create_dataset("element_ids", data=np.zeros(width, np.uint32))
        m.create_dataset("element_pos", data=np.full(width, 0.5, np.float32))
        t = m.create_dataset("time", data=np.array([0.0, 0.0, float(p.every)]))
        t.attrs["units"] = "step"
        g.attrs["sonata_units"] = "step"
    tr = f.create_group("trials")
    n = max(1, chunk_bytes // 64)  # every column of a table flushes at the same rows
    lab = h5py.string_dtype("utf-8", LABEL_BYTES)
    trial_streams = {
        k: Stream(tr, k, (), dt, 0, None, n)
        for k, dt in [("trial_id", np.int64), ("batch", np.int64), ("sample", np.int32),
                      ("phase", "S5"), ("steps", np.int32), ("start_step", np.int64),
                      ("stop_step", np.int64), *((c, lab) for c in trial_columns)]
    }  # fmt: skip
    tr.attrs["label_columns"] = json.dumps(list(trial_columns))
    bt = f.create_group("batches")
    batch_streams = {
        k: Stream(bt, k, (), dt, 0, None, n)
        for k, dt in [("batch_id", np.int64), ("phase", "S5"), ("first_trial", np.int64),
                      ("n_samples", np.int32), ("steps", np.int32), ("steps_done", np.int32),
                      ("seed", np.int64), ("learned", np.int8),
                      # the rest of the batch's own Inference (config holds the default only)
                      *((k, np.float64) for k in INFERENCE_NUMBERS),
                      *((k, f"S{n}") for k, n in INFERENCE_NAMES.items())]
    }  # fmt: skip
    progress = f.create_dataset("progress", data=np.zeros(2, np.int64))
    progress.attrs["columns"] = json.dumps(["batches", "trials"])
    return Layout(streams, trial_streams, batch_streams, progress)


# ---- what is at a path before a recording replaces it ----------------------------------------
def check_target(path: str, dest: str, overwrite: bool | str) -> None:
    """Refuse to write over ``dest`` (``path`` resolved) unless ``overwrite`` allows it: True
    replaces a neuropc recording only, False nothing, "force" any file; never a directory, nor a
    file a recorder of this process is writing. Nothing is executed or changed to find out."""
    if not os.path.lexists(dest):
        return
    if os.path.isdir(dest):
        raise RecordingError(
            f"cannot record to {path!r}: it is a directory; a recording never replaces a "
            "directory, not even with overwrite='force': choose another path"
        )
    if dest in OPEN_FOR_WRITING:
        raise RecordingError(
            f"cannot record to {path!r}: an open recording in this process is writing it; "
            "close that recording first (rec.close())"
        )
    if overwrite == "force":
        return
    what = identify(dest)
    if overwrite is False:
        hint = "pass overwrite=True to replace it" if what is None else (
            "pass overwrite='force' to replace it")  # fmt: skip
        raise RecordingError(
            f"cannot record to {path!r}: it exists ({what or 'a neuropc recording'}) and "
            f"overwrite=False; {hint}"
        )
    if what is not None:
        raise RecordingError(
            f"cannot record to {path!r}: it exists and is {what}; overwrite=True replaces only "
            "a neuropc recording: pass overwrite='force' to replace it anyway"
        )


def identify(path: str) -> str | None:
    """None when ``path`` holds a neuropc recording (its root attribute ``schema``, read with
    h5py read-only), else what it holds, in words."""
    if not os.path.isfile(path):
        return "not a regular file"
    try:
        if not h5py.is_hdf5(path):
            return "not an HDF5 file"
    except OSError as e:
        return f"a file that cannot be read ({e})"
    try:
        try:
            f = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            f = h5py.File(path, "r")
        with f:
            schema, fmt = f.attrs.get("schema"), f.attrs.get("format")
    except Exception as e:  # damaged, locked by a writer, ...
        return f"an HDF5 file that cannot be opened to identify it ({e})"
    schema, fmt = (v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                   for v in (schema, fmt))  # fmt: skip
    if schema == SCHEMA:
        return None
    if fmt is not None:
        return f"an HDF5 file with format={str(fmt)!r}, not a neuropc recording"
    return f"an HDF5 file that is not a neuropc recording (no schema={SCHEMA!r} attribute)"
