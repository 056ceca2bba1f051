"""A population of rate units: its shape, activation, distribution, precision and bias, validated
once (:func:`make_population`) and read-only afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import validation as _v
from . import activations as _act
from . import distributions as _dist

ROLES = ("hidden", "input", "target")


@dataclass(frozen=True, eq=False)
class Population:
    """A named population of ``size`` rate units arranged in ``shape`` (read-only: change it with
    :meth:`Network.update`, which validates the change and marks simulators built before as stale).

    ``distribution`` (:mod:`neuropc.model.distributions`; default a Gaussian) defines its energy
    and the error it sends to its prediction. ``precision`` (scalar or one value per unit) is the
    Gaussian's precision, which weights the prediction error (1 for other distributions).
    ``bias`` adds a learnable bias to its prediction; on a population with no incoming connection it
    is a learnable prior mean ``mu = b`` (and gives the population an error population).
    ``bias_init`` is the initial bias (scalar or per unit).

    ``shape`` (default ``(size,)``) arranges the units, e.g. ``(T, d)`` tokens by features or
    ``(C, H, W)`` channels by pixels, with axis names ``dims`` (recordings label their axes with
    them). Values, errors, precisions and biases are stored flat, in C order of ``shape``;
    operators (:mod:`neuropc.model.operators`) see ``(B, *shape)``. ``axis`` is the axis a
    softmax activation and a Categorical distribution normalise over (the last by default, or
    ``Categorical(axis=...)``), so a ``(T, T)`` attention population holds one categorical
    distribution per row.
    """

    name: str
    size: int
    activation: _act.Activation
    role: str = "hidden"
    precision: float | np.ndarray = 1.0
    bias: bool = True
    bias_init: float | np.ndarray = 0.0
    trainable_bias: bool = True
    distribution: _dist.Distribution = field(default_factory=_dist.Gaussian)
    shape: tuple[int, ...] = ()
    dims: tuple[str, ...] = ()
    axis: int = -1

    def __post_init__(self) -> None:
        if not self.shape:  # built without a shape: flat
            object.__setattr__(self, "shape", (self.size,))
            object.__setattr__(self, "dims", ("unit",))
            object.__setattr__(self, "axis", 0)

    @property
    def value(self) -> str:
        """Address of the value population, e.g. ``"h1:value"``."""
        return f"{self.name}:value"

    @property
    def error(self) -> str:
        """Address of the error population, e.g. ``"h1:error"``."""
        return f"{self.name}:error"


def make_population(
    name: str,
    size: object,
    *,
    activation: str | _act.Activation,
    role: str,
    precision: object,
    distribution: object = None,
    bias: object,
    bias_init: object,
    trainable_bias: object,
    slope: object,
    shape: object = None,
    dims: object = None,
) -> Population:
    """A validated :class:`Population` (every message names the population): ``size`` or
    ``shape`` (or both, agreeing), ``dims`` naming the axes."""
    shape, dims = _shape(name, size, shape, dims)
    size = int(np.prod(shape))
    if role not in ROLES:
        raise ValueError(f"population {name!r}: unknown role {role!r}; valid: {', '.join(ROLES)}")
    if slope is not None:
        slope = _v.number(slope, f"population {name!r}: slope")
    try:
        act = _act.get(activation, slope=slope)
    except ValueError as e:
        raise ValueError(f"population {name!r}: {e}") from None
    precision, dist = _distribution(name, precision, distribution)
    axis = _axis(name, dist, shape, dims)
    if isinstance(dist, _dist.Normal) and (len(shape) < 2 or shape[0] != 2 or role != "hidden"):
        raise ValueError(
            f"population {name!r}: npc.Normal() holds a mean and a log-variance per unit: it "
            f"needs shape (2, ...) and role 'hidden' (it is never data); got shape {shape}, "
            f"role {role!r}"
        )
    if isinstance(precision, _dist.Precision):  # a parameter: its initial value, per unit
        precision = _initial_precision(name, precision, int(size))
    prec = _per_unit(name, "precision", precision, int(size))
    if np.any(~np.isfinite(prec)) or np.any(prec <= 0):
        raise ValueError(
            f"population {name!r}: precision must be finite and > 0; got {precision!r}"
        )
    binit = _per_unit(name, "bias_init", bias_init, int(size))
    if np.any(~np.isfinite(binit)):
        raise ValueError(f"population {name!r}: bias_init must be finite; got {bias_init!r}")
    prec.flags.writeable = False  # read-only like the population itself
    binit.flags.writeable = False
    return Population(
        name=name,
        size=int(size),
        activation=act,
        role=role,
        precision=prec if np.ndim(precision) else float(prec[0]),
        distribution=dist,
        bias=_v.flag(bias, f"population {name!r}: bias"),
        bias_init=binit if np.ndim(bias_init) else float(binit[0]),
        trainable_bias=_v.flag(trainable_bias, f"population {name!r}: trainable_bias"),
        shape=shape,
        dims=dims,
        axis=axis,
    )


def _initial_precision(name: str, p: _dist.Precision, n: int) -> np.ndarray:
    """The per-unit initial precision of a :class:`Precision` (its diagonal for a full one),
    after checking ``init``: finite and positive; symmetric positive definite when full."""
    try:
        pi = p.initial(n)
    except ValueError as e:
        raise ValueError(f"population {name!r}: {e}") from None
    want = {"scalar": (), "diag": (n,), "full": (n, n)}[p.kind]
    if pi.shape != want:
        raise ValueError(
            f"population {name!r}: Precision(kind={p.kind!r}).init must be a number or have "
            f"shape {want}; got shape {pi.shape}"
        )
    if not np.all(np.isfinite(pi)):
        raise ValueError(f"population {name!r}: Precision.init must be finite; got {p.init!r}")
    if p.kind == "full":
        if not np.allclose(pi, pi.T) or np.linalg.eigvalsh(0.5 * (pi + pi.T)).min() <= 0:
            raise ValueError(
                f"population {name!r}: a full Precision.init must be symmetric positive definite"
            )
        return np.diag(pi).copy()
    if np.any(pi <= 0):
        raise ValueError(f"population {name!r}: precision must be finite and > 0; got {p.init!r}")
    return np.broadcast_to(pi, (n,)).copy()


def _distribution(name: str, precision: object, distribution: object) -> tuple[object, object]:
    """The population's (precision, distribution): ``precision=`` is the Gaussian's precision
    (given there or inside ``npc.Gaussian``, not both); other distributions have none."""
    if distribution is None:
        return precision, _dist.Gaussian(precision=precision)
    if not isinstance(distribution, tuple(_dist.KINDS.values())):
        raise TypeError(
            f"population {name!r}: distribution must be npc.Gaussian(), npc.Bernoulli(), "
            f"npc.Categorical() or npc.Normal(); got {distribution!r}"
        )
    given = not (np.ndim(precision) == 0 and _is_numeric(precision) and float(precision) == 1.0)
    if isinstance(distribution, _dist.Gaussian):
        if isinstance(distribution.precision, _dist.Precision):
            if given and precision is not distribution.precision:
                raise ValueError(
                    f"population {name!r}: give the precision once, in npc.Gaussian(precision="
                    f"npc.Precision(...)); got also precision={precision!r}"
                )
            return distribution.precision, distribution
        if given and distribution.precision is not precision:
            inner = np.asarray(distribution.precision, dtype=float)
            if inner.shape != np.shape(precision) or not np.array_equal(inner, precision):
                raise ValueError(
                    f"population {name!r}: give the precision once, in npc.Gaussian(precision=...)"
                    f" or as precision=; got {precision!r} and {distribution.precision!r}"
                )
        return distribution.precision, distribution
    if given:
        raise ValueError(
            f"population {name!r}: a {distribution.name} population has no precision; got "
            f"precision={precision!r}"
        )
    return 1.0, distribution


def _per_unit(pop: str, what: str, v: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    a = _v.finite_array(v, f"population {pop!r}: {what}") if _is_numeric(v) else None
    if a is None:
        raise TypeError(f"population {pop!r}: {what} must be a number or numbers; got {v!r}")
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(
            f"population {pop!r}: {what} must be a scalar or have shape ({n},); got shape {a.shape}"
        )
    return a.copy()


def _is_numeric(v: object) -> bool:
    if isinstance(v, (str, bytes, bool, np.bool_)) or v is None:
        return False
    try:
        return np.asarray(v).dtype.kind in "iuf"
    except Exception:
        return False


def _shape(name: str, size: object, shape: object, dims: object) -> tuple[tuple, tuple]:
    """The population's ``(shape, dims)`` from ``size`` and/or ``shape`` and ``dims``."""

    def positive_int(v: object) -> bool:
        return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer)) and v >= 1

    if shape is None:
        if not positive_int(size):
            raise ValueError(f"population {name!r}: size must be a positive integer; got {size!r}")
        shape = (int(size),)
    else:
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not shape or not all(map(positive_int, shape)):
            raise ValueError(
                f"population {name!r}: shape must be a non-empty tuple of positive integers; "
                f"got {shape!r}"
            )
        shape = tuple(int(s) for s in shape)
        if size is not None and (not positive_int(size) or int(size) != int(np.prod(shape))):
            raise ValueError(
                f"population {name!r}: size {size!r} does not match shape {shape} "
                f"({int(np.prod(shape))} units); give one of them"
            )
    if dims is None:
        dims = ("unit",) if len(shape) == 1 else tuple(f"axis{i}" for i in range(len(shape)))
    if isinstance(dims, str):
        dims = (dims,)
    dims = tuple(dims)
    if (
        len(dims) != len(shape)
        or not all(isinstance(d, str) and d for d in dims)
        or len(set(dims)) != len(dims)
    ):
        raise ValueError(
            f"population {name!r}: dims must be {len(shape)} distinct non-empty names, one per "
            f"axis of shape {shape}; got {dims!r}"
        )
    return shape, dims


def _axis(name: str, dist: object, shape: tuple, dims: tuple) -> int:
    """The normalisation axis (>= 0): a Categorical's ``axis`` (an index or a name of ``dims``),
    else the last."""
    ax = getattr(dist, "axis", -1)
    if isinstance(ax, str):
        if ax not in dims:
            raise ValueError(
                f"population {name!r}: Categorical(axis={ax!r}) names no axis; dims: "
                f"{', '.join(dims)}"
            )
        return dims.index(ax)
    if not -len(shape) <= ax < len(shape):
        raise ValueError(
            f"population {name!r}: Categorical(axis={ax}) is out of range for shape {shape}"
        )
    return ax % len(shape)
