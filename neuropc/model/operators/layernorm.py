"""``layernorm``: layer normalisation over the last axis, with a learnt gain and shift."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
import torch

from . import WEIGHT_INITS, Operator, ShapeError, shape_str


class LayerNorm(Operator):
    """``mu_post += gamma * (f - mean(f)) / sqrt(var(f) + eps) + shift``, ``f = f(x_pre)``, with
    mean and (biased) variance over the last axis (per token of a ``(T, d)`` population); pre and
    post shapes are equal. Parameters ``W`` (``gamma``, shape ``(d,)``) and ``shift`` (``(d,)``).
    Option ``eps`` (default 1e-5, a positive float).

    Initialisation ignores ``init``: ``gamma`` = ``gain`` in every entry and ``shift`` = 0, so a
    fresh layer is the plain normalisation scaled by ``gain`` (random gains would only add noise
    to a map that is already unit-scaled). Explicit vjps (the standard layer-norm backward)."""

    name = "layernorm"
    OPTIONS: ClassVar[dict[str, Any]] = {"eps": 1e-5}

    def _validate(self) -> None:
        e = self.options["eps"]
        ok = isinstance(e, numbers.Real) and not isinstance(e, bool)
        if not ok or not np.isfinite(float(e)) or float(e) <= 0:
            raise ValueError(f"{self.name}: option eps must be a positive float; got {e!r}")
        self.options["eps"] = float(e)

    def check(self, pre_shapes, post_shape) -> None:
        (pre,) = pre_shapes
        if len(tuple(pre)) == 0 or tuple(pre) != tuple(post_shape):
            raise ShapeError(
                f"layernorm normalises the last axis and needs equal shapes: pre shape "
                f"{shape_str(pre)} and post shape {shape_str(post_shape)}"
            )

    def param_shapes(self, pre_shapes, post_shape):
        d = int(post_shape[-1])
        return {"W": (d,), "shift": (d,)}

    def init(self, rng, pre_shapes, post_shape, init, gain):
        if init not in WEIGHT_INITS:  # refused like every other operator's, though unused
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(WEIGHT_INITS)}")
        d = int(post_shape[-1])
        return {"W": np.full((d,), float(gain)), "shift": np.zeros(d)}

    def _normalise(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(xhat, 1 / sigma)`` over the last axis."""
        xc = f - f.mean(dim=-1, keepdim=True)
        # the biased variance as a mean of squares: torch.var over the last axis runs ~10x
        # slower on CPU than these two elementwise ops and a reduction
        rstd = torch.rsqrt((xc * xc).mean(dim=-1, keepdim=True) + self.options["eps"])
        return xc * rstd, rstd

    def forward(self, f_pres, theta) -> torch.Tensor:
        xhat, _ = self._normalise(f_pres[0])
        return theta["W"] * xhat + theta["shift"]

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        # with g = eps * gamma: dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma; the two means
        # remove the components along the directions the normalisation projects out
        xhat, rstd = self._normalise(f_pres[0])
        g = eps * theta["W"]
        mg = g.mean(dim=-1, keepdim=True)
        mgx = (g * xhat).mean(dim=-1, keepdim=True)
        return [(g - mg - xhat * mgx) * rstd]

    def vjp_params(self, eps, f_pres, theta) -> dict[str, torch.Tensor]:
        xhat, _ = self._normalise(f_pres[0])
        d = xhat.shape[-1]
        return {
            "W": (eps * xhat).reshape(-1, d).sum(0),
            "shift": eps.reshape(-1, d).sum(0),
        }


OPERATORS = (LayerNorm,)
