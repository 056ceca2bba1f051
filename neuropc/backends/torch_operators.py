"""The torch backend's connections and activations over shaped populations: one object per plan
that turns a connection's operator (:mod:`neuropc.model.operators`) into the three things the
inference policy needs, its contribution to a prediction, the back-projection of the post's
errors to each presynaptic population, and the weight gradient. Values stay flat ``(B, n)``
tensors (the plan's layout); an operator sees ``(B, *shape)`` views. A dense connection between
flat populations is one gemm (``addmm``), as before."""

from __future__ import annotations

import torch

from ..dynamics.plan import Plan
from ..model.activations import Activation
from ..model.distributions import from_rows, to_rows


class Connections:
    """Per connection of ``plan``: ``add`` (prediction), ``back`` (back-projection) and ``grads``
    (``d (eps . forward) / d theta`` summed over the batch). ``W[c]`` is a flat dense
    connection's weight matrix, or a dict of the operator's parameter tensors."""

    def __init__(self, plan: Plan) -> None:
        self.flat = [plan.flat_connection(c) for c in range(len(plan.conn_names))]
        self.ops = plan.cops
        self.pres = [tuple(int(q) for q in qs) for qs in plan.cpres]
        self.post = [int(p) for p in plan.cpost]
        self.shapes = plan.shapes

    def _inputs(self, c: int, fx: list) -> list:
        return [fx[q].reshape(fx[q].shape[0], *self.shapes[q]) for q in self.pres[c]]

    def add(self, mu, c: int, fx: list, W: list):
        """``mu + op_c(f(x_pre), ...; W_c)`` (flat ``(B, n_post)``)."""
        if self.flat[c]:
            return torch.addmm(mu, fx[self.pres[c][0]], W[c].T)
        out = self.ops[c].forward(self._inputs(c, fx), W[c])
        return mu + out.reshape(mu.shape[0], -1)

    def back(self, acc, c: int, i: int, eps, fx: list, W: list):
        """``acc + eps_post (d op_c / d f(x_pre_i))`` (``acc`` may be None), flat."""
        if self.flat[c]:
            return eps @ W[c] if acc is None else torch.addmm(acc, eps, W[c])
        e = eps.reshape(eps.shape[0], *self.shapes[self.post[c]])
        g = self.ops[c].vjp_inputs(e, self._inputs(c, fx), W[c])[i].reshape(eps.shape[0], -1)
        return g if acc is None else acc + g

    def grads(self, c: int, eps, fx: list, W: list) -> dict:
        """``{parameter: d (eps . op_c) / d theta}`` of a shaped or non-dense connection."""
        e = eps.reshape(eps.shape[0], *self.shapes[self.post[c]])
        return self.ops[c].vjp_params(e, self._inputs(c, fx), W[c])


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


def shaped_activation(act: Activation, shape: tuple[int, ...], axis: int):
    """``act`` itself when elementwise or flat, else its :class:`RowActivation`."""
    return RowActivation(act, shape, axis) if len(shape) > 1 and act.name == "softmax" else act
