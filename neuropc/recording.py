"""Streaming HDF5 recording of neural activity (schema in ``docs/recording.md``).

:meth:`Simulator.record <neuropc.simulator.Simulator.record>` binds probes to a simulator and
creates the file with every group and dataset before the first run; the file then switches to
SWMR mode, so another process can read it while it grows. Rows accumulate in one chunk-sized
buffer per dataset and are written as whole chunks (chunk shapes are set explicitly), so memory
is bounded whatever the run length and every flushed chunk survives a crash of the writer.

The backends gather recorded steps inside their inference loops (:class:`TraceSpec`); this module
turns one batch's traces into rows once per batch.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from . import probes as _probes
from .backends.base import RunOutput, TraceSpec
from .errors import RecordingError
from .inference import Inference

SCHEMA = "neuropc-recording"
SCHEMA_VERSION = 1
LABEL_BYTES = 64  # trial labels: fixed-length UTF-8 (appendable under SWMR)
_STR = h5py.string_dtype("utf-8")


def _version() -> str:
    from . import __version__

    return __version__


class _Stream:
    """An appendable dataset ``(rows, *shape)`` written one whole chunk at a time."""

    def __init__(self, group: h5py.Group, name: str, shape: tuple, dtype, chunk_bytes: int,
                 compression: str | None, rows: int | None = None) -> None:  # fmt: skip
        """``rows`` per chunk: from ``chunk_bytes`` unless given (row-aligned companions, e.g.
        a recording's trial ids, use its data's, so both flush together)."""
        dtype = np.dtype(dtype)
        row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        self.rows = rows or int(min(max(1, chunk_bytes // row_bytes), 1 << 16))
        kw = {}
        if compression:
            kw = dict(compression=compression, shuffle=True)
        self.ds = group.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
            chunks=(self.rows, *shape), **kw,
        )  # fmt: skip
        self.buf = np.zeros((self.rows, *shape), dtype)
        self.n = 0
        self.written = 0
        self.dirty = False  # written since the last flush
        self.pending: list = []
        self.direct = not compression  # raw chunks can bypass HDF5's chunk cache

    def defer(self, block) -> None:
        """Queue small rows (ids, table columns) for :meth:`drain`: one write per flush instead
        of Python work per batch."""
        self.pending.append(block)

    def drain(self) -> None:
        if self.pending:
            rows = np.concatenate([np.atleast_1d(np.asarray(b)) for b in self.pending])
            self.pending = []
            self.append(rows)

    def append(self, block: np.ndarray) -> None:
        """Buffer ``block``'s rows; write every completed chunk (the buffered partial chunk,
        then the whole chunks straight from ``block``). :meth:`flush` makes them visible."""
        block = np.asarray(block)
        k, i, wrote = len(block), 0, False
        if self.n:
            m = min(self.rows - self.n, k)
            self.buf[self.n : self.n + m] = block[:m]
            self.n += m
            i = m
            if self.n == self.rows:
                self._write(self.buf)
                self.n, wrote = 0, True
        whole = ((k - i) // self.rows) * self.rows
        if whole:
            self._write(block[i : i + whole])
            i += whole
            wrote = True
        if i < k:  # here the buffer is empty
            self.buf[: k - i] = block[i:]
            self.n = k - i
        self.dirty |= wrote

    def _write(self, rows: np.ndarray) -> None:
        w, n = self.written, len(rows)
        self.ds.resize(w + n, axis=0)
        if self.direct and n % self.rows == 0 and w % self.rows == 0:  # whole chunks, no cache
            rows = np.ascontiguousarray(rows, self.buf.dtype)
            zeros = (0,) * (rows.ndim - 1)
            for i in range(0, n, self.rows):
                self.ds.id.write_direct_chunk((w + i, *zeros), rows[i : i + self.rows])
        else:
            self.ds[w : w + n] = rows
        self.written = w + n

    def flush(self) -> None:
        if self.dirty:
            self.ds.flush()
            self.dirty = False

    def finish(self) -> None:
        """Write the queued and buffered rows (a partial chunk, rewritten when it fills) and
        flush."""
        self.drain()
        if self.n:
            self._write(self.buf[: self.n])
            self.n = 0
            self.dirty = True
        self.flush()


@dataclass
class _Plan:
    """How one batch's outputs map to a probe's rows (cached per phase and batch size)."""

    rows: np.ndarray  # positions in the trace rows
    cols: np.ndarray | slice | None  # positions in the trace columns, None = all in order
    stride: int  # trace steps per recorded step


class Recorder:
    """An open recording bound to a simulator. Use it as a context manager, or call
    :meth:`close`. Create it with :meth:`Simulator.record`."""

    def __init__(
        self,
        sim,
        path: str | os.PathLike | None,
        probes: Sequence[_probes.Probe],
        *,
        preset: str = "energy",
        trial_columns: Sequence[str] = (),
        live: bool = True,
        chunk_bytes: int = 1 << 18,
        compression: str | None = None,
        metadata: Mapping | None = None,
        overwrite: bool = True,
        flush_interval: float = 0.2,
    ) -> None:
        plan = sim.plan
        self.sim = sim
        self.plan = plan
        explicit = [_probes.bind(p, plan) for p in probes]
        _probes.check_unique(explicit)
        mine = {b.probe.name for b in explicit}  # an explicit probe replaces a preset's namesake
        self.bound = [_probes.bind(p, plan) for p in _probes.defaults(plan, preset)
                      if p.name not in mine] + explicit  # fmt: skip
        self.per_batch = [b for b in self.bound if b.probe.per_batch]
        if compression not in (None, "lzf", "gzip"):
            raise ValueError(f"compression must be None, 'lzf' or 'gzip'; got {compression!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1024:
            raise ValueError(f"chunk_bytes must be an integer >= 1024; got {chunk_bytes!r}")
        reserved = {"trial_id", "batch", "sample", "phase", "steps", "start_step", "stop_step"}
        for c in trial_columns:
            if not isinstance(c, str) or not c or c in reserved or "/" in c:
                raise ValueError(
                    f"trial column {c!r} is not allowed (reserved: {sorted(reserved)})"
                )
        self.trial_columns = tuple(trial_columns)
        self.path = None if path is None else os.fspath(path)
        if not (isinstance(flush_interval, int | float) and flush_interval >= 0):
            raise ValueError(f"flush_interval must be a number >= 0; got {flush_interval!r}")
        self.flush_interval = float(flush_interval)
        self._last_flush = time.monotonic()
        self.closed = False
        self.n_batches = 0
        self.n_trials = 0
        self.time = 0  # global step counter: trials laid end to end
        self._plans: dict = {}
        self._active: dict[str, bool] = {}
        self._traces: dict = {}
        self.file = self._create(overwrite, live, chunk_bytes, compression, metadata or {})

    # ---- file creation ------------------------------------------------------------------------
    def _create(self, overwrite, live, chunk_bytes, compression, metadata) -> h5py.File:
        if self.path is None:  # NEST's "memory" backend: the same layout in RAM
            f = h5py.File(f"neuropc-{id(self)}.h5", "w", driver="core", backing_store=False)
            live = False
        else:
            if os.path.exists(self.path) and not overwrite:
                raise RecordingError(f"{self.path!r} exists; pass overwrite=True to replace it")
            d = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(d):
                raise RecordingError(f"cannot record to {self.path!r}: no directory {d!r}")
            try:
                f = h5py.File(self.path, "w", libver="latest")
            except OSError as e:
                raise RecordingError(f"cannot create the recording {self.path!r}: {e}") from None
        try:
            self._layout(f, chunk_bytes, compression, metadata)
            if live:
                f.swmr_mode = True
        except Exception:
            f.close()
            raise
        return f

    def _layout(self, f: h5py.File, chunk_bytes: int, compression, metadata) -> None:
        sim, plan = self.sim, self.plan
        f.attrs.update({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "neuropc_version": _version(),
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
            "probes": [b.probe.describe() for b in self.bound],
            "trial_columns": list(self.trial_columns),
            "metadata": dict(metadata),
        }
        f.create_dataset("config", data=json.dumps(config, default=_jsonable), dtype=_STR)
        net = f.create_group("network")
        pops = net.create_group("populations")
        for i, n in enumerate(plan.names):
            g = pops.create_group(n)
            g.attrs.update({"size": int(plan.sizes[i]), "role": plan.roles[i],
                            "has_error": bool(plan.has_err[i]),
                            "activation": sim.network[n].activation.name})  # fmt: skip
        conns = net.create_group("connections")
        for c, name in enumerate(plan.conn_names):
            g = conns.create_group(name.replace("->", "__to__"))
            g.attrs.update({"name": name, "pre": plan.names[plan.cpre[c]],
                            "post": plan.names[plan.cpost[c]]})  # fmt: skip
        recs = f.create_group("recordings")
        self.streams: dict[str, dict[str, _Stream]] = {}
        for b in self.bound:
            p = b.probe
            g = recs.create_group(p.name)
            g.attrs.update({
                "target": p.target, "variable": p.variable, "units": _probes.UNITS[p.variable],
                "mode": "batch" if p.per_batch else p.mode, "every": int(p.every),
                "reduce": p.reduce, "window": json.dumps(list(p.window)),
                "phases": json.dumps(list(p.phases)),
                "row_kind": _row_kind(p), "columns": json.dumps(list(b.columns)),
            })  # fmt: skip
            width = b.width
            data = _Stream(g, "data", (width,), p.dtype, chunk_bytes, compression)
            data.ds.attrs["units"] = _probes.UNITS[p.variable]  # SONATA readers look here
            # one id per trial (or batch) and, for steps, its number of rows: rows of item j
            # follow those of items < j (the reader rebuilds step coordinates from ``every``)
            idx = "trial" if _row_kind(p) == "sample" else "batch"
            s = {"data": data, idx: _Stream(g, idx, (), np.int64, chunk_bytes // 8, None)}
            if p.mode == "steps" and not p.per_batch:
                s["nsteps"] = _Stream(g, "nsteps", (), np.int32, chunk_bytes // 8, None)
            self.streams[p.name] = s
            m = g.create_group("mapping")  # SONATA report mapping
            ids = b.units if not b.columns else np.arange(width)
            m.create_dataset("node_ids", data=np.asarray(ids, np.uint64)).attrs["sorted"] = (
                np.uint8(np.all(np.diff(ids) > 0))
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
        self.trial_streams = {
            k: _Stream(tr, k, (), dt, 0, None, n)
            for k, dt in [("trial_id", np.int64), ("batch", np.int64), ("sample", np.int32),
                          ("phase", "S5"), ("steps", np.int32), ("start_step", np.int64),
                          ("stop_step", np.int64), *((c, lab) for c in self.trial_columns)]
        }  # fmt: skip
        tr.attrs["label_columns"] = json.dumps(list(self.trial_columns))
        bt = f.create_group("batches")
        self.batch_streams = {
            k: _Stream(bt, k, (), dt, 0, None, n)
            for k, dt in [("batch_id", np.int64), ("phase", "S5"), ("first_trial", np.int64),
                          ("n_samples", np.int32), ("steps", np.int32), ("steps_done", np.int32),
                          ("seed", np.int64), ("learned", np.int8)]
        }  # fmt: skip
        self.progress = f.create_dataset("progress", data=np.zeros(2, np.int64))
        self.progress.attrs["columns"] = json.dumps(["batches", "trials"])

    # ---- per batch --------------------------------------------------------------------------
    def active(self, phase: str) -> bool:
        if self.closed:
            return False
        a = self._active.get(phase)
        if a is None:
            a = self._active[phase] = any(phase in b.probe.phases for b in self.bound)
        return a

    def trace_spec(self, phase: str, batch: int) -> TraceSpec | None:
        """The union of what this phase's steps/summary probes need from inside the loop."""
        key = (phase, batch)
        if key in self._traces:
            return self._traces[key]
        pl = self.plan
        rows, v, e, n, every = set(), set(), set(), set(), []
        for b in self.bound:
            p = b.probe
            if phase not in p.phases or p.per_batch or p.variable == "energy":
                continue
            if p.mode == "settled":
                continue
            every.append(p.every if p.mode == "steps" else 1)
            rows.update(_samples(p, batch).tolist())
            off = pl.eoff if p.variable == "error" else pl.voff
            cols = (off[b.pop] + b.units).tolist()
            {"value": v, "error": e, "noise": n}[p.variable].update(cols)
        spec = None
        if every:
            spec = TraceSpec(
                math.gcd(*every), *(np.array(sorted(s), np.int64) for s in (rows, v, e, n))
            )
        self._traces[key] = spec
        return spec

    def consume(self, out: RunOutput, phase: str, batch: int, cfg: Inference, seed: int,
                trials: Mapping[str, np.ndarray] | None, learned: bool,
                extras: Mapping[str, np.ndarray]) -> None:  # fmt: skip
        """Append one batch's rows. Raises :class:`RecordingError` (and stops recording) when
        the file cannot be written; the simulation state is not touched."""
        if self.closed:
            raise RecordingError("the recording is closed")
        try:
            self._consume(out, phase, batch, cfg, seed, trials, learned, extras)
        except OSError as e:
            self._abandon()
            raise RecordingError(
                f"writing the recording {self.path!r} failed ({e}); recording stopped, the "
                "simulation state is intact and the chunks flushed before are on disk"
            ) from None

    def _sync(self, s: dict) -> None:
        """A data chunk went to disk: write its companions' ids too (partial chunks), so a
        reader after a crash can label every flushed row."""
        for k, st in s.items():
            if k != "data":
                st.finish()

    def _consume(self, out, phase, batch, cfg, seed, trials, learned, extras) -> None:
        T = int(cfg.steps)
        spec = self.trace_spec(phase, batch)
        self._etab = None
        bid, t0 = self.n_batches, self.n_trials
        for b in self.bound:
            p = b.probe
            if phase not in p.phases:
                continue
            self._consume_probe(b, self.streams[p.name], out, phase, batch, cfg, extras, spec,
                                bid, t0, T)  # fmt: skip
        self._tables(out, phase, batch, seed, trials, learned, bid, t0, T)
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval:
            self._flush_written()
            self._last_flush = now

    def _flush_written(self) -> None:
        """Make the chunks written so far visible to readers and durable against a crash."""
        for s in self.streams.values():
            if s["data"].dirty:
                self._sync(s)
            else:
                for st in s.values():
                    st.drain()  # queued ids into their chunk buffers: memory stays bounded
            s["data"].flush()
        for st in (*self.trial_streams.values(), *self.batch_streams.values()):
            st.finish()
        self._mapping_time()
        self.progress[:] = [self.n_batches, self.n_trials]
        self.progress.flush()

    def _mapping_time(self) -> None:
        """SONATA's ``mapping/time = [start, stop, dt]``: stop follows the rows written."""
        for b in self.bound:
            t = self.file[f"recordings/{b.probe.name}/mapping/time"]
            t[1] = float(self.streams[b.probe.name]["data"].written * b.probe.every)
            t.flush()

    def _consume_probe(self, b, s, out, phase, batch, cfg, extras, spec, bid, t0, T) -> None:
        p = b.probe
        if p.per_batch:
            if bid % p.every == 0 and p.name in extras:
                s["data"].append(np.asarray(extras[p.name], np.float64)[None, :])
                s["batch"].defer(bid)
            return
        if p.variable == "energy":
            self._energy(b, s, out, T, bid)
            return
        samples = _samples(p, batch)
        if p.mode == "settled":
            if p.variable == "noise":
                src = np.zeros((len(samples), len(b.units)))
            else:
                buf, off = ((out.errors, self.plan.eoff) if p.variable == "error"
                            else (out.values, self.plan.voff))  # fmt: skip
                src = buf[_index(samples, batch), _index(off[b.pop] + b.units, None)]
            s["data"].append(src)
            s["trial"].defer(t0 + samples)
            return
        block, steps = self._from_trace(b, spec, out, phase, batch, samples)
        if p.mode == "steps":
            r, k, w = block.shape
            s["data"].append(block.reshape(r * k, w))
            s["trial"].defer(t0 + samples)
            s["nsteps"].defer(np.full(r, k))
        else:  # summary over the window
            w0, w1 = p.window
            sel = (steps >= w0) & (steps < (w1 if w1 is not None else T + 1))
            if not sel.any():
                raise ValueError(
                    f"probe {p.name!r}: window {p.window} holds no recorded step of a run "
                    f"with {T} steps"
                )
            s["data"].append(_reduce(block[:, sel].astype(np.float64), p.reduce, axis=1))
            s["trial"].defer(t0 + samples)

    def _tables(self, out, phase, batch, seed, trials, learned, bid, t0, T) -> None:
        lab = {}
        for c in self.trial_columns:
            v = None if trials is None else trials.get(c)
            lab[c] = np.full(batch, "", object) if v is None else np.asarray(v, object)
        ts = self.trial_streams
        ar = np.arange(batch)
        ts["trial_id"].defer(t0 + ar)
        ts["batch"].defer(np.full(batch, bid))
        ts["sample"].defer(ar)
        ts["phase"].defer(np.full(batch, phase.encode(), "S5"))
        ts["steps"].defer(np.full(batch, out.steps))
        start = self.time + ar * (T + 1)
        ts["start_step"].defer(start)
        ts["stop_step"].defer(start + T + 1)
        for c in self.trial_columns:
            ts[c].defer(np.array([_label(x, c) for x in lab[c]], dtype=object))
        bs = self.batch_streams
        for k, v in [("batch_id", bid), ("phase", phase.encode()), ("first_trial", t0),
                     ("n_samples", batch), ("steps", T), ("steps_done", out.steps),
                     ("seed", seed), ("learned", int(learned))]:  # fmt: skip
            bs[k].defer(v)
        self.n_batches += 1
        self.n_trials += batch
        self.time += batch * (T + 1)

    def _energy(self, b, s, out: RunOutput, T: int, bid: int) -> None:
        p = b.probe
        e = self._etab
        if e is None:  # the batch's energies (once per batch), padded after an early stop
            e = out.energies
            e = np.concatenate([e, e.sum(axis=1, keepdims=True)], axis=1)
            self._etab = e = np.concatenate([e, np.repeat(e[-1:], T + 1 - len(e), axis=0)])
        full = e[:, b.pop]  # pop -1 is the total column
        if p.mode == "steps":
            s["data"].append(full[:: p.every, None])
            s["batch"].defer(bid)
            s["nsteps"].defer(len(full[:: p.every]))
        elif p.mode == "settled":
            s["data"].append(full[-1:, None])
            s["batch"].defer(bid)
        else:
            w0, w1 = p.window
            seg = full[w0 : (w1 if w1 is not None else T + 1)]
            s["data"].append(np.array([[_reduce(seg, p.reduce, axis=0)]]))
            s["batch"].defer(bid)

    def _from_trace(self, b, spec, out, phase, batch, samples):
        """(len(samples), recorded steps, units) of a steps/summary probe, and the steps."""
        p = b.probe
        key = (p.name, phase, batch)
        plan = self._plans.get(key)
        if plan is None:
            off = self.plan.eoff if p.variable == "error" else self.plan.voff
            tcols = {"value": spec.vcols, "error": spec.ecols, "noise": spec.ncols}[p.variable]
            want = off[b.pop] + b.units
            cols = np.searchsorted(tcols, want)
            if len(cols) == len(tcols) and np.all(cols == np.arange(len(tcols))):
                cols = None
            elif np.all(np.diff(cols) == 1):  # a column range: a strided copy, not a gather
                cols = slice(int(cols[0]), int(cols[-1]) + 1)
            rows = np.searchsorted(spec.rows, samples)
            stride = (p.every if p.mode == "steps" else 1) // spec.every
            plan = self._plans[key] = _Plan(rows, cols, stride)
        tr = out.traces[{"value": 0, "error": 1, "noise": 2}[p.variable]]
        blk = tr
        if len(plan.rows) != tr.shape[0]:
            blk = blk[plan.rows]
        if plan.stride != 1:
            blk = blk[:, :: plan.stride]
        if plan.cols is not None:
            blk = blk[:, :, plan.cols]
        steps = np.arange(blk.shape[1]) * spec.every * plan.stride
        return blk, steps

    # ---- closing ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every partly filled buffer (an incomplete last chunk) and the progress counter."""
        if self.closed:
            return
        for s in self.streams.values():
            for st in s.values():
                st.finish()
        self._flush_written()  # the tables, SONATA times and progress
        self.file.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self._abandon()

    def _abandon(self) -> None:
        self.closed = True
        try:
            self.file.close()
        except Exception:  # already broken (e.g. disk full): what was flushed stays on disk
            pass
        if getattr(self.sim, "_recorder", None) is self:
            self.sim._recorder = None

    def open(self):
        """A reader of this recording (flushes first)."""
        from .reader import Recording

        self.flush()
        if self.path is None:
            return Recording(self.file, owned=False)
        from .reader import open as _open

        return _open(self.path)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- recording every simulator of a script (``--record PATH``) ------------------------------
_AUTO: dict = {}


def record_all(path: str | os.PathLike, preset: str = "settled") -> None:
    """Record every simulator that runs from now on in this process: the first to ``path``, the
    n-th to ``<stem>-<n><suffix>`` beside it (model scripts' ``--record PATH``). A simulator that
    already records (its script chose probes) keeps its own recording. Closed at exit."""
    import atexit

    if preset not in ("energy", "settled", "steps"):
        raise ValueError(f"record preset must be energy, settled or steps; got {preset!r}")
    if not _AUTO:
        atexit.register(close_all)
    _AUTO.update(path=os.fspath(path), preset=preset, count=0, open=[])


def claim_auto() -> str | None:
    """For a script that records with its own probes: stop :func:`record_all` from attaching to
    its simulators and return the ``--record`` path (None if none was given)."""
    if not _AUTO:
        return None
    path = _AUTO["path"]
    _AUTO.clear()
    return path


def auto_attach(sim) -> None:
    """Called before a simulator's first run: attach the process-wide recording, if any."""
    if not _AUTO or sim.recorder is not None or getattr(sim, "_auto_done", False):
        return
    sim._auto_done = True
    _AUTO["count"] += 1
    n, path = _AUTO["count"], _AUTO["path"]
    if n > 1:
        stem, ext = os.path.splitext(path)
        path = f"{stem}-{n}{ext or '.h5'}"
    _AUTO["open"].append(sim.record(path, preset=_AUTO["preset"]))


def close_all() -> list[str]:
    """Close the recordings made by :func:`record_all`; returns their paths."""
    paths = []
    for rec in _AUTO.get("open", []):
        rec.close()
        paths.append(rec.path)
    if _AUTO:
        _AUTO["open"] = []
    return paths


def _row_kind(p: _probes.Probe) -> str:
    return "batch" if p.per_batch or p.variable == "energy" else "sample"


def _index(idx: np.ndarray, n: int | None):
    """A slice where the sorted indices are a range (a view, not a gather), else the indices
    (as a column when the rows of a 2-d gather)."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx[:, None] if n is not None else idx


def _reduce(a: np.ndarray, how: str, axis: int):
    """A summary probe's reduction over the steps axis: mean, min, max or the Euclidean norm."""
    if how == "norm":
        return np.sqrt((a * a).sum(axis))
    return {"mean": np.mean, "min": np.min, "max": np.max}[how](a, axis=axis)


def _samples(p: _probes.Probe, batch: int) -> np.ndarray:
    if p.samples is None:
        return np.arange(batch, dtype=np.int64)
    s = np.asarray(p.samples, np.int64)
    return s[s < batch]  # a short last batch records the samples it has


def _label(x, column: str) -> bytes:
    b = str(x).encode("utf-8")
    if len(b) > LABEL_BYTES:
        raise ValueError(
            f"trial column {column!r}: label {str(x)[:20]!r}... is longer than {LABEL_BYTES} bytes"
        )
    return b


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


# ---- per-batch variables ----------------------------------------------------------------------
def batch_context(rec: Recorder, sim, arrays, phase: str, cfg: Inference, seed: int,
                  learned: bool) -> dict:  # fmt: skip
    """What per-batch probes need from before the batch runs: the parameters (for ``updates``)
    and PC-vs-BP alignment (computed on the batch with the pre-update parameters and the batch's
    noise seed, so the simulator's random streams are untouched)."""
    ctx: dict = {}
    due = [b for b in rec.per_batch if phase in b.probe.phases
           and rec.n_batches % b.probe.every == 0]  # fmt: skip
    if not due:
        return ctx
    ctx["due"] = due
    if any(b.probe.variable == "updates" for b in due):
        ctx["P0"] = sim.backend.get_params()
    if learned and any(b.probe.variable == "alignment" for b in due):
        if cfg.mode == "ipc":
            raise ValueError(
                "alignment probes need an end-of-inference gradient; mode 'ipc' has none"
            )
        from .alignment import gradient_alignment

        with sim._recording_paused():
            al = gradient_alignment(sim, arrays, inference=cfg.replace(seed=seed),
                                    steps=[cfg.steps])  # fmt: skip
        ctx["alignment"] = al
    return ctx


def batch_rows(rec: Recorder, sim, ctx: dict, out: RunOutput, learned: bool) -> dict:
    """One row per due per-batch probe, from the state after the batch."""
    rows: dict = {}
    if not ctx:
        return rows
    pl = sim.plan
    P1 = sim.backend.get_params() if any(b.probe.variable in ("weights", "updates")
                                        for b in ctx["due"]) else None  # fmt: skip
    for b in ctx["due"]:
        p = b.probe
        if p.variable == "precision":
            i = pl.index(p.target)
            rows[p.name] = pl.precision[int(pl.eoff[i]) + b.units]
            continue
        if b.conn < 0:
            continue
        sl, _ = pl.weight_slice(p.target)
        if p.variable == "weights":
            w = P1[sl]
            rows[p.name] = [np.linalg.norm(w), w.mean(), w.std(), w.min(), w.max()]
        elif p.variable == "updates" and learned:
            dw = P1[sl] - ctx["P0"][sl]
            g = (
                np.asarray(out.grads[sl], np.float64)
                if out.grads is not None
                else np.full(1, np.nan)
            )
            nw = np.linalg.norm(ctx["P0"][sl])
            rows[p.name] = [np.linalg.norm(dw), np.linalg.norm(g),
                            np.linalg.norm(dw) / nw if nw > 0 else np.nan]  # fmt: skip
        elif p.variable == "alignment" and "alignment" in ctx:
            al = ctx["alignment"]
            j = al.names.index(p.target)
            rows[p.name] = [al.cosine[-1, j], al.rel_error[-1, j], al.norm_ratio[-1, j]]
    return rows
