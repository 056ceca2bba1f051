"""The distribution of a population: its energy, and the error it sends to its prediction.

Every population with an error population has a distribution ``P(.; mu)`` whose parameter is the
prediction ``mu`` (:mod:`neuropc.model.network`). Its energy is one of (Pinchetti et al. 2022):

* ``energy="F"``: ``-log P(x; mu)``, the value ``x`` read as a sample (or, clamped, as data);
* ``energy="KL"``: ``KL(P(.; phi) || P(.; mu))``, the value ``phi`` read as the distribution's own
  parameters. For a clamped population ``phi`` is the data (probabilities), and the energy is the
  cross-entropy minus the data's entropy (a constant), so clamped populations learn the same under
  ``F`` and ``KL``.

Signs, the same for every distribution: the **error** is ``eps = -dF/dmu`` (positive when the value
is above its prediction), so the local weight gradient is ``dF/dW = -eps f(x_pre)^T`` and the
back-projected term of a presynaptic population is ``-f'(x_pre) * W^T eps``. The **own term** is
``dF/dx``, the population's own part of its value gradient.

================  ======================  ==============================  ===========================
distribution      value holds             eps = -dF/dmu                   own term dF/dx (free)
================  ======================  ==============================  ===========================
Gaussian F / KL   a sample (mean)         Pi (x - mu)                     Pi (x - mu)
Bernoulli F       a sample in [0, 1]      x - s(mu)                       -mu
Bernoulli KL      a logit phi             s(phi) - s(mu)                  s'(phi) (phi - mu)
Categorical F     a one-hot / simplex x   x - (sum x) softmax(mu)         -log softmax(mu)
Categorical KL    logits phi              p - q                           p * (l - sum p l)
Normal KL         mean m, log-var s       (m - mu) / v ; (1 - (e^s +      (m - mu) / v ;
                  (rows 0, 1)             (m - mu)^2) / v) / -2            (e^s / v - 1) / 2
================  ======================  ==============================  ===========================

with ``s`` the logistic sigmoid, ``p = softmax(phi)``, ``q = softmax(mu)`` and
``l = log p - log q``. The prediction ``mu`` is a mean (Gaussian) or logits (Bernoulli,
Categorical). Energies per sample:

* Gaussian: ``F = 1/2 (x - mu)^T Pi (x - mu)`` (fixed precision: the log-normaliser is a constant
  and left out); under ``KL`` the same (``KL(N(phi, S) || N(mu, S))``), so a unit-precision
  Gaussian under ``KL`` is standard PC exactly;
* Bernoulli F: ``softplus(mu) - x mu``; KL: ``p (log p - log q) + (1 - p)(log(1 - p) - log(1 - q))``
  with ``p = s(phi)``, ``q = s(mu)`` (``0 log 0 = 0``);
* Categorical F: ``(sum x) logsumexp(mu) - x . mu``; KL: ``sum p (log p - log q)``.
* Normal (KL only; a node holding a Gaussian's mean ``m`` and log-variance ``s``, predicted as
  ``(mu, lam)``, ``v = e^lam``): ``KL(N(m, e^s) || N(mu, v)) = 1/2 sum (lam - s + (e^s +
  (m - mu)^2) / v - 1)`` (the VAE latent of Pinchetti et al. 2022; its rows are the
  distribution's parameters, so the next layer reads both).

A clamped Categorical output with one-hot data ``y`` gives ``dF/dmu = softmax(mu) - y``
(cross-entropy), so with FPA the network trains exactly as backprop of the cross-entropy.
Clamped data must be probabilities: in [0, 1] (Bernoulli), rows on the simplex (Categorical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..array_checks import first_row_off_simplex

if TYPE_CHECKING:
    import torch

ENERGIES = ("F", "KL")
# codes of the compiled kernels: (distribution, energy) -> code; the Gaussian's energies coincide
GAUSSIAN, BERNOULLI_F, BERNOULLI_KL, CATEGORICAL_F, CATEGORICAL_KL, NORMAL_KL = range(6)


TINY = 1.1754943508222875e-38  # the smallest normal float32: smaller errors are flushed to 0


def _check_energy(owner: str, energy: object) -> None:
    if energy not in ENERGIES:
        raise ValueError(f"{owner}: energy must be 'F' or 'KL'; got {energy!r}")


PRECISION_KINDS = ("scalar", "diag", "full")
PRECISION_RULES = (None, "gradient", "ema")


@dataclass(frozen=True)
class Precision:
    """A Gaussian population's precision ``Pi`` as a parameter of the model (Ofner et al. 2021).

    ``kind``: ``"scalar"`` (``Pi = pi I``), ``"diag"`` (one per unit) or ``"full"`` (an ``(n, n)``
    matrix, parameterised as ``Pi = L L^T`` by its Cholesky factor, so positive definite by
    construction; torch backend only). ``init``: the initial ``Pi`` (a number times the identity,
    or an ``(n,)`` / ``(n, n)`` array). With a ``Precision`` the energy includes the Gaussian's
    normaliser, ``F = 1/2 d^T Pi d - 1/2 log det Pi`` (``d = x - mu``), so that ``Pi`` can be
    learned; it is ``"pop:precision"`` in ``sim.parameters()`` and ``sim.precision(name)``.

    ``learn`` (after every learning batch, from the settled errors; ``timescale="slow"``):

    * ``None``: fixed;
    * ``"gradient"``: a step ``-lr dF/dPi`` of the batch-mean energy,
      ``dF/dPi = 1/2 (<d d^T> - Pi^-1)`` (diagonal or trace for diag / scalar), taken on ``L``
      for a full precision (``dF/dL = 2 dF/dPi L``); diagonal and scalar values are clipped to
      ``clip = (lo, hi)``;
    * ``"ema"``: ``S <- (1 - decay) S + decay <d d^T>`` (its diagonal or mean for diag / scalar)
      and ``Pi = (S + damping I)^-1``: the inverse of a running error covariance.

    ``timescale``: ``"slow"`` (the default) learns ``Pi`` across batches as above. ``"fast"``
    also re-estimates it within every batch, during inference (the fast precision of Ofner's
    generalised-PC code, used for inference, beside the slow one used for learning): each batch
    starts from the slow ``Pi``, and after the errors of every inference step the same rule takes
    one step on that step's batch errors (``<d^2>`` of the current state); the next step's
    errors, the value updates, the energy (with its ``-1/2 log det Pi``) and, at the end, the
    weight gradients use the re-estimated ``Pi``. After a learning batch the slow ``Pi`` takes
    its usual step from the settled errors ``d = x - mu``; ``sim.precision(name)`` and
    ``"pop:precision"`` are the slow one. ``"fast"`` needs a rule (``learn``); a full fast
    precision runs on torch (a full one's factor or covariance restarts from the slow ``Pi``).
    """

    kind: str = "diag"
    learn: str | None = None
    init: float | tuple | np.ndarray = 1.0
    lr: float = 0.01
    decay: float = 0.05
    damping: float = 0.0
    clip: tuple[float, float] = (1e-6, 1e6)
    timescale: str = "slow"

    def rule_options(self, n: int) -> tuple[float, ...]:
        """``(lr, decay, damping, lo, hi, scale)``: the trailing arguments of
        :func:`neuropc.dynamics.precision.rule_step` on ``n`` units (``scale = n`` for a scalar
        precision, else 1)."""
        lo, hi = self.clip
        scale = n if self.kind == "scalar" else 1
        return (float(self.lr), float(self.decay), float(self.damping), lo, hi, float(scale))

    def __post_init__(self) -> None:
        from .. import validation as _v

        if self.kind not in PRECISION_KINDS:
            raise ValueError(
                f"Precision.kind must be one of {', '.join(PRECISION_KINDS)}; got {self.kind!r}"
            )
        if self.learn not in PRECISION_RULES:
            raise ValueError(
                f"Precision.learn must be None, 'gradient' or 'ema'; got {self.learn!r}"
            )
        if self.timescale not in ("slow", "fast"):
            raise ValueError(
                f"Precision.timescale must be 'slow' or 'fast'; got {self.timescale!r}"
            )
        if self.timescale == "fast" and self.learn is None:
            raise ValueError(
                "Precision.timescale='fast' re-estimates Pi during inference with its rule: it "
                "needs learn='gradient' or 'ema'; got learn=None"
            )
        _v.number(self.lr, "Precision.lr", low=0.0)
        _v.number(self.decay, "Precision.decay", low=0.0, high=1.0, low_open=True, high_open=True)
        _v.number(self.damping, "Precision.damping", low=0.0)
        c = self.clip
        if isinstance(c, (str, bytes)) or not hasattr(c, "__len__") or len(c) != 2:
            raise TypeError(f"Precision.clip must be a pair (lo, hi); got {c!r}")
        lo = _v.number(c[0], "Precision.clip[0]", low=0.0, low_open=True)
        hi = _v.number(c[1], "Precision.clip[1]")
        if not lo < hi:
            raise ValueError(f"Precision.clip must satisfy 0 < lo < hi; got {c!r}")
        object.__setattr__(self, "clip", (lo, hi))
        if np.ndim(self.init):  # hashable and comparable: nested tuples, not an array
            object.__setattr__(self, "init", tuple(map(tuple, self.init)) if np.ndim(self.init) == 2
                               else tuple(float(v) for v in self.init))  # fmt: skip

    def initial(self, n: int) -> np.ndarray:
        """The initial ``Pi`` of ``n`` units: shape ``()``, ``(n,)`` or ``(n, n)`` by kind."""
        a = np.asarray(self.init, dtype=np.float64)
        if self.kind == "scalar":
            if a.ndim:
                raise ValueError(
                    f"Precision(kind='scalar').init must be a number; got {self.init!r}"
                )
            return a.copy()
        if self.kind == "diag":
            return np.broadcast_to(a, (n,)).copy() if a.ndim == 0 else a.copy()
        return a * np.eye(n) if a.ndim == 0 else a.copy()


@dataclass(frozen=True)
class Gaussian:
    """Gaussian with precision ``Pi``: fixed (a scalar, or one positive number per unit), with
    ``F = 1/2 (x - mu)^T Pi (x - mu)``, or a :class:`Precision` (a model parameter, possibly
    learned, with ``F = 1/2 d^T Pi d - 1/2 log det Pi``); the error is ``Pi (x - mu)``. The
    default distribution."""

    precision: float | tuple[float, ...] | np.ndarray | Precision = 1.0
    energy: str = "F"

    def __post_init__(self) -> None:
        _check_energy("Gaussian", self.energy)

    name = "gaussian"

    @property
    def code(self) -> int:
        return GAUSSIAN


@dataclass(frozen=True)
class Bernoulli:
    """Bernoulli with logit ``mu``: ``F = softplus(mu) - x mu`` (``energy="F"``, value a sample
    in [0, 1]) or ``KL(Bern(s(phi)) || Bern(s(mu)))`` (``energy="KL"``, a free value holds the
    logit ``phi``). See the module docstring for the errors."""

    energy: str = "F"

    def __post_init__(self) -> None:
        _check_energy("Bernoulli", self.energy)

    name = "bernoulli"

    @property
    def code(self) -> int:
        return BERNOULLI_F if self.energy == "F" else BERNOULLI_KL


@dataclass(frozen=True)
class Categorical:
    """Categorical with logits ``mu`` (softmax over the population's units):
    ``F = -x . log softmax(mu)`` (``energy="F"``, value one-hot or on the simplex) or
    ``KL(Cat(softmax(phi)) || Cat(softmax(mu)))`` (``energy="KL"``, a free value holds the logits
    ``phi``). A clamped one-hot output gives the cross-entropy: ``dF/dmu = softmax(mu) - y``.

    ``axis``: the axis of a shaped population that holds the categories (an index, or a name of
    the population's ``dims``; the last by default): every other index is one distribution, e.g.
    each row of a ``(T, T)`` attention population."""

    energy: str = "F"
    axis: int | str = -1

    def __post_init__(self) -> None:
        _check_energy("Categorical", self.energy)
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, str)):
            raise ValueError(f"Categorical: axis must be an axis index or name; got {self.axis!r}")

    name = "categorical"

    @property
    def code(self) -> int:
        return CATEGORICAL_F if self.energy == "F" else CATEGORICAL_KL


@dataclass(frozen=True)
class Normal:
    """A Gaussian whose node holds its own mean and log-variance: a population of shape
    ``(2, ...)``, row 0 the mean ``m`` and row 1 the log-variance ``s``, predicted as
    ``(mu, lam)``. Energy ``KL(N(m, e^s) || N(mu, e^lam))`` (``energy="KL"`` only; a free
    node: it holds a distribution, never data). With a root's fixed prior ``(0, 0)`` (bias) it is
    the VAE's ``KL(q || N(0, 1))``."""

    energy: str = "KL"

    def __post_init__(self) -> None:
        if self.energy != "KL":
            raise ValueError(f"Normal: energy must be 'KL' (it holds parameters); got "
                             f"{self.energy!r}")  # fmt: skip

    name = "normal"

    @property
    def code(self) -> int:
        return NORMAL_KL


Distribution = Gaussian | Bernoulli | Categorical | Normal
KINDS = {"gaussian": Gaussian, "bernoulli": Bernoulli, "categorical": Categorical,
         "normal": Normal}  # fmt: skip


def by_code(code: int) -> Distribution:
    """A distribution of the kernels' ``code`` (a unit-precision Gaussian for code 0)."""
    return (Gaussian(), Bernoulli("F"), Bernoulli("KL"), Categorical("F"), Categorical("KL"),
            Normal())[int(code)]  # fmt: skip


def to_spec(dist: Distribution) -> dict:
    """A JSON-able description of ``dist`` (a population's part of ``Network.spec()``)."""
    out = {"name": dist.name, "energy": dist.energy}
    if getattr(dist, "axis", -1) != -1:
        out["axis"] = dist.axis
    prec = getattr(dist, "precision", None)
    if isinstance(prec, Precision):
        out["precision"] = {
            "kind": prec.kind, "learn": prec.learn, "init": np.asarray(prec.init).tolist(),
            "lr": prec.lr, "decay": prec.decay, "damping": prec.damping,
            "clip": list(prec.clip), "timescale": prec.timescale,
        }  # fmt: skip
    return out


def from_spec(spec: dict, precision: object = 1.0) -> Distribution:
    """The distribution that :func:`to_spec` describes (``precision``: a fixed Gaussian's)."""
    cls = KINDS.get(spec.get("name"))
    if cls is None:
        raise ValueError(f"unknown distribution {spec.get('name')!r}; valid: {', '.join(KINDS)}")
    if cls is Gaussian:
        p = spec.get("precision")
        if p is not None:
            p = dict(p, clip=tuple(p["clip"]))
            return Gaussian(precision=Precision(**p), energy=spec.get("energy", "F"))
        return Gaussian(precision=precision, energy=spec.get("energy", "F"))
    if cls is Categorical:
        return Categorical(energy=spec.get("energy", "F"), axis=spec.get("axis", -1))
    return cls(energy=spec.get("energy", "F"))


def check_data(pop: str, dist: Distribution, a: np.ndarray) -> None:
    """Clamped data must be probabilities: in [0, 1] (Bernoulli), rows on the simplex
    (Categorical, entries >= 0 summing to 1 within 1e-6)."""
    if isinstance(dist, Bernoulli):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(
                f"population {pop!r} is Bernoulli: data must be in [0, 1]; got values from "
                f"{a.min():g} to {a.max():g}"
            )
    elif isinstance(dist, Categorical) and a.size:
        # one compiled pass, every learning batch (numpy's reductions cost 13 us a batch there)
        r = first_row_off_simplex(a, 1e-6)
        if r >= 0:
            row = np.asarray(a[r], np.float64)
            raise ValueError(
                f"population {pop!r} is Categorical: each row of data must be on the simplex "
                f"(entries >= 0 summing to 1 within 1e-6); row {r} sums to {row.sum():.9g} with "
                f"smallest entry {row.min():g}"
            )


# ---- a shaped population's categories as rows ------------------------------------------------
def to_rows(t, shape: tuple[int, ...], axis: int):
    """``(B, n)`` flat values of a population of ``shape`` -> ``(B * G, k)``: one row per
    distribution, the ``k = shape[axis]`` categories last (torch or numpy; a view when ``axis`` is
    the last)."""
    if len(shape) == 1:
        return t
    b = t.shape[0]
    t = t.reshape(b, *shape)
    t = t.movedim(axis + 1, -1) if hasattr(t, "movedim") else np.moveaxis(t, axis + 1, -1)
    return t.reshape(-1, shape[axis])


def from_rows(r, batch: int, shape: tuple[int, ...], axis: int):
    """The inverse of :func:`to_rows`: ``(B * G, k)`` -> ``(B, n)``."""
    if len(shape) == 1:
        return r
    moved = tuple(s for i, s in enumerate(shape) if i != axis) + (shape[axis],)
    t = r.reshape(batch, *moved)
    t = t.movedim(-1, axis + 1) if hasattr(t, "movedim") else np.moveaxis(t, -1, axis + 1)
    return t.reshape(batch, -1)


# ---- torch: the energy (the oracle, through autograd) and the explicit error / own terms ------
def energy_torch(
    dist: Distribution, x: torch.Tensor, mu: torch.Tensor, clamped: bool, pi: torch.Tensor
) -> torch.Tensor:
    """Per-sample energy ``(B,)`` of one population (see the module docstring)."""
    import torch
    from torch.nn.functional import log_softmax, logsigmoid, softplus

    code = dist.code
    if code == NORMAL_KL:
        return _normal_kl(x, mu).sum(dim=1)
    if code == GAUSSIAN:
        d = x - mu
        if pi.ndim == 2:  # a full precision matrix
            f = 0.5 * ((d @ pi) * d).sum(dim=1)
        else:
            f = 0.5 * (pi * d * d).sum(dim=1)
        prec = getattr(dist, "precision", None)
        if isinstance(prec, Precision):  # a parameter: the normaliser -1/2 log det Pi counts
            if pi.ndim == 2:
                logdet = torch.logdet(pi)
            elif prec.kind == "scalar":
                logdet = d.shape[1] * torch.log(pi.reshape(-1)[0])
            else:
                logdet = torch.log(pi).sum()
            f = f - 0.5 * logdet
        return f
    if code == BERNOULLI_F or (code == BERNOULLI_KL and clamped):
        f = softplus(mu) - x * mu
        if code == BERNOULLI_KL:  # minus the data's entropy: KL(Bern(y) || Bern(s(mu)))
            f = f + _xlogx(x) + _xlogx(1 - x)
        return f.sum(dim=1)
    if code == BERNOULLI_KL:
        p = torch.sigmoid(x)
        lp, lq = logsigmoid(x), logsigmoid(mu)
        l1p, l1q = logsigmoid(-x), logsigmoid(-mu)
        return (p * (lp - lq) + (1 - p) * (l1p - l1q)).sum(dim=1)
    lq = log_softmax(mu, dim=1)
    if code == CATEGORICAL_F or clamped:
        f = -(x * lq).sum(dim=1)
        if code == CATEGORICAL_KL:
            f = f + _xlogx(x).sum(dim=1)
        return f
    lp = log_softmax(x, dim=1)
    return (lp.exp() * (lp - lq)).sum(dim=1)


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Normal node's flat ``(B, 2k)`` value as (means, log-variances), rows 0 and 1."""
    k = t.shape[1] // 2
    return t[:, :k], t[:, k:]


def _normal_kl(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``(B, k)`` terms ``1/2 (lam - s + (e^s + (m - mu)^2) e^-lam - 1)``."""
    import torch

    (m, s), (mm, lam) = _halves(x), _halves(mu)
    return 0.5 * (lam - s + (torch.exp(s) + (m - mm) ** 2) * torch.exp(-lam) - 1.0)


def _xlogx(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.where(x > 0, x * torch.log(torch.where(x > 0, x, 1.0)), 0.0)


def error_own_torch(
    dist: Distribution, x: torch.Tensor, mu: torch.Tensor, clamped: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """For a non-Gaussian population: ``(eps, own, energy)`` with ``eps = -dF/dmu``, the own term
    ``dF/dx`` (None when clamped) and the per-sample energy summed over the batch, written out (the
    backends' rule, checked against autograd of :func:`energy_torch`)."""
    import torch
    from torch.nn.functional import log_softmax, logsigmoid, softplus

    code = dist.code
    if code == NORMAL_KL:
        (m, sv), (mm, lam) = _halves(x), _halves(mu)
        iv = torch.exp(-lam)
        d = m - mm
        r = torch.exp(sv) * iv
        eps = torch.cat([d * iv, 0.5 * (r + d * d * iv - 1.0)], dim=1)
        own = torch.cat([d * iv, 0.5 * (r - 1.0)], dim=1)
        return eps, own, _normal_kl(x, mu).sum()
    if code in (BERNOULLI_F, BERNOULLI_KL):
        q = torch.sigmoid(mu)
        # as the numba kernel: no subnormal errors from saturated logits (mu < -87), which slow
        # every op (gemms most) that reads them
        q = torch.where(q > TINY, q, 0.0)
        if code == BERNOULLI_F or clamped:
            eps = x - q
            own = None if clamped else -mu
            f = softplus(mu) - x * mu
            if code == BERNOULLI_KL:
                f = f + _xlogx(x) + _xlogx(1 - x)
            return eps, own, f.sum()
        p = torch.sigmoid(x)
        eps = p - q
        own = p * (1 - p) * (x - mu)
        f = p * (logsigmoid(x) - logsigmoid(mu)) + (1 - p) * (logsigmoid(-x) - logsigmoid(-mu))
        return eps, own, f.sum()
    lq = log_softmax(mu, dim=1)
    q = lq.exp()
    if code == CATEGORICAL_F or clamped:
        sx = x.sum(dim=1, keepdim=True)
        eps = x - sx * q
        own = None if clamped else -lq
        f = -(x * lq).sum()
        if code == CATEGORICAL_KL:
            f = f + _xlogx(x).sum()
        return eps, own, f
    lp = log_softmax(x, dim=1)
    p = lp.exp()
    ell = lp - lq
    eps = p - q
    own = p * (ell - (p * ell).sum(dim=1, keepdim=True))
    return eps, own, (p * ell).sum()
