"""``identity``: ``mu_post += f(x_pre)`` unchanged (residual paths)."""

from __future__ import annotations

import torch

from . import Operator, ShapeError, shape_str


class Identity(Operator):
    """``mu_post += f(x_pre)``, element by element; pre and post shapes must be equal. No
    parameters; the vjp passes the post's error straight back (``eps``)."""

    name = "identity"

    def check(self, pre_shapes, post_shape) -> None:
        (pre,) = pre_shapes
        if tuple(pre) != tuple(post_shape):
            raise ShapeError(
                f"identity needs equal shapes: pre shape {shape_str(pre)} and post shape "
                f"{shape_str(post_shape)} differ"
            )

    def forward(self, f_pres, theta) -> torch.Tensor:
        # a copy, so that a caller accumulating into the result in place cannot alias f(x_pre)
        return f_pres[0].clone()

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        return [eps.clone()]


OPERATORS = (Identity,)
