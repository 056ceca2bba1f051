"""Streaming HDF5 recording of neural activity (schema in ``docs/recording.md``).

:meth:`Simulator.record <neuropc.simulator.Simulator.record>` binds probes to a simulator and
creates the file with every group and dataset before the first run; the file then switches to
SWMR mode, so another process can read it while it grows. Rows accumulate in one chunk-sized
buffer per dataset and are written as whole chunks (chunk shapes are set explicitly), so memory
is bounded whatever the run length and every flushed chunk survives a crash of the writer.

The backends gather recorded steps inside their inference loops (:class:`TraceSpec`); this module
turns one batch's traces into rows once per batch. A batch's rows are all or nothing: if writing
them fails, every dataset is truncated back to its length before the batch.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from ..backends.base import RunOutput, TraceSpec
from ..dynamics.inference import Inference
from ..errors import RecordingError
from . import probes as _probes

SCHEMA = "neuropc-recording"
SCHEMA_VERSION = 1
LABEL_BYTES = 64  # trial labels: fixed-length UTF-8 (appendable under SWMR)
_STR = h5py.string_dtype("utf-8")
_OPEN: set[str] = set()  # real paths of the recordings open for writing in this process


def _version() -> str:
    from .. import __version__

    return __version__


class _Stream:
    """An appendable dataset ``(rows, *shape)`` written one whole chunk at a time.

    Rows go to a chunk-sized buffer that holds the file rows ``start .. start + n`` (``start`` is
    a chunk boundary); a full buffer is written as one whole chunk. :meth:`finish` writes the
    buffered rows that are not on disk yet (a partial last chunk) and keeps them in the buffer:
    when the buffer fills, that chunk is written again, whole, so the dataset stays aligned on
    chunk boundaries and uncompressed chunks keep going straight to the file.

    :meth:`rollback` makes one batch's rows all-or-nothing: it truncates the dataset to its
    length before the batch and restores the buffered and the queued rows (see
    :meth:`Recorder.consume`).
    """

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
        self.start = 0  # file row of buf[0], a multiple of self.rows
        self.n = 0  # rows in the buffer
        self.written = 0  # rows on disk (the dataset's length): start <= written <= start + n
        self.dirty = False  # written since the last flush
        self.pending: list = []
        self.direct = not compression  # raw chunks can bypass HDF5's chunk cache
        self.epoch = [0]  # the recorder's batch counter, shared by its streams
        self._drained: tuple[int, list] = (-1, [])  # (batch, the queue it first drained)

    def defer(self, block) -> None:
        """Queue small rows (ids, table columns) for :meth:`drain`: one write per flush instead
        of Python work per batch."""
        self.pending.append(block)

    def drain(self) -> None:
        if self.pending:
            if self._drained[0] != self.epoch[0]:  # the queue before the batch, for a rollback
                self._drained = (self.epoch[0], self.pending)
            rows = np.concatenate([np.atleast_1d(np.asarray(b)) for b in self.pending])
            self.pending = []
            self.append(rows)

    def append(self, block: np.ndarray) -> None:
        """Buffer ``block``'s rows; write every completed chunk (the buffered one, then the
        whole chunks straight from ``block``). :meth:`flush` makes them visible."""
        block = np.asarray(block)
        k, i = len(block), 0
        if self.n:
            m = min(self.rows - self.n, k)
            self.buf[self.n : self.n + m] = block[:m]
            self.n += m
            i = m
            if self.n == self.rows:
                self._write(self.start, self.buf)
                self.start += self.rows
                self.n = 0
        whole = ((k - i) // self.rows) * self.rows
        if whole:
            self._write(self.start, block[i : i + whole])
            self.start += whole
            i += whole
        if i < k:  # here the buffer is empty
            self.buf[: k - i] = block[i:]
            self.n = k - i

    def _write(self, w: int, rows: np.ndarray) -> None:
        """Write ``rows`` at file row ``w`` (growing the dataset as needed)."""
        n = len(rows)
        if w + n > self.ds.shape[0]:
            self.ds.resize(w + n, axis=0)
        if self.direct and n % self.rows == 0 and w % self.rows == 0:  # whole chunks, no cache
            rows = np.ascontiguousarray(rows, self.buf.dtype)
            zeros = (0,) * (rows.ndim - 1)
            for i in range(0, n, self.rows):
                self.ds.id.write_direct_chunk((w + i, *zeros), rows[i : i + self.rows])
        else:
            self.ds[w : w + n] = rows
        self.written = max(self.written, w + n)
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.ds.flush()
            self.dirty = False

    def finish(self) -> None:
        """Write the queued and buffered rows not on disk yet (a partial last chunk, kept in the
        buffer and rewritten whole when it fills) and flush."""
        self.drain()
        if self.start + self.n > self.written:
            on_disk = self.written - self.start
            self._write(self.written, self.buf[on_disk : self.n])
        self.flush()

    # ---- one batch, all or nothing ------------------------------------------------------------
    def rollback(self, state: tuple[int, int, int, int]) -> None:
        """Drop every row added since ``state = (start, n, written, len(pending))``, taken in
        this batch before its first row: restore the queue and the buffer and truncate the
        dataset to its length then. Buffered rows that went to disk with a chunk since are read
        back from it."""
        start, n, written, queued = state
        ep, q = self._drained
        self.pending = (q if ep == self.epoch[0] else self.pending)[:queued]
        if self.start != start and n:  # the buffer was written out (whole) and reused
            self.buf[:n] = self.ds[start : start + n]
        self.start, self.n = start, n
        if self.ds.shape[0] != written:
            self.ds.resize(written, axis=0)
            self.dirty = True
        self.written = written
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
        overwrite: bool | str = True,
        flush_interval: float = 0.2,
    ) -> None:
        """``overwrite``: ``True`` replaces an existing neuropc recording at ``path`` (and
        refuses any other file), ``False`` refuses any existing file, ``"force"`` replaces any
        file. A directory is never replaced. The new file is built beside ``path`` and moved over
        it only once its layout is complete, so a failure here leaves the old file as it was."""
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
        if not (isinstance(overwrite, bool | np.bool_) or (isinstance(overwrite, str)
                                                           and overwrite == "force")):  # fmt: skip
            raise ValueError(
                "overwrite must be True (replace a neuropc recording), False (refuse any existing "
                f"file) or 'force' (replace any file); got {overwrite!r}"
            )
        overwrite = overwrite if isinstance(overwrite, str) else bool(overwrite)
        self._check_windows(sim.inference.steps, None, "the simulator's Inference")
        self.flush_interval = float(flush_interval)
        self._last_flush = time.monotonic()
        self.closed = False
        self.n_batches = 0
        self.n_trials = 0
        self.time = 0  # global step counter: trials laid end to end
        self._plans: dict = {}
        self._active: dict[str, bool] = {}
        self._traces: dict = {}
        self._fits: set = set()  # (phase, steps) whose summary windows were checked
        self._dest: str | None = None
        self.file = self._create(overwrite, live, chunk_bytes, compression, metadata or {})

    # ---- file creation ------------------------------------------------------------------------
    def _create(self, overwrite, live, chunk_bytes, compression, metadata) -> h5py.File:
        tmp = None
        if self.path is None:  # NEST's "memory" backend: the same layout in RAM
            f = h5py.File(f"neuropc-{id(self)}.h5", "w", driver="core", backing_store=False)
            live = False
        else:
            dest = os.path.realpath(self.path)  # a link: write where it points
            _check_target(self.path, dest, overwrite)
            d = os.path.dirname(dest)
            if not os.path.isdir(d):
                raise RecordingError(f"cannot record to {self.path!r}: no directory {d!r}")
            # built beside the destination, moved over it once complete (an atomic rename)
            tmp = os.path.join(d, f".{os.path.basename(dest)}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                f = h5py.File(tmp, "w-", libver="latest")
            except OSError as e:
                raise RecordingError(f"cannot create the recording {self.path!r}: {e}") from None
        try:
            self._layout(f, chunk_bytes, compression, metadata)
            if live:
                f.swmr_mode = True
            f.flush()
            if tmp is not None:
                os.replace(tmp, dest)
                _OPEN.add(dest)
                self._dest = dest
        except BaseException:
            f.close()
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
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
                          ("seed", np.int64), ("learned", np.int8),
                          # the rest of the batch's own Inference (config holds the default only)
                          *((k, np.float64) for k in _INFERENCE_NUMBERS),
                          *((k, f"S{n}") for k, n in _INFERENCE_NAMES.items())]
        }  # fmt: skip
        self.progress = f.create_dataset("progress", data=np.zeros(2, np.int64))
        self.progress.attrs["columns"] = json.dumps(["batches", "trials"])
        self._all_streams = [st for s in self.streams.values() for st in s.values()]
        self._all_streams += [*self.trial_streams.values(), *self.batch_streams.values()]
        self._epoch = [0]  # batches consumed: the streams save what a rollback needs once each
        for st in self._all_streams:
            st.epoch = self._epoch

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

    def check_run(self, phase: str, steps: int) -> None:
        """Refuse, before a batch runs (and before anything of it is written), a run whose
        ``steps`` do not cover the window of one of this phase's summary probes."""
        if (phase, steps) not in self._fits:
            self._check_windows(steps, phase, f"this batch (phase {phase!r})")
            self._fits.add((phase, steps))

    def _check_windows(self, steps: int, phase: str | None, where: str) -> None:
        for b in self.bound:
            p = b.probe
            if p.mode != "summary" or p.per_batch or (phase is not None and phase not in p.phases):
                continue
            w0, w1 = p.window
            if w0 > steps or (w1 is not None and w1 > steps + 1):
                raise ValueError(
                    f"probe {p.name!r}: window {tuple(p.window)} is longer than the run: {where} "
                    f"has {steps} steps (states 0..{steps}), so the window needs first <= "
                    f"{steps} and stop <= {steps + 1} (or None, to the end); shorten the window "
                    "or run more steps"
                )

    def consume(self, out: RunOutput, phase: str, batch: int, cfg: Inference, seed: int,
                trials: Mapping[str, np.ndarray] | None, learned: bool,
                extras: Mapping[str, np.ndarray]) -> None:  # fmt: skip
        """Append one batch's rows, all or nothing: if anything fails while they are written,
        every dataset and table is truncated back to its length before the batch and the error
        is raised (the recording goes on). Raises :class:`RecordingError` (and stops recording)
        when the file cannot be written; the simulation state is not touched."""
        if self.closed:
            raise RecordingError("the recording is closed")
        self.check_run(phase, int(cfg.steps))
        self._epoch[0] += 1
        streams = self._all_streams
        states = [(st.start, st.n, st.written, len(st.pending)) for st in streams]
        counters = (self.n_batches, self.n_trials, self.time)
        try:
            self._consume(out, phase, batch, cfg, seed, trials, learned, extras)
        except BaseException as e:
            undone = self._rollback(streams, states, counters)
            if isinstance(e, OSError) or not undone:
                self._abandon()
                raise RecordingError(
                    f"writing the recording {self.path!r} failed ({e}); recording stopped, the "
                    "simulation state is intact and the chunks flushed before are on disk"
                    + ("" if undone else "; removing this batch's rows failed too")
                ) from (None if isinstance(e, OSError) else e)
            raise

    def _rollback(self, streams: list[_Stream], states: list, counters: tuple) -> bool:
        """Return every stream to its state before the batch and restore the counters, the
        SONATA times and the progress counter. False if that failed too."""
        self.n_batches, self.n_trials, self.time = counters
        try:
            for st, s in zip(streams, states):
                st.rollback(s)
            self._mapping_time()
            self.progress[:] = [self.n_batches, self.n_trials]
            self.progress.flush()
        except Exception:
            return False
        return True

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
        self._tables(out, phase, batch, cfg, seed, trials, learned, bid, t0, T)
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
            s["data"].append(_reduce(block[:, sel].astype(np.float64), p.reduce, axis=1))
            s["trial"].defer(t0 + samples)

    def _tables(self, out, phase, batch, cfg, seed, trials, learned, bid, t0, T) -> None:
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
        for k in _INFERENCE_NUMBERS:  # None (nudge, error_rate unset) is stored as NaN
            v = getattr(cfg, k)
            bs[k].defer(np.nan if v is None else float(v))
        for k in _INFERENCE_NAMES:
            bs[k].defer(getattr(cfg, k).encode())
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
        _OPEN.discard(self._dest)
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


def _check_target(path: str, dest: str, overwrite: bool | str) -> None:
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
    if dest in _OPEN:
        raise RecordingError(
            f"cannot record to {path!r}: an open recording in this process is writing it; "
            "close that recording first (rec.close())"
        )
    if overwrite == "force":
        return
    what = _what(dest)
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


def _what(path: str) -> str | None:
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


# the Inference settings stored per batch beside steps and seed: numbers, and names (with their
# widths, enough for every valid value)
_INFERENCE_NUMBERS = ("rate", "temperature", "tol", "error_rate", "nudge")
_INFERENCE_NAMES = {"mode": 6, "init": 7, "errors": 7}


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
    rec.check_run(phase, int(cfg.steps))  # before the batch runs: nothing to undo
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
        from ..analysis.alignment import gradient_alignment

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
