"""Connection operators: how presynaptic populations' outputs enter a prediction.

A connection ``(pre_1, ..., pre_k) -> post`` of kind ``K`` adds
``OPERATORS[K](**options).forward([f(x_pre_1), ...], theta)`` to ``mu_post``. Populations have
shapes (``Population.shape``); an operator sees each input as ``(B, *pre_shape)`` and returns
``(B, *post_shape)``. An operator instance (:class:`Operator`, built by :func:`make` from the
connection's kind and options) defines, once:

* ``check(pre_shapes, post_shape)``: refuses shapes it cannot map (:class:`ShapeError`, naming
  both shapes);
* ``param_shapes(pre_shapes, post_shape)``: its parameters and their shapes (the first is keyed
  by the connection's name, ``"pre->post"``, the others ``"pre->post:name"``);
* ``init(rng, pre_shapes, post_shape, init, gain)``: their initial values;
* ``forward(f_pres, theta)``: the contribution to ``mu_post`` (torch; the oracle differentiates
  it);
* ``vjp_inputs(eps, f_pres, theta)``: ``eps (d forward / d f_pre_i)`` for every input, what the
  post's error sends back to each presynaptic population (``None`` for an input that is not
  differentiable, such as token ids);
* ``vjp_params(eps, f_pres, theta)``: ``d (eps . forward) / d theta`` summed over the batch, the
  local (Hebbian) term of the weight gradient ``dF/dtheta = -vjp_params(eps, f_pres) / B``.

With these signs the value gradient of a presynaptic population is
``dF/dx_pre = ... - f'(x_pre) * vjp_inputs(eps_post)[i]``. The torch forms here are what the torch
backend runs and are checked against autograd of ``forward`` (tests/test_operators.py); the
numba backend hard-codes flat dense connections as gemms and refuses every other kind at
``Simulator(...)`` (``neuropc.backends.SUPPORTS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

WEIGHT_INITS = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "normal", "zeros", "ones")

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """An operator cannot map the given population shapes (the message names both)."""


class Operator:
    """Base of the connection operators (see the module docstring). Subclasses set ``name``,
    ``arity`` (the number of presynaptic populations), ``OPTIONS`` (option name -> default) and
    implement the shape and numeric methods. ``differentiable`` says, per input, whether the
    operator has a vjp for it (an input without one must be clamped)."""

    name = "?"
    arity = 1
    kronecker = False  # the weight gradient is one outer product (natural gradient's K-FAC)
    OPTIONS: ClassVar[dict[str, Any]] = {}
    differentiable: tuple[bool, ...] = (True,)

    def __init__(self, **options: Any) -> None:
        bad = sorted(set(options) - set(self.OPTIONS))
        if bad:
            valid = ", ".join(self.OPTIONS) or "(none)"
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(bad)}; valid: {valid}")
        self.options = {**self.OPTIONS, **options}
        self._validate()

    def _validate(self) -> None:
        """Check ``self.options`` (override); messages name the option and the value given."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # ---- shapes -------------------------------------------------------------------------------
    def check(self, pre_shapes: Sequence[Shape], post_shape: Shape) -> None:
        """Raise :class:`ShapeError` when the inputs' and output's shapes do not fit."""

    def param_shapes(self, pre_shapes: Sequence[Shape], post_shape: Shape) -> dict[str, Shape]:
        return {}

    def init(
        self,
        rng: np.random.Generator,
        pre_shapes: Sequence[Shape],
        post_shape: Shape,
        init: str,
        gain: float,
    ) -> dict[str, np.ndarray]:
        return {}

    # ---- numerics (torch) ---------------------------------------------------------------------
    def forward(self, f_pres: Sequence[torch.Tensor], theta: Mapping[str, torch.Tensor]):
        raise NotImplementedError

    def vjp_inputs(self, eps, f_pres, theta) -> list:
        raise NotImplementedError

    def vjp_params(self, eps, f_pres, theta) -> dict:
        return {}

    def check_input(self, i: int, pre: str, values: np.ndarray) -> None:
        """Refuse data clamped into input ``i`` (population ``pre``) that the operator cannot
        read (e.g. token ids out of range); ``values`` is ``(B, *pre_shape)``."""


def fan_init(
    rng: np.random.Generator, shape: Shape, fan_in: int, fan_out: int, init: str, gain: float
) -> np.ndarray:
    """A weight tensor of ``shape`` from a named initialiser (``gain`` g): ``xavier_uniform``
    U(-a, a), a = g sqrt(6 / (fan_in + fan_out)); ``xavier_normal`` N(0, g^2 2 / (fan_in +
    fan_out)); ``kaiming_uniform`` U(-a, a), a = g sqrt(3 / fan_in); ``normal``
    N(0, g^2 / fan_in); ``zeros``; ``ones`` (all equal to g)."""
    if init == "xavier_uniform":
        a = gain * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape)
    if init == "xavier_normal":
        return rng.normal(0.0, gain * np.sqrt(2.0 / (fan_in + fan_out)), shape)
    if init == "kaiming_uniform":
        a = gain * np.sqrt(3.0 / fan_in)
        return rng.uniform(-a, a, shape)
    if init == "normal":
        return rng.normal(0.0, gain / np.sqrt(fan_in), shape)
    if init == "zeros":
        return np.zeros(shape)
    if init == "ones":
        return np.full(shape, float(gain))
    raise ValueError(f"unknown init {init!r}; valid: {', '.join(WEIGHT_INITS)}")


def shape_str(shape: Shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


from .dense import Dense  # noqa: E402  (the operators import the base above)

OPERATORS: dict[str, type[Operator]] = {"dense": Dense}


def _register_builtin() -> None:
    from . import attention, conv, embedding, identity, layernorm, pooling

    for mod in (identity, embedding, attention, layernorm, conv, pooling):
        for op in mod.OPERATORS:
            OPERATORS[op.name] = op


def get(kind: str) -> type[Operator]:
    """The operator class of ``kind``; ``ValueError`` listing the registered ones otherwise."""
    op = OPERATORS.get(kind) if isinstance(kind, str) else None
    if op is None:
        raise ValueError(f"unknown connection kind {kind!r}; valid: {', '.join(OPERATORS)}")
    return op


def make(kind: str, options: Mapping[str, Any] | None = None) -> Operator:
    """An operator instance of ``kind`` with ``options`` (validated)."""
    return get(kind)(**dict(options or {}))


def param_key(conn: str, pname: str, first: bool) -> str:
    """Name of parameter ``pname`` of connection ``conn``: the connection's own name for an
    operator's first parameter (a dense weight is ``"pre->post"``), else ``"conn:pname"``."""
    return conn if first else f"{conn}:{pname}"


_register_builtin()
