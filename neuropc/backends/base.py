"""The interface every backend implements.

A backend owns the flat parameter vector and the optimiser state on its device, and runs one
batch at a time: the caller writes the clamped (and given) values into ``values_buffer(B)`` and
calls :meth:`Backend.run`. Buffers are ``(B, n_value)`` values and ``(B, n_error)`` errors in the
column layout of :class:`~neuropc.dynamics.plan.Plan`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ..dynamics.natural_gradient import NGDViews
from ..dynamics.optim import Optimizer
from ..dynamics.plan import Plan
from ..dynamics.schedule import Schedule


@dataclass(frozen=True)
class TraceSpec:
    """What the inference loop gathers at every ``every``-th step (see ``_numba_kernels.infer``):
    ``rows`` of the batch, and sorted columns of the value buffer (``vcols``), the error buffer
    (``ecols``) and of the injected noise (``ncols``, value-buffer columns)."""

    every: int
    rows: np.ndarray
    vcols: np.ndarray
    ecols: np.ndarray
    ncols: np.ndarray

    def n_steps(self, steps: int) -> int:
        return steps // self.every + 1


@dataclass
class RunOutput:
    """Result of one batch. Arrays are numpy views of backend buffers, valid until the next run."""

    # (B, n_value) and (B, n_error), the final state's; without Schedule.readout a backend may
    # return None for both
    values: np.ndarray | None
    errors: np.ndarray | None
    # (steps_done + 1, P), batch-mean energy per population; without Schedule.readout a backend
    # may return the final state's row alone (the last row is always the final state)
    energies: np.ndarray
    steps: int  # inference steps taken
    bad_step: int  # -1, or the step at which an energy became non-finite
    bad_pop: int
    # (n_params,) dF/dtheta of the batch-mean energy: the backend's own buffer (a numpy array or
    # a torch tensor), valid until the next run; host_grads() gives a float64 numpy copy
    grads: object | None = None
    # with a TraceSpec: (values, errors, noise), each (len(rows), steps // every + 1, n_cols);
    # like the other arrays, valid until the next run
    traces: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # -1, or the first flat parameter an optimiser step made non-finite: that step (every step of
    # the batch, in iPC) was undone, so parameters and optimiser state are as before the batch
    bad_param: int = -1
    # population index -> the per-unit precision a fast precision ended the run with (the one in
    # the final errors); the slow values are the backend's set_precision ones
    fast_precision: dict[int, np.ndarray] = field(default_factory=dict)
    # with Schedule.moments: the mean and the mean square of every free value over the collected
    # states, each (B, n_value) (columns of clamped populations are 0)
    moments: tuple[np.ndarray, np.ndarray] | None = None
    # data-parallel learning (neuropc.distributed): the final total energy's mean over the whole
    # minibatch (every rank's shard); None otherwise
    mean_energy: float | None = None

    def host_grads(self) -> np.ndarray | None:
        """:attr:`grads` as a float64 numpy array on the host (None without gradients)."""
        g = self.grads
        if g is None:
            return None
        if isinstance(g, np.ndarray):
            return g.astype(np.float64)
        import torch  # (a tensor here means torch is loaded)

        return g.detach().to("cpu", dtype=torch.float64).numpy()


class Backend(ABC):
    name: str = "?"

    def __init__(self, plan: Plan, dtype: np.dtype) -> None:
        self.plan = plan
        self.dtype = np.dtype(dtype)

    @abstractmethod
    def get_params(self) -> np.ndarray:
        """A float64 copy of the flat parameters."""

    @abstractmethod
    def set_params(self, flat: np.ndarray) -> None:
        """Replace the flat parameters (and keep the optimiser state)."""

    @abstractmethod
    def reset_optimizer(self) -> None:
        """Zero the optimiser state and its step counter."""

    @abstractmethod
    def optimizer_state(self) -> dict[str, np.ndarray | int]:
        """Float64 host copies of the optimiser state: ``{"m": first moments (or momentum),
        "v": second moments, "t": steps taken}`` (flat, in the parameter layout)."""

    @abstractmethod
    def set_optimizer_state(self, m: np.ndarray, v: np.ndarray, t: int) -> None:
        """Replace the optimiser state (arrays in the flat parameter layout)."""

    @abstractmethod
    def set_precision(self, p: int, value: np.ndarray) -> None:
        """Use ``value`` as the precision of population ``p`` from the next run on: per unit
        ``(n,)``, or an ``(n, n)`` matrix where the backend runs full precisions."""

    @abstractmethod
    def undo_step(self) -> None:
        """Put back the parameters and optimiser state as they were before the last learning
        batch's optimiser step (one step: not after iPC)."""

    @abstractmethod
    def values_buffer(self, batch: int) -> np.ndarray:
        """The ``(batch, n_value)`` host buffer to write clamped/given values into."""

    @abstractmethod
    def run(
        self,
        batch: int,
        sched: Schedule,
        seed: int,
        *,
        learn: Optimizer | None = None,
        trace: TraceSpec | None = None,
    ) -> RunOutput:
        """Execute ``sched`` (:mod:`neuropc.dynamics.schedule`: inference, then the gradients and
        optimiser steps it schedules) on the batch in ``values_buffer(batch)``. ``learn`` is the
        update rule of the scheduled optimiser steps. Nothing is learned if inference diverged,
        and nothing if a step would leave a non-finite parameter: then ``bad_param`` names it.
        ``seed`` seeds the Langevin noise; with ``trace``, the recorded steps (gathered inside the
        loop: no Python call per step)."""

    @abstractmethod
    def gradient_tensor(self):
        """The flat gradient vector of the last run (``dF/dtheta`` of its batch-mean energy) as a
        ``torch.Tensor`` that shares the backend's memory: changing it in place (e.g. a
        data-parallel all-reduce, :mod:`neuropc.distributed`) changes what :meth:`step` uses."""

    @abstractmethod
    def step(self, learn: Optimizer) -> int:
        """One step of ``learn`` from the current gradients (the update rule the kernels run at
        the end of a learning batch). Returns -1, or the first flat parameter the step would have
        made non-finite: then nothing changed. :meth:`undo_step` takes a kept step back."""

    @abstractmethod
    def ngd_views(self) -> NGDViews:
        """What a natural-gradient step needs (:class:`NGDViews`), in the backend's own arrays:
        writable views of the parameters, the last run's gradients, f(x) and errors."""


def ngd_views(plan: Plan, P, G, trainable, PI, fx, eps) -> NGDViews:
    """:class:`NGDViews` over flat parameter, gradient, mask and per-unit precision vectors (numpy
    or torch, in the plan's layout); ``fx(p)`` / ``eps(p)`` give a population's f(x) / errors."""
    n = plan.n_pops
    W, Gw, mw = [], [], []
    for c in plan.conn_names:
        sl, shape = plan.weight_slice(c)
        W.append(P[sl].reshape(shape))
        Gw.append(G[sl].reshape(shape))
        m = trainable[sl]
        mw.append(None if bool((m == 1).all()) else m.reshape(shape))
    b, Gb, mb = [None] * n, [None] * n, [None] * n
    for p, name in enumerate(plan.names):
        sl = plan.bias_slice(name)
        if sl is not None:
            b[p], Gb[p] = P[sl], G[sl]
            mb[p] = None if bool((trainable[sl] == 1).all()) else trainable[sl]
    pres = {int(q) for q in plan.cpre}
    posts = {int(q) for q in plan.cpost} | {p for p in range(n) if b[p] is not None}
    pi = [None] * n
    for p in posts:
        v = PI[p] if isinstance(PI, list) else PI[plan.error_slice(plan.names[p])]
        unit = v is None or (v.ndim == 1 and bool((v == 1).all()) and not plan.prec_kind[p])
        pi[p] = None if unit else v
    return NGDViews(W, Gw, b, Gb, {q: fx(q) for q in pres}, {p: eps(p) for p in posts}, pi, mw, mb)
