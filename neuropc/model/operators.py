"""Connection operators: how a presynaptic population's output enters a prediction.

A connection ``pre -> post`` of kind ``k`` adds ``OPERATORS[k].forward(f(x_pre), theta)`` to
``mu_post``. An operator defines, once:

* ``param_shapes(n_pre, n_post)``: its parameters and their shapes;
* ``init(rng, n_pre, n_post, init, gain)``: their initial values;
* ``forward(f_pre, theta)``: the contribution to ``mu_post`` (torch; the oracle differentiates
  it), ``(B, n_pre) -> (B, n_post)``;
* ``vjp_input(eps, theta)``: ``eps (d forward / d f_pre)``, what a post's error sends back to the
  presynaptic population (``(B, n_post) -> (B, n_pre)``);
* ``vjp_params(eps, f_pre, theta)``: ``d (eps . forward) / d theta`` summed over the batch, the
  local (Hebbian) term of the weight gradient ``dF/dtheta = -vjp_params(eps, f_pre) / B``.

The vjps are what a backend implements (numba and torch hard-code the dense ones as gemms and
declare it in ``neuropc.backends.SUPPORTS``); their torch forms here are checked against autograd
of ``forward``. New kinds (embedding, attention, convolution) plug in here, and a backend that
does not run a kind refuses it at ``Simulator(...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

WEIGHT_INITS = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "normal", "zeros", "ones")


class Dense:
    """``mu_post += f(x_pre) W^T`` with ``W`` of shape ``(n_post, n_pre)`` (the parameter named
    like the connection, ``"pre->post"``).

    Initialisers (``gain`` g): ``xavier_uniform`` U(-a, a), a = g sqrt(6 / (n_pre + n_post));
    ``xavier_normal`` N(0, g^2 2 / (n_pre + n_post)); ``kaiming_uniform`` U(-a, a),
    a = g sqrt(3 / n_pre); ``normal`` N(0, g^2 / n_pre); ``zeros``; ``ones`` (all equal to g)."""

    name = "dense"
    # the gradient is an outer product eps^T f_pre, so the Fisher block of W factorises as
    # E[f f^T] (x) E[eps eps^T] (natural gradient, neuropc.dynamics.natural_gradient)
    kronecker = True

    @staticmethod
    def param_shapes(n_pre: int, n_post: int) -> dict[str, tuple[int, ...]]:
        return {"W": (n_post, n_pre)}

    @staticmethod
    def init(
        rng: np.random.Generator, n_pre: int, n_post: int, init: str, gain: float
    ) -> dict[str, np.ndarray]:
        shape = (n_post, n_pre)
        if init == "xavier_uniform":
            a = gain * np.sqrt(6.0 / (n_pre + n_post))
            w = rng.uniform(-a, a, shape)
        elif init == "xavier_normal":
            w = rng.normal(0.0, gain * np.sqrt(2.0 / (n_pre + n_post)), shape)
        elif init == "kaiming_uniform":
            a = gain * np.sqrt(3.0 / n_pre)
            w = rng.uniform(-a, a, shape)
        elif init == "normal":
            w = rng.normal(0.0, gain / np.sqrt(n_pre), shape)
        elif init == "zeros":
            w = np.zeros(shape)
        elif init == "ones":
            w = np.full(shape, gain)
        else:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(WEIGHT_INITS)}")
        return {"W": w}

    @staticmethod
    def forward(f_pre: torch.Tensor, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return f_pre @ theta["W"].T

    @staticmethod
    def vjp_input(eps: torch.Tensor, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return eps @ theta["W"]

    @staticmethod
    def vjp_params(
        eps: torch.Tensor, f_pre: torch.Tensor, theta: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {"W": eps.T @ f_pre}


OPERATORS: dict[str, type] = {"dense": Dense}


def get(kind: str) -> type:
    """The operator of ``kind``; ``ValueError`` listing the registered ones otherwise."""
    op = OPERATORS.get(kind) if isinstance(kind, str) else None
    if op is None:
        raise ValueError(f"unknown connection kind {kind!r}; valid: {', '.join(OPERATORS)}")
    return op
