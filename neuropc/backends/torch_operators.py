"""The torch backend's connections and activations over shaped populations: one object per plan
that turns a connection's operator (:mod:`neuropc.model.operators`) into the three things the
inference policy needs, its contribution to a prediction, the back-projection of the post's
errors to each presynaptic population, and the weight gradient. Values stay flat ``(B, n)``
tensors (the plan's layout); an operator sees ``(B, *shape)`` views. A dense connection between
flat populations is one gemm (``addmm``), as before."""

from __future__ import annotations

import torch

from ..dynamics.plan import Plan


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
        return mu + self._forward(c, fx, W, mu.shape[0])

    def sub_(self, d, c: int, fx: list, W: list):
        """``d - op_c(f(x_pre), ...; W_c)``, in place in ``d`` (a fresh tensor of the caller's).
        Eager, a dense connection is one gemm that accumulates into ``d`` (``addmm_`` with alpha
        -1): 24 against 33 us for a product and a subtraction (128 x 128 x 128), the same bits,
        1.6% of an eager batch of the standard task. A compiled graph keeps the product and
        subtraction, which inductor fuses into its elementwise kernel (with addmm_ a compiled
        batch ran 3% slower)."""
        if self.flat[c]:
            f = fx[self.pres[c][0]]
            if torch.compiler.is_compiling():
                return d.sub_(torch.mm(f, W[c].T))
            return d.addmm_(f, W[c].T, alpha=-1.0)
        return d.sub_(self._forward(c, fx, W, d.shape[0]))

    def _forward(self, c: int, fx: list, W: list, b: int):
        """A non-dense connection's ``op_c(f(x_pre), ...; W_c)``, flat ``(b, n_post)``."""
        return self.ops[c].forward(self._inputs(c, fx), W[c]).reshape(b, -1)

    def back(self, acc, c: int, i: int, eps, fx: list, W: list, done: dict):
        """``acc + eps_post (d op_c / d f(x_pre_i))`` (``acc`` may be None), flat. ``done``
        holds the vjps of the connections already back-projected from this state, so an
        operator of several free inputs (attention's q and k) runs its vjp once per step."""
        if self.flat[c]:
            return eps @ W[c] if acc is None else torch.addmm(acc, eps, W[c])
        if c not in done:
            e = eps.reshape(eps.shape[0], *self.shapes[self.post[c]])
            done[c] = self.ops[c].vjp_inputs(e, self._inputs(c, fx), W[c])
        g = done[c][i].reshape(eps.shape[0], -1)
        return g if acc is None else acc + g

    def grads(self, c: int, eps, fx: list, W: list) -> dict:
        """``{parameter: d (eps . op_c) / d theta}`` of a shaped or non-dense connection."""
        e = eps.reshape(eps.shape[0], *self.shapes[self.post[c]])
        return self.ops[c].vjp_params(e, self._inputs(c, fx), W[c])
