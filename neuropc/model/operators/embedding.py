"""``embedding``: token ids in the presynaptic population select rows of a table ``W``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from . import Operator, ShapeError, fan_init, shape_str
from .conv import int_option


class Embedding(Operator):
    """``mu_post[b, t, :] += W[ids[b, t], :]`` where the pre population (shape ``(T,)``) holds
    token ids as floats (``ids = f(x_pre)``, so clamp it with an identity activation) and the post
    has shape ``(T, d)``; ``W`` has shape ``(vocab, d)`` (option ``vocab``, required).

    The ids are not differentiable (``differentiable = (False,)``, ``vjp_inputs`` gives
    ``[None]``): the pre population must be clamped. ``vjp_params`` adds each position's error
    into the row of its token: ``dW[v] = sum_{b, t: ids[b, t] = v} eps[b, t]``.

    Initialisers: :func:`fan_init` with fan-in 1 (each output reads one row, like a one-hot
    input) and fan-out ``d``; so ``normal`` is N(0, gain^2) (torch's ``nn.Embedding``),
    ``kaiming_uniform`` U(-sqrt(3) gain, sqrt(3) gain) (unit variance at gain 1),
    ``xavier_*`` use ``fan_in + fan_out = 1 + d``, ``zeros``/``ones`` as usual."""

    name = "embedding"
    OPTIONS: ClassVar[dict[str, Any]] = {"vocab": None}
    differentiable = (False,)

    def _validate(self) -> None:
        int_option(self, "vocab")

    def check(self, pre_shapes, post_shape) -> None:
        (pre,) = pre_shapes
        pre, post = tuple(pre), tuple(post_shape)
        if len(pre) != 1 or len(post) != 2 or pre[0] != post[0]:
            raise ShapeError(
                f"embedding maps token ids of shape (T,) to vectors of shape (T, d): got pre "
                f"shape {shape_str(pre)} and post shape {shape_str(post)}"
            )

    def param_shapes(self, pre_shapes, post_shape):
        return {"W": (self.options["vocab"], int(post_shape[-1]))}

    def init(self, rng, pre_shapes, post_shape, init, gain):
        d = int(post_shape[-1])
        return {"W": fan_init(rng, (self.options["vocab"], d), 1, d, init, gain)}

    def forward(self, f_pres, theta) -> torch.Tensor:
        return theta["W"][f_pres[0].long()]

    def vjp_inputs(self, eps, f_pres, theta) -> list[None]:
        return [None]

    def vjp_params(self, eps, f_pres, theta) -> dict[str, torch.Tensor]:
        w = theta["W"]
        ids = f_pres[0].reshape(-1).long()
        # index_add accumulates repeated tokens (a plain indexed assignment would keep only one)
        dw = torch.zeros_like(w).index_add_(0, ids, eps.reshape(-1, w.shape[-1]).to(w.dtype))
        return {"W": dw}

    def check_input(self, i: int, pre: str, values: np.ndarray) -> None:
        """Token ids must be integers in ``[0, vocab)``; ``ValueError`` naming the population,
        the range and the first offending value otherwise (NaN and inf count as non-integers)."""
        v = np.asarray(values, dtype=float).reshape(-1)
        vocab = self.options["vocab"]
        finite = np.isfinite(v)
        bad_int = ~finite | (np.where(finite, v, 0.0) != np.round(np.where(finite, v, 0.0)))
        bad = bad_int | (v < 0) | (v >= vocab)
        if bad.any():
            j = int(np.argmax(bad))
            first, why = float(v[j]), ("not an integer" if bad_int[j] else "out of range")
            raise ValueError(
                f"embedding: population {pre!r} holds token ids, which must be integers in "
                f"[0, {vocab}); got {first!r} ({why})"
            )


OPERATORS = (Embedding,)
