"""Streaming HDF5 recording of neural activity: the :class:`Recorder`.

:meth:`Simulator.record <neuropc.simulator.Simulator.record>` binds probes to a simulator and
creates the file with every group and dataset before the first run (the layout:
:mod:`neuropc.record.schema`); the file then switches to SWMR mode, so another process can read it
while it grows. Rows go to chunked streams (:mod:`neuropc.record.streams`) that write whole chunks,
so memory is bounded whatever the run length and every flushed chunk survives a crash of the
writer.

The backends gather recorded steps inside their inference loops (:class:`TraceSpec`); this module
turns one batch's traces into rows once per batch. A batch's rows are all or nothing: if writing
them fails, every dataset is truncated back to its length before the batch. Per-batch variables
(weights, updates, alignment, precision) are computed around the batch by
:mod:`neuropc.record.per_batch`.
"""

from __future__ import annotations

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
from . import schema as _schema
from .per_batch import batch_context, batch_rows
from .schema import LABEL_BYTES, SCHEMA, SCHEMA_VERSION
from .schema import label as _label  # the simulator checks trial labels with it
from .streams import Stream as _Stream  # the same class: patching it here patches it

__all__ = ["LABEL_BYTES", "SCHEMA", "SCHEMA_VERSION", "Recorder", "batch_context", "batch_rows"]


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
        reserved = set(_schema.TRIAL_TABLE)
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
            _schema.check_target(self.path, dest, overwrite)
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
                _schema.OPEN_FOR_WRITING.add(dest)
                self._dest = dest
        except BaseException:
            f.close()
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return f

    def _layout(self, f: h5py.File, chunk_bytes: int, compression, metadata) -> None:
        lay = _schema.write_layout(f, self.sim, self.bound, self.trial_columns, chunk_bytes,
                                   compression, metadata)  # fmt: skip
        self.streams, self.progress = lay.streams, lay.progress
        self.trial_streams, self.batch_streams = lay.trial_streams, lay.batch_streams
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
        for k in _schema.INFERENCE_NUMBERS:  # None (nudge, error_rate unset) is stored as NaN
            v = getattr(cfg, k)
            bs[k].defer(np.nan if v is None else float(v))
        for k in _schema.INFERENCE_NAMES:
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
        _schema.OPEN_FOR_WRITING.discard(self._dest)
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
