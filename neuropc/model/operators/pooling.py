"""``avg_pool2d`` and ``max_pool2d``: parameter-free 2-D pooling of a ``(C, H, W)`` population
channel by channel, with explicit vjps."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from . import Operator
from .conv import check_image_map, int_option


class _Pool(Operator):
    """Shared options and shape check: window ``k`` (``kernel_size``), stride ``s``
    (``stride=None`` means ``k``), zero/-inf padding ``p <= k // 2`` (torch's limit); the post
    is ``(C, floor((H + 2p - k) / s) + 1, floor((W + 2p - k) / s) + 1)``."""

    OPTIONS: ClassVar[dict[str, Any]] = {"kernel_size": None, "stride": None, "padding": 0}

    def _validate(self) -> None:
        int_option(self, "kernel_size")
        int_option(self, "stride", allow_none=True)
        int_option(self, "padding", 0)
        k, p = self.options["kernel_size"], self.options["padding"]
        if p > k // 2:
            raise ValueError(
                f"{self.name}: option padding must be at most half the kernel_size ({k // 2}); "
                f"got {p!r}"
            )

    @property
    def _ksp(self) -> tuple[int, int, int]:
        k, s, p = (self.options[n] for n in ("kernel_size", "stride", "padding"))
        return k, (k if s is None else s), p

    def check(self, pre_shapes, post_shape) -> None:
        (pre,) = pre_shapes
        desc = f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"
        k, s_, p = self._ksp
        check_image_map(desc, pre, post_shape,
                        lambda h, w: ((h + 2 * p - k) // s_ + 1, (w + 2 * p - k) // s_ + 1),
                        int(pre[0]))  # fmt: skip


class AvgPool2d(_Pool):
    """``mu_post[b, c, i, j] += (1/k^2) sum_{window (i, j)} f(x_pre)[b, c]`` (torch's
    ``avg_pool2d`` with ``count_include_pad=True``: padded zeros count in the average, so every
    window divides by ``k^2``). vjp: each window spreads ``eps / k^2`` over its inputs."""

    name = "avg_pool2d"

    def forward(self, f_pres, theta) -> torch.Tensor:
        k, s, p = self._ksp
        return F.avg_pool2d(f_pres[0], k, s, p, count_include_pad=True)

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        # spreading eps/k^2 over each window is a transposed convolution, per channel, with a
        # constant k x k kernel; output_padding restores the rows/columns no window reached
        k, s, p = self._ksp
        x = f_pres[0]
        b, c, h, w = x.shape
        ho, wo = eps.shape[-2:]
        out_pad = (h - ((ho - 1) * s - 2 * p + k), w - ((wo - 1) * s - 2 * p + k))
        kernel = torch.full((1, 1, k, k), 1.0 / (k * k), dtype=eps.dtype, device=eps.device)
        e = eps.reshape(b * c, 1, ho, wo)
        dx = F.conv_transpose2d(e, kernel, stride=s, padding=p, output_padding=out_pad)
        return [dx.reshape(b, c, h, w)]


class MaxPool2d(_Pool):
    """``mu_post[b, c, i, j] += max_{window (i, j)} f(x_pre)[b, c]`` (padding is -inf, never
    chosen). vjp: each window routes its ``eps`` to its argmax (a subgradient; at ties torch's
    choice of argmax decides which input receives it)."""

    name = "max_pool2d"

    def forward(self, f_pres, theta) -> torch.Tensor:
        k, s, p = self._ksp
        return F.max_pool2d(f_pres[0], k, s, p)

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        k, s, p = self._ksp
        x = f_pres[0]
        b, c, h, w = x.shape
        _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        # scatter_add, not max_unpool2d: with stride < kernel_size one input can be the argmax
        # of several windows and must receive the sum of their errors (unpool overwrites)
        dx = eps.new_zeros(b, c, h * w).scatter_add_(
            2, idx.reshape(b, c, -1), eps.reshape(b, c, -1)
        )
        return [dx.reshape(b, c, h, w)]


OPERATORS = (AvgPool2d, MaxPool2d)
