"""The inference policy of one run, decided once for every backend.

:func:`build` turns an :class:`~neuropc.dynamics.inference.Inference`, the plan and the run's
clamps into a :class:`Schedule`: plain arrays that say, per population and per connection, what
happens when. The backends execute a schedule; they do not look at the mode, the init rule or the
optimiser's timing themselves. Every backend walks the same skeleton::

    init:   a fast precision starts from the slow (parameter) value
            for p in topological order:
                x_p <- 0                               if init[p] == ZERO
                mu_p <- b_p + sum_{c: clamped pre} f(x_pre) W_c^T        (constant part)
                mu_p <- mu_p + sum_{c: free pre} f(x_pre) W_c^T          if frozen[p]
                x_p <- mu_p (+ variable part unless frozen)              if init[p] == FORWARD
                f(x_p), f'(x_p)                                          if is_pre[p]
            G <- 0                                                       if zero_grads
    for t = 0 .. steps:
        errors and energies of state t; the variable part of mu_p where var_pred[p]
        (a fast precision's energy includes its -1/2 log det Pi)
        gradients of the connections into, and biases of, p where grad_at[p] == t
        gradients where grad_at[p] == COLLECTED and collect[t], added with collect_weight
        (and, if moments, collect_weight x and x^2 of the free values added to their moments)
        (record state t; stop after t == steps or an early stop)
        a fast precision's rule takes one step on the errors of state t where fast_rule[p]
        back-projections eps_post W_c to the free pre of every connection with backproj[c]
        gradients where grad_at[p] == EVERY
        value step of every free population (noise noise_sd; drift and noise scaled by the
        preconditioner's M and sqrt(M) when precond); leaky error step where leaks[p];
        f(x_p), f'(x_p) again where refresh_act[p]
        optimiser step if opt_when == EACH_STEP (then the constant parts of mu again)
        early stop test (tol)
    nudged targets report mu + beta (y - mu); gradients where grad_at[p] == END (if grads);
    optimiser step if opt_when == AT_END

Without ``readout`` (a learning batch whose state nobody reads) a backend may skip the energies
of the states before the final one, and the host copies of values and errors; it must still
name the first non-finite energy.

The modes are nothing but schedules: FPA freezes every free population's prediction at the
forward pass and never refreshes ``f``; Z-IL sets ``grad_at`` to the distance to the targets; iPC
sets ``grad_at = EVERY`` and ``opt_when = EACH_STEP``. Their conditions are in :mod:`.modes`.
Langevin learning (``Inference(collect="mean" or k)``) sets ``grad_at = COLLECTED``: the
gradient is the average over the collected states.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..model.distributions import NORMAL_KL
from . import modes as _modes
from .inference import Inference
from .plan import Plan

KEEP, ZERO, FORWARD = 0, 1, 2  # init[p]
# grad_at[p]: after inference, at every step (iPC), averaged over the collected steps
# (Langevin learning), else at that step (Z-IL)
END, EVERY, COLLECTED = -1, -2, -3
NEVER, AT_END, EACH_STEP = 0, 1, 2  # opt_when: when the optimiser steps


@dataclass(frozen=True)
class Schedule:
    """What one run does, as data (see the module docstring for the skeleton that executes it)."""

    mode: str
    steps: int
    rate: float
    tol: float
    noise_sd: float  # sqrt(2 rate temperature): the Langevin noise per free unit and step
    leaky: bool
    err_rate: float
    clamped: np.ndarray  # (P,) bool: values that never step
    init: np.ndarray  # (P,) int64: KEEP, ZERO or FORWARD
    frozen: np.ndarray  # (P,) bool: the whole prediction is computed once, at init (FPA)
    var_pred: np.ndarray  # (P,) bool: the prediction has a part from free pres, recomputed per step
    is_pre: np.ndarray  # (P,) bool: f(x_p) feeds a prediction
    refresh_act: np.ndarray  # (P,) bool: f(x_p), f'(x_p) recomputed after each value step
    leaks: np.ndarray  # (P,) bool: a leaky error population that integrates (errors='leaky')
    backproj: np.ndarray  # (C,) bool: the connection carries its post's errors back to a free pre
    first_bp: np.ndarray  # (C,) bool: the first such connection into its pre (it overwrites)
    receives_bp: np.ndarray  # (P,) bool
    grad_at: np.ndarray  # (P,) int64: when the connections into p and its bias take gradients
    grads: bool  # whether gradients are computed at all
    zero_grads: bool  # gradients are gathered step by step (Z-IL): start from zero
    opt_when: int  # NEVER, AT_END or EACH_STEP
    nudge: float  # beta, 0 when nothing is nudged
    nudged: np.ndarray  # (P,) bool
    grad_scale: float  # 1 / beta when nudging, else 1
    # (P,) int64: a fast precision's rule (0 none, 1 gradient, 2 ema), stepped on the errors of
    # every state that another value step follows (neuropc.dynamics.precision.rule_step)
    fast_rule: np.ndarray
    # (steps + 1,) bool: the states whose gradients are averaged (grad_at == COLLECTED), and the
    # weight of each, 1 / their number
    collect: np.ndarray
    collect_weight: float
    # the diagonal preconditioner (Inference.preconditioner): on, beta2, eps, bias correction
    precond: bool = False
    beta2: float = 0.0
    precond_eps: float = 1.0
    bias_correction: bool = False
    # gather the mean and mean square of every free value over the collected states (an
    # amortised encoder's forward-KL objective needs them): RunOutput.moments
    moments: bool = False
    # the run's state goes back to the caller: RunOutput's values, errors and the energies of
    # every state. Off (a learning batch whose state nobody reads), a backend may leave values and
    # errors unwritten (None) and compute only the final state's energies (the torch backend then
    # skips three dot products per step), but must still name the first non-finite one
    readout: bool = True

    @functools.cached_property  # (read every batch; a schedule is cached and frozen)
    def steps_each(self) -> bool:
        """Whether something acts between steps (gradients, optimiser steps, a fast precision's
        rule or an early-stop test), so that a backend cannot fuse several steps into one call."""
        return bool(
            self.tol > 0
            or self.opt_when == EACH_STEP
            or bool(self.fast_rule.any())
            or self.precond
            or self.moments
            or (self.grads and bool(np.any(self.grad_at != END)))
        )

    @functools.cached_property  # (read every batch; a schedule is cached and frozen)
    def rows_independent(self) -> bool:
        """Whether every sample of a batch relaxes on its own, so that a backend may run the batch
        in row blocks and add up their energies and gradients afterwards: no early stop on the
        batch's largest update, no fast precision (per-step batch statistics) and no optimiser
        step during inference (iPC)."""
        return not (self.tol > 0 or self.opt_when == EACH_STEP or bool(self.fast_rule.any()))

    def grads_at(self, when: int) -> np.ndarray:
        """(P,) bool: the populations whose incoming connections and bias take gradients at
        ``when`` (a step, ``END`` or ``EVERY``)."""
        return self.grad_at == when

    @functools.cached_property
    def grads_when(self) -> GradsWhen:
        """When gradients are taken, for a backend's loop (:class:`GradsWhen`)."""
        g = self.grads

        def mask(when: int) -> np.ndarray | None:
            m = self.grads_at(when)
            return m if g and m.any() else None

        end = mask(END)
        return GradsWhen(
            at_steps=g and bool(np.any(self.grad_at >= 0)),
            every=mask(EVERY),
            collected=mask(COLLECTED) if self.collect.any() else None,
            end=None if end is None else (None if end.all() else end),
            at_end=end is not None,
        )


@dataclass(frozen=True)
class GradsWhen:
    """When a run takes gradients: ``at_steps`` (some populations at a numbered step, Z-IL), and
    the masks of the populations whose connections take them at every step (``every``, iPC), as
    collected samples (``collected``, Langevin learning) and after inference (``at_end``; ``end``
    the mask, or None for all of them), each None where no population does."""

    at_steps: bool
    every: np.ndarray | None
    collected: np.ndarray | None
    end: np.ndarray | None
    at_end: bool


def build(
    plan: Plan,
    clamped: np.ndarray,
    keep: np.ndarray,
    cfg: Inference,
    *,
    learning: bool = False,
    grads: bool = False,
    moments: bool = False,
    readout: bool = True,
) -> Schedule:
    """The schedule of one run: ``clamped`` populations never step, ``keep`` ones (clamped, or
    given values) keep the values written into the backend's buffer; ``learning`` adds an
    optimiser step, ``grads`` asks for the gradients without one, ``moments`` for the moments of
    the free values over the collected states (``collect`` "mean" or k); ``readout``: the
    caller reads the run's state (:attr:`Schedule.readout`). Validates ``cfg`` against the
    plan (:func:`.modes.setup`)."""
    ms = _modes.setup(plan, clamped, cfg, learning=learning)
    for p in np.flatnonzero(np.asarray(clamped, np.bool_) & (plan.dist == NORMAL_KL)):
        raise ValueError(
            f"population {plan.names[p]!r} is npc.Normal() (it holds a distribution's "
            "parameters) and cannot be clamped to data"
        )
    n = plan.n_pops
    clamped = np.asarray(clamped, np.bool_)
    has_err = np.asarray(plan.has_err, np.bool_)
    is_pre = np.zeros(n, np.bool_)
    var_in = np.zeros(n, np.bool_)
    backproj = np.zeros(len(plan.cpre), np.bool_)
    first_bp = np.zeros(len(plan.cpre), np.bool_)
    receives = np.zeros(n, np.bool_)
    for c, (pres, p) in enumerate(zip(plan.cpres, plan.cpost)):
        for i, q in enumerate(pres):  # (several for an operator of several inputs: torch only)
            is_pre[q] = True
            if not clamped[q] and not plan.cops[c].differentiable[i]:
                raise ValueError(
                    f"population {plan.names[q]!r} is free, but connection "
                    f"{plan.conn_names[c]!r} ({plan.conn_kinds[c]}) has no gradient for it "
                    "(e.g. token ids): clamp it"
                )
            if not clamped[q]:
                var_in[p] = True
                backproj[c] = True
                first_bp[c] = not receives[q]
                receives[q] = True
    fpa = cfg.mode == "fpa"
    frozen = has_err & var_in & fpa
    init = np.where(
        np.asarray(keep, np.bool_),
        KEEP,
        np.where((cfg.init == "zero") | ~has_err, ZERO, FORWARD),
    ).astype(np.int64)
    collect = np.zeros(cfg.steps + 1, np.bool_)
    if cfg.mode == "zil":
        grad_at = np.asarray(ms.depth, np.int64).copy()
    elif cfg.collect != "last":
        grad_at = np.full(n, COLLECTED, np.int64)
        collect[cfg.collected()] = True
    else:
        grad_at = np.full(n, EVERY if cfg.mode == "ipc" else END, np.int64)
    want = bool(learning or grads)
    opt_when = NEVER if not learning else EACH_STEP if cfg.mode == "ipc" else AT_END
    return Schedule(
        mode=cfg.mode,
        steps=int(cfg.steps),
        rate=float(cfg.rate),
        tol=float(cfg.tol),
        noise_sd=float(np.sqrt(2.0 * cfg.rate * cfg.temperature)),
        leaky=cfg.errors == "leaky",
        err_rate=float(cfg.rate if cfg.error_rate is None else cfg.error_rate),
        clamped=clamped.copy(),
        init=init,
        frozen=frozen,
        var_pred=has_err & var_in & ~frozen,
        is_pre=is_pre,
        refresh_act=is_pre & ~clamped & (not fpa),
        leaks=has_err & (cfg.errors == "leaky"),
        backproj=backproj,
        first_bp=first_bp,
        receives_bp=receives,
        grad_at=grad_at,
        grads=want,
        zero_grads=want and (cfg.mode == "zil" or bool(collect.any())),
        opt_when=opt_when,
        nudge=float(ms.nudge),
        nudged=np.asarray(ms.nudged, np.bool_) & (ms.nudge != 0.0),
        grad_scale=1.0 / ms.nudge if ms.nudge != 0.0 else 1.0,
        fast_rule=np.where(plan.prec_fast, plan.prec_rule, 0).astype(np.int64),
        collect=collect,
        collect_weight=1.0 / max(int(collect.sum()), 1),
        moments=bool(moments and collect.any()),
        readout=bool(readout),
        **_preconditioner(cfg),
    )


def _preconditioner(cfg: Inference) -> dict:
    pc = cfg.preconditioner
    if pc is None:
        return {}
    return {"precond": True, "beta2": float(pc.beta2), "precond_eps": float(pc.eps),
            "bias_correction": bool(pc.bias_correction)}  # fmt: skip
