"""Activation functions f and their derivatives f'.

A population's activation is applied to its *value* when it acts as a presynaptic population:
``mu_post = sum_pre W f(x_pre) + b`` (see :mod:`neuropc.model.network`). Each activation has an integer
code shared with the compiled kernels, a numpy form (for users and plots) and a torch form (the
oracle in :mod:`neuropc.model.energy` and the backprop reference).

``softmax`` is the one activation that is not elementwise: ``f(x) = exp(x) / sum exp(x)`` over
the population's units (per sample), whose Jacobian ``diag(s) - s s^T`` enters the value update as
the vector-Jacobian product ``s * (g - <s, g>)`` (a categorical node passing its probabilities on,
Pinchetti et al. 2022). :meth:`Activation.numpy_derivative` gives its diagonal ``s (1 - s)``.

``gelu`` is the tanh approximation ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, the form
JAX uses by default and that the PCX benchmark configurations were tuned with. ``square`` (f = x^2)
is the nonlinearity of the Bogacz (2017) tutorial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .distributions import from_rows, to_rows

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715

#: float32 ``tanh(x) = x P(x^2) / Q(x^2)`` on ``|x| <= 9``: a near-minimax fit of degree 4 / 4
#: (``benchmarks/tanh_fit.py`` derives it and measures it), lowest degree first; Q's constant
#: term is 1. The numba kernels' float32 tanh and the torch backend's compiled CPU graphs use it.
TANH_P = (1.0, 0.13381026685237885, 0.0034955902956426144, 2.0609113562386483e-05,
          1.3354701344781006e-08)  # fmt: skip
TANH_Q = (1.0, 0.4671434164047241, 0.02587698958814144, 0.0003285638231318444,
          7.776575330353808e-07)  # fmt: skip


@dataclass(frozen=True)
class Activation:
    """A named activation: ``code`` indexes the compiled kernels; ``param`` is the leaky slope."""

    name: str
    code: int
    param: float = 0.0

    def numpy(self, x: np.ndarray) -> np.ndarray:
        """f(x) with numpy."""
        return _np_forward(self, np.asarray(x))[0]

    def numpy_derivative(self, x: np.ndarray) -> np.ndarray:
        """f'(x) with numpy."""
        return _np_forward(self, np.asarray(x))[1]

    def torch(self, x):
        """f(x) with torch (differentiable; used by the oracle and the backprop reference)."""
        import torch
        import torch.nn.functional as F

        n = self.name
        if n == "linear":
            return x
        if n == "tanh":
            return torch.tanh(x)
        if n == "sigmoid":
            return torch.sigmoid(x)
        if n == "relu":
            return torch.relu(x)
        if n == "leaky_relu":
            return F.leaky_relu(x, self.param)
        if n == "gelu":
            return F.gelu(x, approximate="tanh")
        if n == "hard_tanh":
            return F.hardtanh(x)
        if n == "square":
            return x * x
        if n == "softmax":
            return torch.softmax(x, dim=-1)
        raise AssertionError(n)

    def torch_forward(self, x):
        """``(f(x), aux)`` for :meth:`torch_vjp`: aux is f(x) itself for tanh and sigmoid, whose
        derivatives are functions of the output (torch fuses ``g (1 - t^2)`` and ``g s (1 - s)``
        into one kernel), None for linear, and f'(x) otherwise."""
        n = self.name
        if n == "linear":
            return x, None
        if n in ("tanh", "sigmoid", "softmax"):
            import torch

            # a float32 graph compiled for the CPU: the rational fit (see _tanh_rational)
            cpu32 = x.device.type == "cpu" and x.dtype == torch.float32
            if n == "tanh" and cpu32 and torch.compiler.is_compiling():
                f = _tanh_rational(x)
            else:
                f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}.get(n, _softmax)(x)
            return f, f
        return self.torch_with_derivative(x)

    def torch_vjp(self, aux, g):
        """``f'(x) * g`` from the ``aux`` that :meth:`torch_forward` returned."""
        import torch

        n = self.name
        if n == "linear":
            return g
        if n == "tanh":
            return torch.ops.aten.tanh_backward(g, aux)
        if n == "sigmoid":
            return torch.ops.aten.sigmoid_backward(g, aux)
        if n == "softmax":  # J^T g with J = diag(s) - s s^T
            return aux * (g - (aux * g).sum(dim=-1, keepdim=True))
        return aux * g

    def torch_with_derivative(self, x):
        """``(f(x), f'(x))`` with torch, in closed form (no autograd): the torch backend's kernel."""
        import torch

        n = self.name
        if n == "linear":
            return x, torch.ones_like(x)
        if n == "tanh":
            t = torch.tanh(x)
            return t, 1.0 - t * t
        if n == "sigmoid":
            s = torch.sigmoid(x)
            return s, s * (1.0 - s)
        if n == "relu":
            pos = (x > 0).to(x.dtype)
            return x * pos, pos
        if n == "leaky_relu":
            d = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.param))
            return x * d, d
        if n == "gelu":
            t = torch.tanh(_GELU_C * (x + _GELU_A * x * x * x))
            d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)
            return 0.5 * x * (1.0 + t), d
        if n == "hard_tanh":
            return x.clamp(-1.0, 1.0), ((x > -1.0) & (x < 1.0)).to(x.dtype)
        if n == "square":
            return x * x, 2.0 * x
        if n == "softmax":  # the Jacobian's diagonal (the backends use torch_vjp)
            f = _softmax(x)
            return f, f * (1.0 - f)
        raise AssertionError(n)


_CODES = {
    "linear": 0,
    "tanh": 1,
    "sigmoid": 2,
    "relu": 3,
    "leaky_relu": 4,
    "gelu": 5,
    "hard_tanh": 6,
    "square": 7,
    "softmax": 8,
}
NAMES: tuple[str, ...] = tuple(_CODES)
DEFAULT_LEAKY_SLOPE = 0.01


def get(spec: str | Activation, *, slope: float | None = None) -> Activation:
    """Resolve an activation by name (``"leaky_relu"`` takes ``slope``, default 0.01)."""
    if isinstance(spec, Activation):
        return spec
    if spec not in _CODES:
        raise ValueError(f"unknown activation {spec!r}; valid: {', '.join(NAMES)}")
    param = 0.0
    if spec == "leaky_relu":
        param = DEFAULT_LEAKY_SLOPE if slope is None else float(slope)
    elif slope is not None:
        raise ValueError(f"activation {spec!r} takes no slope")
    return Activation(spec, _CODES[spec], param)


def _np_forward(act: Activation, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = act.name
    if n == "linear":
        return x.copy(), np.ones_like(x)
    if n == "tanh":
        t = np.tanh(x)
        return t, 1.0 - t * t
    if n == "sigmoid":
        s = 0.5 * (1.0 + np.tanh(0.5 * x))
        return s, s * (1.0 - s)
    if n == "relu":
        return np.maximum(x, 0.0), (x > 0).astype(x.dtype)
    if n == "leaky_relu":
        return np.where(x > 0, x, act.param * x), np.where(x > 0, 1.0, act.param).astype(x.dtype)
    if n == "gelu":
        u = _GELU_C * (x + _GELU_A * x**3)
        t = np.tanh(u)
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)
        return 0.5 * x * (1.0 + t), d
    if n == "hard_tanh":
        return np.clip(x, -1.0, 1.0), ((x > -1.0) & (x < 1.0)).astype(x.dtype)
    if n == "square":
        return x * x, 2.0 * x
    if n == "softmax":
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        f = e / np.sum(e, axis=-1, keepdims=True)
        return f, f * (1.0 - f)
    raise AssertionError(n)


def _softmax(x):
    """Softmax over the last axis (the population's units), with torch."""
    import torch

    return torch.softmax(x, dim=-1)


class RowActivation:
    """A softmax over a shaped population's normalisation axis: the activation's torch forms
    applied to one row per distribution (:func:`neuropc.model.distributions.to_rows`)."""

    def __init__(self, act: Activation, shape: tuple[int, ...], axis: int) -> None:
        self.act, self.shape, self.axis = act, shape, axis
        self.name = act.name

    def torch(self, x):
        return from_rows(self.act.torch(to_rows(x, self.shape, self.axis)), x.shape[0],
                         self.shape, self.axis)  # fmt: skip

    def torch_forward(self, x):
        f, aux = self.act.torch_forward(to_rows(x, self.shape, self.axis))
        return from_rows(f, x.shape[0], self.shape, self.axis), aux  # aux stays in rows

    def torch_vjp(self, aux, g):
        b = g.shape[0]
        r = self.act.torch_vjp(aux, to_rows(g, self.shape, self.axis))
        return from_rows(r, b, self.shape, self.axis)


def _tanh_rational(x):
    """float32 ``tanh(x) = c P(c^2) / Q(c^2)``, ``c = x`` clipped to ``[-9, 9]`` (:data:`TANH_P`,
    :data:`TANH_Q`), exactly ``+-1`` for ``|x| >= 9`` (float32 tanh rounds to +-1 from 9.01 on),
    NaN for NaN: within 6 ulp (tests/test_compiled_tanh.py). What a float32 graph compiled for
    the CPU computes: eight multiply-adds and a division, 3% of a compiled batch of the standard
    task faster than the expm1 form used before (docs/performance.md, issue 14, seventh round).
    That form was also inaccurate for small ``|x|``: inductor computes expm1 as ``exp(y) - 1``,
    which cancels (hundreds of ulp at ``|x| = 1e-3`` in float32). float64 graphs call
    ``torch.tanh``."""
    import torch

    c = x.clamp(-9.0, 9.0)
    s = c * c
    p4, p3, p2, p1, p0 = TANH_P[::-1]
    q4, q3, q2, q1, q0 = TANH_Q[::-1]
    num = (((p4 * s + p3) * s + p2) * s + p1) * s + p0
    den = (((q4 * s + q3) * s + q2) * s + q1) * s + q0
    return torch.where(x.abs() >= 9.0, torch.sign(x), c * num / den)


def shaped_activation(act: Activation, shape: tuple[int, ...], axis: int):
    """``act`` itself when elementwise or flat, else its :class:`RowActivation`."""
    return RowActivation(act, shape, axis) if len(shape) > 1 and act.name == "softmax" else act
