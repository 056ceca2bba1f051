"""Trace gathering of the torch backend: device-side buffers that the inference loop fills at the
recorded steps, copied to the host once per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..dynamics.schedule import Schedule
from .base import TraceSpec

if TYPE_CHECKING:
    from .torch_backend import TorchBackend


class TraceBuffers:
    """Device-side trace buffers of one batch: each recorded step is a few index ops, no host
    transfer; the traces are copied to the host once, after the loop."""

    def __init__(self, be: TorchBackend, trace: TraceSpec, sched: Schedule) -> None:
        pl, dev = be.plan, be.device
        # a nudged target holds y in x but reports mu + beta (y - mu) = y - (1 - beta) d / beta
        # (as State does), with d = eps / Pi: the factor (1 - beta) / (beta Pi) per population
        beta = float(sched.nudge)
        steps, noise = sched.steps, sched.noise_sd > 0
        self.nudged = {
            p: (1.0 - beta) / beta if be.pi[p] is None else (1.0 - beta) / (beta * be.pi[p])
            for p in range(len(pl.sizes))
            if beta != 0.0 and bool(sched.nudged[p])
        }
        self.every = int(trace.every)
        self.n_steps = trace.n_steps(steps)
        rows = torch.as_tensor(np.asarray(trace.rows, np.int64), device=dev)
        self.rows = rows
        kw = dict(dtype=be.tdt, device=dev)
        r = len(trace.rows)
        self.VT = torch.zeros((r, self.n_steps, len(trace.vcols)), **kw)
        self.ET = torch.zeros((r, self.n_steps, len(trace.ecols)), **kw)
        self.NT = torch.zeros((r, self.n_steps, len(trace.ncols)), **kw)
        self.v = _pieces(trace.vcols, pl.voff, pl.sizes, dev)
        self.e = _pieces(trace.ecols, pl.eoff, pl.sizes, dev)
        self.n = (
            dict((p, a) for p, a in _pieces(trace.ncols, pl.voff, pl.sizes, dev)) if noise else {}
        )

    def _put(self, out, s, pieces, tensors) -> None:
        for p, (a, b, local) in pieces:
            src = tensors[p].index_select(0, self.rows)
            out[:, s, a:b] = src if local is None else src.index_select(1, local)

    def gather(self, s: int, x: list, eps: list) -> None:
        if self.nudged:
            x = list(x)
            for p, k in self.nudged.items():
                x[p] = x[p] - k * eps[p]
        self._put(self.VT, s, self.v, x)
        self._put(self.ET, s, self.e, eps)

    def noise(self, s: int, p: int, xi) -> None:
        if p in self.n:
            a, b, local = self.n[p]
            src = xi.index_select(0, self.rows)
            self.NT[:, s, a:b] = src if local is None else src.index_select(1, local)

    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(t.cpu().numpy() for t in (self.VT, self.ET, self.NT))


def _pieces(cols, off, sizes, dev) -> list:
    """Split sorted buffer columns by population: [(p, (start, stop, local index or None))]."""
    cols = np.asarray(cols, np.int64)
    out = []
    for p, (o, n) in enumerate(zip(off, sizes)):
        if o < 0:
            continue
        a, b = np.searchsorted(cols, [o, o + n])
        if b > a:
            local = cols[a:b] - o
            full = b - a == n
            out.append((p, (int(a), int(b), None if full else torch.as_tensor(local, device=dev))))
    return out
