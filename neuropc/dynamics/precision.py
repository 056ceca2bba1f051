"""Precision parameters and their learning rules, written once for every backend.

A population whose Gaussian has a :class:`~neuropc.model.distributions.Precision` holds ``Pi`` as
a model parameter (``"pop:precision"``). The backends run inference with the current ``Pi`` (a
per-unit vector, or a matrix for ``kind="full"``) and this module updates it after each learning
batch from the settled prediction errors ``d = x - mu`` (``timescale="slow"``):

* ``"gradient"``: ``Pi <- clip(Pi - lr dF/dPi)`` with ``dF/dPi = 1/2 (<d d^T> - Pi^-1)`` of the
  batch-mean energy ``F = 1/2 d^T Pi d - 1/2 log det Pi`` (its diagonal, or its trace for a
  scalar ``Pi = pi I``); a full ``Pi = L L^T`` steps its Cholesky factor,
  ``L <- L - lr dF/dL`` with ``dF/dL = 2 dF/dPi L``;
* ``"ema"``: ``S <- (1 - decay) S + decay <d d^T>`` (diagonal / mean for diag / scalar) and
  ``Pi = (S + damping I)^-1``, with ``S`` starting at ``Pi_0^-1 - damping I`` (so that it gives
  ``Pi_0``).

``<.>`` is the batch mean. The energy's normaliser ``-1/2 log det Pi`` is added to the reported
energies here as well (the kernels compute ``1/2 d^T Pi d``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DivergenceError
from ..model.distributions import Precision
from ..model.network import Network
from .plan import Plan


@dataclass
class PrecisionState:
    """One population's precision: ``pi`` (``()``, ``(n,)`` or ``(n, n)``), the Cholesky factor
    of a full one learned by gradient, and the running covariance of the EMA rule."""

    name: str
    index: int  # population index in the plan
    spec: Precision
    n: int
    pi: np.ndarray
    chol: np.ndarray | None = None
    cov: np.ndarray | None = None

    @property
    def learned(self) -> bool:
        return self.spec.learn is not None

    def per_unit(self) -> np.ndarray:
        """What the kernels use: the per-unit vector (scalar and diag) or the matrix (full)."""
        if self.spec.kind == "scalar":
            return np.full(self.n, float(self.pi))
        return self.pi

    def logdet(self) -> float:
        if self.spec.kind == "full":
            return float(np.linalg.slogdet(self.pi)[1])
        if self.spec.kind == "scalar":
            return self.n * float(np.log(self.pi))
        return float(np.sum(np.log(self.pi)))

    def set(self, value: np.ndarray) -> None:
        """Replace ``Pi`` (checked by :func:`check_value`) and the rules' own state with it."""
        self.pi = np.array(value, dtype=np.float64)
        if self.spec.kind == "full":
            self.chol = np.linalg.cholesky(self.pi)
        if self.spec.kind == "full":
            self.cov = np.linalg.inv(self.pi) - self.spec.damping * np.eye(self.n)
        else:
            self.cov = rule_start(self.pi, self.spec.damping)

    def prediction_errors(self, eps: np.ndarray, fast: np.ndarray | None = None) -> np.ndarray:
        """``d = Pi^-1 eps``: the prediction errors behind a run's errors ``eps`` ``(B, n)``,
        weighted by the slow ``Pi`` or, for a fast precision, by the one the run ended with."""
        eps = np.asarray(eps, np.float64)
        pi = self.per_unit() if fast is None else fast
        return eps @ np.linalg.inv(pi) if self.spec.kind == "full" else eps / pi

    def update(self, d: np.ndarray, reduce=None) -> dict[str, np.ndarray]:
        """The rule's proposed new state after a batch with settled prediction errors ``d``
        ``(B, n)``: ``{"pi": ..., and "cov" (EMA) or "chol" (full, gradient)}``. Nothing is
        stored: the caller checks ``pi``, then passes the proposal to :meth:`commit`. ``reduce``
        maps the batch's second moment ``<d d^T>`` (or its diagonal or mean) to the whole
        minibatch's (data-parallel training: the mean over the ranks)."""
        p, kind, b = self.spec, self.spec.kind, d.shape[0]
        second = d.T @ d / b if kind == "full" else np.mean(d * d, axis=0)
        if kind == "scalar":
            second = np.mean(second)
        if reduce is not None:
            second = reduce(np.asarray(second, np.float64))
            second = second.reshape(()) if kind == "scalar" else second
        if kind != "full":
            pi, cov = rule_step(
                self.pi, self.cov, second, p.learn == "ema", *p.rule_options(self.n)
            )
            return {"pi": pi, "cov": cov} if p.learn == "ema" else {"pi": pi}
        pi, chol, cov = full_rule_step(
            self.pi, self.chol, self.cov, second, p.learn == "ema", p.lr, p.decay, p.damping,
            np.linalg.inv, np.eye(self.n),
        )  # fmt: skip
        return {"pi": pi, "cov": cov} if p.learn == "ema" else {"pi": pi, "chol": chol}

    def commit(self, proposal: dict[str, np.ndarray]) -> None:
        """Keep a proposal of :meth:`update`: ``Pi`` and the rule's state advance together."""
        for k, v in proposal.items():
            setattr(self, k, v)


def learn(states: dict[str, PrecisionState], out, plan: Plan, backend, undo, phase: str,
          reduce=None) -> None:  # fmt: skip
    """After a learning batch: each learned precision takes its rule's step from the settled
    errors of ``out`` (a backend's RunOutput) and the backend gets the new values. A non-finite or
    non-positive result calls ``undo`` (which puts the batch's weight update back) and raises
    :class:`~neuropc.errors.DivergenceError` naming the population; nothing is kept then.
    ``reduce``: see :meth:`PrecisionState.update`."""
    new = {}
    for name, st in states.items():
        if not st.learned:
            continue
        eps = out.errors[:, plan.error_slice(name)]
        d = st.prediction_errors(eps, out.fast_precision.get(st.index))
        proposal = st.update(d, reduce)
        try:
            check_value(st, proposal["pi"], "learning:")
        except ValueError:
            undo()
            raise DivergenceError(out.steps, name, phase, precision=True) from None
        new[name] = proposal
    for name, proposal in new.items():  # all valid: keep them
        st = states[name]
        st.commit(proposal)
        backend.set_precision(st.index, st.per_unit())


def rule_step(pi, cov, second, ema: bool, lr, decay, damping, lo, hi, scale):
    """One step of a scalar or diagonal precision rule, elementwise on numpy arrays, inside the
    numba kernels (compiled from this same function) or on torch tensors::

        ema:       S <- (1 - decay) S + decay <d^2>,    Pi = 1 / (S + damping)
        gradient:  Pi <- clip(Pi - lr scale 1/2 (<d^2> - 1/Pi), lo, hi)

    ``second`` is ``<d^2>`` per unit (its mean over units for a scalar precision), ``scale`` is
    ``n`` for a scalar precision (``dF/dpi`` sums the terms of its ``n`` units), else 1. Returns
    ``(Pi, S)`` (``S`` unchanged by the gradient rule). The slow timescale takes it once per
    learning batch, the fast one at every inference step."""
    if ema:
        cov = (1.0 - decay) * cov + decay * second
        return 1.0 / (cov + damping), cov
    return (pi - lr * (scale * (0.5 * (second - 1.0 / pi)))).clip(lo, hi), cov


def full_rule_step(pi, chol, cov, second, ema: bool, lr, decay, damping, inv, eye):
    """One step of a full precision's rule on ``(n, n)`` matrices (numpy or torch: ``inv`` is
    the library's matrix inverse, ``eye`` its identity)::

        ema:       S <- (1 - decay) S + decay <d d^T>,   Pi = (S + damping I)^-1
        gradient:  L <- L - lr dF/dL,  dF/dL = 2 dF/dPi L,  dF/dPi = 1/2 (<d d^T> - Pi^-1),
                   Pi = L L^T

    Returns ``(Pi, L, S)`` (the factor or the covariance the rule does not use unchanged)."""
    if ema:
        cov = (1.0 - decay) * cov + decay * second
        return inv(cov + damping * eye), chol, cov
    grad = 0.5 * (second - inv(pi))
    chol = chol - lr * 2.0 * grad @ chol
    return chol @ chol.T, chol, cov


def rule_start(pi, damping):
    """The EMA rule's running covariance that gives ``Pi``: ``S = Pi^-1 - damping``."""
    return 1.0 / pi - damping


def states(net: Network, plan: Plan) -> dict[str, PrecisionState]:
    """The precision parameters of ``net``, at their initial values."""
    out = {}
    for i, name in enumerate(plan.names):
        prec = getattr(net[name].distribution, "precision", None)
        if isinstance(prec, Precision):
            n = int(plan.sizes[i])
            st = PrecisionState(name, i, prec, n, prec.initial(n))
            st.set(st.pi)
            out[name] = st
    return out


def check_value(st: PrecisionState, value: object, where: str) -> np.ndarray:
    """``value`` as a valid ``Pi`` for ``st``: the kind's shape, finite, positive (symmetric
    positive definite when full); else ``ValueError`` naming the population."""
    a = np.asarray(value, dtype=np.float64)
    want = {"scalar": (), "diag": (st.n,), "full": (st.n, st.n)}[st.spec.kind]
    if a.shape != want:
        raise ValueError(
            f"{where} population {st.name!r}: expected a precision of shape {want}; got {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where} population {st.name!r}: precision contains NaN or inf")
    if st.spec.kind == "full":
        if not np.allclose(a, a.T, rtol=0, atol=1e-12 * np.abs(a).max()):
            raise ValueError(f"{where} population {st.name!r}: precision must be symmetric")
        if np.linalg.eigvalsh(a).min() <= 0:
            raise ValueError(f"{where} population {st.name!r}: precision must be positive definite")
    elif np.any(a <= 0):
        raise ValueError(f"{where} population {st.name!r}: precision must be > 0; got {a!r}")
    return a
