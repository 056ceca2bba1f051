"""``dense``: ``mu_post += f(x_pre) W^T`` on the last axis (per token for a shaped population),
or on the whole flattened populations (``flatten=True``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import Operator, ShapeError, fan_init, shape_str


class Dense(Operator):
    """``mu_post[..., i] += sum_j W[i, j] f(x_pre)[..., j]`` with ``W`` of shape
    ``(post[-1], pre[-1])``; the leading axes of pre and post must agree (a flat population is
    the usual ``mu = W f(x)``; a ``(T, d)`` one is mapped token by token with shared weights).
    With ``flatten=True`` both populations are taken flat (C order): ``W`` is
    ``(n_post, n_pre)``, e.g. a ``(C, H, W)`` feature map into a classifier layer.
    Initialisers with fan-in ``pre[-1]`` (or ``n_pre``) and fan-out ``post[-1]``
    (:func:`~neuropc.model.operators.fan_init`)."""

    name = "dense"
    OPTIONS: ClassVar[dict[str, Any]] = {"flatten": False}
    # the gradient is an outer product eps^T f_pre, so the Fisher block of W factorises as
    # E[f f^T] (x) E[eps eps^T] (natural gradient, neuropc.dynamics.natural_gradient)
    kronecker = True

    def _validate(self) -> None:
        if not isinstance(self.options["flatten"], bool):
            raise ValueError(f"dense: option flatten must be True or False; got "
                             f"{self.options['flatten']!r}")  # fmt: skip

    def _io(self, pre_shapes, post_shape) -> tuple[int, int]:
        if self.options["flatten"]:
            return int(np.prod(pre_shapes[0])), int(np.prod(post_shape))
        return int(pre_shapes[0][-1]), int(post_shape[-1])

    def check(self, pre_shapes, post_shape) -> None:
        (pre,) = pre_shapes
        if not self.options["flatten"] and tuple(pre[:-1]) != tuple(post_shape[:-1]):
            raise ShapeError(
                f"dense maps the last axis and keeps the others: pre shape {shape_str(pre)} and "
                f"post shape {shape_str(post_shape)} differ before the last axis (flatten=True "
                "maps whole populations)"
            )

    def param_shapes(self, pre_shapes, post_shape):
        n_in, n_out = self._io(pre_shapes, post_shape)
        return {"W": (n_out, n_in)}

    def init(self, rng, pre_shapes, post_shape, init, gain):
        n_in, n_out = self._io(pre_shapes, post_shape)
        return {"W": fan_init(rng, (n_out, n_in), n_in, n_out, init, gain)}

    def forward(self, f_pres, theta):
        f = f_pres[0]
        if self.options["flatten"]:
            return f.reshape(f.shape[0], -1) @ theta["W"].T
        return f @ theta["W"].T

    def vjp_inputs(self, eps, f_pres, theta):
        if self.options["flatten"]:
            b = eps.shape[0]
            return [(eps.reshape(b, -1) @ theta["W"]).reshape(f_pres[0].shape)]
        return [eps @ theta["W"]]

    def vjp_params(self, eps, f_pres, theta):
        n = theta["W"].shape
        f = f_pres[0].reshape(-1, n[1])
        return {"W": eps.reshape(-1, n[0]).T @ f}


OPERATORS = (Dense,)
