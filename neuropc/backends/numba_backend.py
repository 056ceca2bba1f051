"""Numba CPU backend: one compiled call per batch runs all inference steps of all populations,
then the local gradients and the optimiser step (see ``_numba_kernels``)."""

from __future__ import annotations

import numpy as np

from ..dynamics.natural_gradient import NGDViews
from ..dynamics.optim import OPT_NONE, Optimizer
from ..dynamics.plan import Plan
from ..dynamics.schedule import AT_END, EACH_STEP, Schedule
from . import _numba_kernels as K
from . import row_blocks
from .base import Backend, RunOutput, TraceSpec, ngd_views


def _block_trace(rec: tuple, r0: int, r1: int, batch: int) -> tuple:
    """The kernel's recording arguments (``NumbaBackend._trace_buffers``) for rows ``r0 .. r1`` of
    a batch: the recorded rows among them, renumbered from ``r0``, and their rows of the trace
    buffers (the recorded rows are sorted, so those are one contiguous slice), and the rows of the
    noise scratch."""
    every, rows, vcols, ecols, ncols, VT, ET, NT, NZ = rec
    if every == 0 or (r0 == 0 and r1 == batch):
        return rec
    lo, hi = (int(i) for i in np.searchsorted(rows, [r0, r1]))
    nz = NZ[r0:r1] if len(ncols) else NZ
    return every, rows[lo:hi] - r0, vcols, ecols, ncols, VT[lo:hi], ET[lo:hi], NT[lo:hi], nz


class NumbaBackend(Backend):
    name = "numba"

    def __init__(self, plan: Plan, dtype: np.dtype, device: str | None = None) -> None:
        if device not in (None, "cpu"):
            raise ValueError(f"the numba backend runs on the CPU only; got device={device!r}")
        super().__init__(plan, dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        dt = self.dtype
        self.P = np.zeros(plan.n_params, dt)
        self.G = np.zeros(plan.n_params, dt)
        self.S1 = np.zeros(plan.n_params, dt)
        self.S2 = np.zeros(plan.n_params, dt)
        # the optimiser step's copy of the old parameters and state, to undo a non-finite step
        self.BK = np.zeros((3, plan.n_params), dt)
        # the gradients of a batch's row blocks, one row each (grown by _block_grads)
        self._gb = np.zeros((0, plan.n_params), dt)
        self.PI = plan.precision.astype(dt)
        # the slow (parameter) precision, from which every run's fast precisions start, and the
        # fast EMA rule's running covariance
        self.PI_slow = self.PI.copy()
        self.SF = np.zeros(plan.n_error)
        self._fast = np.flatnonzero(plan.prec_fast)
        self.trainable = plan.trainable.astype(dt)
        self.opt_t = 0
        self._bufs: dict[int, tuple[np.ndarray, ...]] = {}
        self._trace_cache: dict[tuple, tuple] = {}
        # per (batch, rows): the buffers' row views of a row block, and per row blocks, their
        # shares of the batch and the parameter ranges of the reduction (built once: per batch,
        # after a long kernel with cold caches, such Python cost about 1% of the standard task)
        self._row_views: dict[tuple, tuple] = {}
        self._block_layouts: dict[tuple, tuple] = {}
        self._dummy = np.zeros((1, 1), dt)  # the preconditioner's buffer when it is off
        z, e = np.zeros(0, np.int64), np.zeros((0, 0, 0), dt)
        self._no_trace = (0, z, z, z, z, e, e, e, np.zeros((1, 1), dt))
        self._i64 = [
            np.ascontiguousarray(a, dtype=np.int64) for a in (plan.sizes, plan.voff, plan.eoff)
        ]
        dist = np.ascontiguousarray(plan.dist, dtype=np.int64)
        conn = [
            np.ascontiguousarray(a, dtype=np.int64)
            for a in (plan.cpre, plan.cpost, plan.cwoff, plan.boff)
        ]
        # the largest weight matrix, in bytes (how a batch is cut into row blocks)
        self._weight_bytes = (
            max(
                (int(plan.sizes[q]) * int(plan.sizes[p]) for q, p in zip(plan.cpre, plan.cpost)),
                default=0,
            )
            * self.dtype.itemsize
        )
        # the network's part of the kernel's arguments
        self._structure = (
            *self._i64,
            plan.has_err,
            plan.act_code,
            plan.act_param,
            *conn,
            self.trainable,
            dist,
        )

    # ---- parameters -------------------------------------------------------------------------
    def get_params(self) -> np.ndarray:
        return self.P.astype(np.float64)

    def set_params(self, flat: np.ndarray) -> None:
        self.P[:] = flat

    def reset_optimizer(self) -> None:
        self.S1[:] = 0
        self.S2[:] = 0
        self.opt_t = 0

    def set_precision(self, p: int, value: np.ndarray) -> None:
        eo, n = int(self.plan.eoff[p]), int(self.plan.sizes[p])
        self.PI[eo : eo + n] = value
        self.PI_slow[eo : eo + n] = value

    def undo_step(self) -> None:
        self._restore_step()
        self.opt_t -= 1

    def _restore_step(self) -> None:
        """Parameters and optimiser state as before the last step, which kept the old values of
        what it changed in BK (the step count is the caller's)."""
        self.P[:] = self.BK[0]
        if self._last_state >= 1:
            self.S1[:] = self.BK[1]
        if self._last_state == 2:
            self.S2[:] = self.BK[2]

    def optimizer_state(self) -> dict[str, np.ndarray | int]:
        return {"m": self.S1.astype(np.float64), "v": self.S2.astype(np.float64), "t": self.opt_t}

    def set_optimizer_state(self, m: np.ndarray, v: np.ndarray, t: int) -> None:
        self.S1[:] = m
        self.S2[:] = v
        self.opt_t = int(t)

    def gradient_tensor(self):
        import torch

        return torch.from_numpy(self.G)  # (a view: no copy)

    def step(self, learn: Optimizer) -> int:
        # the kernels' own end-of-batch step (its BK copy serves undo_step)
        kind, hp = learn.kind, learn.hyper()
        self._last_state = K.changed_state(kind, hp)
        bad = K.optimizer_step(kind, self.P, self.G, self.S1, self.S2, hp, self.opt_t + 1,
                               self.trainable, self.BK)  # fmt: skip
        if bad < 0:
            self.opt_t += 1
        return int(bad)

    def ngd_views(self) -> NGDViews:
        """Views of the flat parameters and gradients, and the last run's f(x) and errors."""
        pl, bufs = self.plan, self._buffers(self._last_batch)
        FX, EPS = bufs[1], bufs[6]
        return ngd_views(pl, self.P, self.G, self.trainable, self.PI,
                         lambda q: FX[:, pl.value_slice(pl.names[q])],
                         lambda p: EPS[:, pl.error_slice(pl.names[p])])  # fmt: skip

    # ---- buffers ----------------------------------------------------------------------------
    def _buffers(self, batch: int) -> tuple[np.ndarray, ...]:
        bufs = self._bufs.get(batch)
        if bufs is None:
            nv, ne, dt = self.plan.n_value, self.plan.n_error, self.dtype
            # X, FX, DFX, BP are (B, n_value); MUC, MUV, EPS, OWN are (B, n_error)
            bufs = tuple(np.zeros((batch, nv), dt) for _ in range(4)) + tuple(
                np.zeros((batch, ne), dt) for _ in range(4)
            )
            if len(self._bufs) >= 4:  # keep a few batch sizes (e.g. the last partial batch)
                self._bufs.pop(next(iter(self._bufs)))
            self._bufs[batch] = bufs
        return bufs

    def _precond_buffer(self, batch: int, on: bool) -> np.ndarray:
        """The preconditioner's per-chain statistics ``(batch, n_value)`` (a dummy when off)."""
        if not on:
            return self._dummy
        v = getattr(self, "_v", None)
        if v is None or v.shape[0] != batch:
            v = self._v = np.zeros((batch, self.plan.n_value), self.dtype)
        return v

    def values_buffer(self, batch: int) -> np.ndarray:
        return self._buffers(batch)[0]

    # ---- running ----------------------------------------------------------------------------
    def run(
        self,
        batch: int,
        sched: Schedule,
        seed: int,
        *,
        learn: Optimizer | None = None,
        trace: TraceSpec | None = None,
    ) -> RunOutput:
        bufs = self._buffers(batch)
        pl = self.plan
        self._last_batch = batch
        energies = np.zeros((sched.steps + 1, pl.n_pops), np.float64)
        mom = np.zeros((2, batch, pl.n_value) if sched.moments else (2, 1, 1), self.dtype)
        if len(self._fast):
            self.PI[:] = self.PI_slow
        kind, hp = (learn.kind, learn.hyper()) if learn is not None else (OPT_NONE, np.zeros(6))
        # which state buffers the optimiser changes (and BK keeps): for undo_step
        # (its plain Python: a compiled call from here costs a dispatch, 5 us a batch)
        self._last_state = K.changed_state.py_func(kind, hp)
        # steps during inference change the weights: keep a copy to restore if inference
        # diverges (the optimiser steps check themselves: one that would write a non-finite value
        # writes nothing)
        saved = (
            (self.P.copy(), self.S1.copy(), self.S2.copy())
            if sched.opt_when == EACH_STEP and learn
            else None
        )
        rec = self._trace_buffers(trace, sched.steps, batch)
        V = self._precond_buffer(batch, sched.precond)

        def args(r0: int, r1: int, G: np.ndarray, en: np.ndarray, zero: bool, opt: int) -> tuple:
            """The kernel's arguments for rows r0..r1 (a view of every per-row buffer)."""
            return (
                *self._rows(bufs, batch, r0, r1), self.P, self.PI, G, self.S1, self.S2, self.BK,
                *self._structure,
                *self._policy(sched, seed, r0, batch, en, zero, block_mom.get((r0, r1), mom),
                              packed),
                V[r0:r1] if sched.precond else V, sched.precond, sched.beta2, sched.precond_eps,
                sched.bias_correction, opt, hp, self.opt_t, *_block_trace(rec, r0, r1, batch),
            )  # fmt: skip

        spans = (
            row_blocks.blocks(batch, weight_bytes=self._weight_bytes)
            if sched.rows_independent and K.ROW_BLOCKS else [(0, batch)]
        )  # fmt: skip
        # packed weights serve row blocks, whose gemms run on one MKL thread each: a batch run
        # whole (large weights, or one thread) multiplies on MKL's threads, where the packed
        # product ran slower (width 2048: 200 -> 272 ms a batch, measured)
        packed = K.PACKED and len(spans) > 1
        # a block's moments of its own (a row slice of (2, B, n) is not contiguous), copied back
        block_mom = {
            (r0, r1): np.zeros((2, r1 - r0, pl.n_value), self.dtype) for r0, r1 in spans
        } if sched.moments and len(spans) > 1 else {}  # fmt: skip
        if len(spans) == 1:
            done, bad_t, bad_p, nsteps, bad_param = K.infer(
                *args(0, batch, self.G, energies, sched.zero_grads, kind)
            )
        else:
            done, bad_t, bad_p, nsteps, bad_param = self._infer_blocks(
                spans, args, energies, sched, kind, hp
            )
            for (r0, r1), m in block_mom.items():
                mom[:, r0:r1] = m
        failed = bad_t >= 0 or bad_param >= 0
        if failed and saved is not None:
            self.P[:], self.S1[:], self.S2[:] = saved
            nsteps = 0
        self.opt_t += nsteps
        out_grads = self.G if (not failed and sched.grads) else None
        traces = rec[5:8] if trace is not None else None
        fast = {
            int(p): self.PI[pl.error_slice(pl.names[p])].astype(np.float64) for p in self._fast
        } if len(self._fast) else {}  # fmt: skip
        return RunOutput(
            bufs[0], bufs[6], energies[: done + 1], int(done), int(bad_t), int(bad_p), out_grads,
            traces, bad_param=int(bad_param), fast_precision=fast,
            moments=(mom[0], mom[1]) if sched.moments else None,
        )  # fmt: skip

    def _policy(self, sched: Schedule, seed: int, row0: int, batch: int, energies: np.ndarray,
                zero_grads: bool, mom: np.ndarray, packed: bool) -> tuple:  # fmt: skip
        """The schedule's part of the kernel's arguments, up to the moments."""
        pl = self.plan
        return (
            sched.clamped, sched.init, sched.frozen, sched.var_pred, sched.is_pre,
            sched.refresh_act, sched.leaks, sched.backproj, sched.first_bp, sched.receives_bp,
            sched.grad_at, sched.steps, sched.rate, sched.noise_sd, sched.tol, sched.err_rate,
            int(seed), row0, batch, energies, sched.grads, zero_grads, sched.opt_when,
            sched.nudge, sched.nudged, sched.grad_scale, sched.fast_rule, pl.prec_hp, self.SF,
            sched.collect, sched.collect_weight, mom, sched.moments, packed,
        )  # fmt: skip

    def _infer_blocks(self, spans, args, energies, sched, kind, hp) -> tuple[int, ...]:
        """The kernel on row blocks, one per thread (:mod:`.row_blocks`); then, on the same
        threads, each taking a range of the parameters, the gradient summed over the blocks in
        block order and the optimiser step. The energies are the blocks' batch means weighted by
        their rows. Returns what ``K.infer`` returns.

        Every block's gradient starts from zero, so the batch's gradient is rewritten as a whole
        (the kernel run whole overwrites every entry it computes and leaves the rest: in every
        schedule that runs in blocks, it computes them all)."""
        n = len(spans)
        GB = self._block_grads(n)
        parts = np.zeros((n, *energies.shape))  # each block's batch-mean energies
        share, cuts = self._block_layout(spans)
        opt = kind if sched.opt_when == AT_END else OPT_NONE
        blocks = tuple(args(*spans[i], GB[i], parts[i], True, OPT_NONE) for i in range(n))
        summary = np.zeros(6, np.int64)  # see K._summarise; [4]: entries that became non-finite
        row_blocks.launch((np.zeros(3, np.int64), summary, np.zeros((n, 4), np.int64), blocks,
                           parts, share, energies, self.P, self.G, GB, self.S1, self.S2, hp,
                           self.opt_t + 1, self.trainable, self.BK, cuts, opt, bool(sched.grads)),
                          n)  # fmt: skip
        failed, bad_t, bad_p, done, nonfinite, in_sum = summary.tolist()
        if failed:  # (the kernels raise only where they cannot allocate scratch memory)
            raise MemoryError("a row block of the batch could not allocate its scratch memory; "
                              "nothing was learned")  # fmt: skip
        if bad_t >= 0:
            if in_sum and opt != OPT_NONE:  # finite blocks, non-finite sum: the step ran
                self._restore_step()  # already (and was not counted yet): take it back
            return bad_t, bad_t, bad_p, 0, -1
        if opt == OPT_NONE:
            return done, -1, -1, 0, -1
        if nonfinite:  # some entry became non-finite: name it, restore the step
            return done, -1, -1, 0, int(K.undo_optimizer_step(opt, self.P, self.S1, self.S2, hp,
                                                              self.BK))  # fmt: skip
        return done, -1, -1, 1, -1

    def _rows(self, bufs: tuple, batch: int, r0: int, r1: int) -> tuple:
        """The per-row buffers ``bufs`` (of ``batch`` rows) at rows ``r0 .. r1``: views, made once
        (while ``bufs`` are the batch's buffers)."""
        if r0 == 0 and r1 == batch:
            return bufs
        key = (batch, r0, r1)
        hit = self._row_views.get(key)
        if hit is None or hit[0] is not bufs:
            if len(self._row_views) >= 16:
                self._row_views.pop(next(iter(self._row_views)))
            hit = self._row_views[key] = (bufs, tuple(b[r0:r1] for b in bufs))
        return hit[1]

    def _block_layout(self, spans: list) -> tuple[np.ndarray, np.ndarray]:
        """Row blocks ``spans``: each block's share of the batch's rows, and the parameter ranges
        ``cuts[j] .. cuts[j + 1]`` (16-aligned) that the threads reduce and step."""
        key = tuple(spans)
        hit = self._block_layouts.get(key)
        if hit is None:
            n, np_ = len(spans), self.plan.n_params
            share = np.array([(r1 - r0) / spans[-1][1] for r0, r1 in spans])
            cuts = np.array([k * np_ // n // 16 * 16 for k in range(n)] + [np_], np.int64)
            if len(self._block_layouts) >= 16:
                self._block_layouts.pop(next(iter(self._block_layouts)))
            hit = self._block_layouts[key] = (share, cuts)
        return hit

    def _block_grads(self, n: int) -> np.ndarray:
        """``(n, n_params)`` gradient buffers, one per row block (reused from batch to batch)."""
        if self._gb.shape[0] < n:
            self._gb = np.zeros((n, self.plan.n_params), self.dtype)
        return self._gb[:n]

    def _trace_buffers(self, trace: TraceSpec | None, steps: int, batch: int) -> tuple:
        """The kernel's recording arguments. The output arrays are reused from run to run (like
        the value buffers, they are valid until the next run): fresh multi-MB arrays per batch
        would cost page faults every time."""
        if trace is None:
            return self._no_trace
        key = (id(trace), steps, batch)
        hit = self._trace_cache.get(key)
        if hit is not None and hit[0] is trace:
            args = hit[1]
            if len(trace.ncols):
                args[7].fill(0)  # rows after an early stop, and clamped columns, hold no noise
            return args
        dt = self.dtype
        r, s = len(trace.rows), trace.n_steps(steps)
        bufs = [np.zeros((r, s, len(c)), dt) for c in (trace.vcols, trace.ecols, trace.ncols)]
        nz = np.zeros((batch, self.plan.n_value) if len(trace.ncols) else (1, 1), dt)
        cols = [np.ascontiguousarray(a, np.int64) for a in (trace.rows, trace.vcols, trace.ecols,
                                                            trace.ncols)]  # fmt: skip
        args = (int(trace.every), *cols, *bufs, nz)
        if len(self._trace_cache) >= 4:
            self._trace_cache.pop(next(iter(self._trace_cache)))
        self._trace_cache[key] = (trace, args)
        return args
