"""``conv2d`` and ``conv_transpose2d``: 2-D (transposed) convolutions between ``(C, H, W)``
populations, with explicit vjps (the convolution's adjoints), not autograd."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from . import Operator, Shape, ShapeError, fan_init, shape_str


def check_image_map(desc: str, pre, post, out_hw, channels: int | None) -> None:
    """Refuse a ``(C, H, W) -> (C', H', W')`` map whose post shape is not the one ``out_hw(H, W)``
    gives (``channels``: the required ``C'``, None for any count); messages name both shapes."""
    pre, post = tuple(pre), tuple(post)
    if len(pre) != 3 or len(post) != 3:
        raise ShapeError(
            f"{desc} maps images of shape (C, H, W): got pre shape {shape_str(pre)} and post "
            f"shape {shape_str(post)}"
        )
    ho, wo = out_hw(pre[1], pre[2])
    if ho < 1 or wo < 1:
        raise ShapeError(
            f"{desc}: pre shape {shape_str(pre)} is too small for the window (output size "
            f"{ho}x{wo}); post shape {shape_str(post)}"
        )
    want = (post[0] if channels is None else channels, ho, wo)
    if post != want:
        any_c = " (any channel count)" if channels is None else ""
        raise ShapeError(
            f"{desc}: pre shape {shape_str(pre)} maps to post shape {shape_str(want)}{any_c}, "
            f"got post shape {shape_str(post)}"
        )


def int_option(op: Operator, key: str, minimum: int = 1, *, allow_none: bool = False) -> None:
    """Check that option ``key`` of ``op`` is an int ``>= minimum`` (or None when allowed);
    a ``ValueError`` naming the option and the value given otherwise. Shared by the operators
    with integer options (conv, pooling, attention, embedding)."""
    v: Any = op.options[key]
    if v is None and allow_none:
        return
    # bool is an int subclass, but heads=True or kernel_size=True is a mistake, not a 1
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        req = " (required)" if v is None else ""
        raise ValueError(f"{op.name}: option {key} must be {what}{req}; got {v!r}")
    op.options[key] = int(v)


class _Conv(Operator):
    """Shared option and shape handling of the two convolutions."""

    OPTIONS: ClassVar[dict[str, Any]] = {"kernel_size": None, "stride": 1, "padding": 0}

    def _validate(self) -> None:
        int_option(self, "kernel_size")
        int_option(self, "stride")
        int_option(self, "padding", 0)

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        raise NotImplementedError

    def _weight_shape(self, c_in: int, c_out: int) -> Shape:
        raise NotImplementedError

    def _describe(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"

    def check(self, pre_shapes, post_shape) -> None:
        check_image_map(self._describe(), pre_shapes[0], post_shape, self._out_hw, None)

    def param_shapes(self, pre_shapes, post_shape):
        return {"W": self._weight_shape(int(pre_shapes[0][0]), int(post_shape[0]))}

    def init(self, rng, pre_shapes, post_shape, init, gain):
        # fan-in C_in k^2 (the inputs summed into one output), fan-out C_out k^2, as torch's
        # nn.Conv2d computes them; the same for the transpose (documented simplification: a
        # strided transpose sums only about C_in k^2 / s^2 inputs per output)
        c_in, c_out, k = int(pre_shapes[0][0]), int(post_shape[0]), self.options["kernel_size"]
        shape = self._weight_shape(c_in, c_out)
        return {"W": fan_init(rng, shape, c_in * k * k, c_out * k * k, init, gain)}


class Conv2d(_Conv):
    """``mu_post[b, o] += sum_c W[o, c] (*) f(x_pre)[b, c]`` (cross-correlation, torch's
    ``conv2d``), ``W`` of shape ``(C_out, C_in, k, k)``, stride ``s``, zero padding ``p``; the
    post's spatial size is ``floor((H + 2p - k) / s) + 1`` (trailing rows/columns a stride does
    not reach are ignored). Init with fan-in ``C_in k^2``, fan-out ``C_out k^2``."""

    name = "conv2d"

    def _out_hw(self, h, w):
        k, s, p = (self.options[n] for n in ("kernel_size", "stride", "padding"))
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def _weight_shape(self, c_in, c_out):
        k = self.options["kernel_size"]
        return (c_out, c_in, k, k)

    def forward(self, f_pres, theta) -> torch.Tensor:
        o = self.options
        return F.conv2d(f_pres[0], theta["W"], stride=o["stride"], padding=o["padding"])

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        # the adjoint of the convolution (a transposed convolution sized back to the input)
        o = self.options
        x = f_pres[0]
        return [conv2d_input(x.shape, theta["W"], eps, stride=o["stride"], padding=o["padding"])]

    def vjp_params(self, eps, f_pres, theta) -> dict[str, torch.Tensor]:
        o = self.options
        w = theta["W"]
        return {
            "W": conv2d_weight(f_pres[0], w.shape, eps, stride=o["stride"], padding=o["padding"])
        }


class ConvTranspose2d(_Conv):
    """``mu_post += conv_transpose2d(f(x_pre), W)`` (torch's ``conv_transpose2d``, the adjoint
    of ``conv2d`` with the same ``W``, stride and padding), ``W`` of shape
    ``(C_in, C_out, k, k)`` (torch layout); the post's spatial size is
    ``(H - 1) s - 2p + k + output_padding`` (``output_padding < stride``). Init with fan-in
    ``C_in k^2``, fan-out ``C_out k^2``."""

    name = "conv_transpose2d"
    OPTIONS: ClassVar[dict[str, Any]] = {**_Conv.OPTIONS, "output_padding": 0}

    def _validate(self) -> None:
        super()._validate()
        int_option(self, "output_padding", 0)
        op, s = self.options["output_padding"], self.options["stride"]
        if op >= s:  # torch's rule: the extra rows must lie within one stride
            raise ValueError(
                f"{self.name}: option output_padding must be smaller than stride ({s}); got {op!r}"
            )

    def _out_hw(self, h, w):
        k, s, p, op = (
            self.options[n] for n in ("kernel_size", "stride", "padding", "output_padding")
        )
        return (h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op

    def _weight_shape(self, c_in, c_out):
        k = self.options["kernel_size"]
        return (c_in, c_out, k, k)

    def forward(self, f_pres, theta) -> torch.Tensor:
        o = self.options
        return F.conv_transpose2d(
            f_pres[0],
            theta["W"],
            stride=o["stride"],
            padding=o["padding"],
            output_padding=o["output_padding"],
        )

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        # the transpose of a transposed convolution is the convolution itself; with
        # output_padding < stride its output has exactly the input's size
        o = self.options
        return [F.conv2d(eps, theta["W"], stride=o["stride"], padding=o["padding"])]

    def vjp_params(self, eps, f_pres, theta) -> dict[str, torch.Tensor]:
        # eps . conv_T(x, W) = conv2d(eps, W) . x, so d/dW is conv2d's weight gradient with eps
        # as the convolution's input and x as its output gradient
        o = self.options
        w = theta["W"]
        return {
            "W": conv2d_weight(eps, w.shape, f_pres[0], stride=o["stride"], padding=o["padding"])
        }


OPERATORS = (Conv2d, ConvTranspose2d)
