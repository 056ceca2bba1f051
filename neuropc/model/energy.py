"""The energy of a predictive-coding network, written once in torch: the specification (oracle)
that every backend is tested against.

Conventions (see :mod:`neuropc.model.network`), for one sample:

* prediction of population ``p``::

      mu_p = sum_{c: q -> p} W_c f_q(x_q) + b_p

  with ``W_c`` of shape ``(n_p, n_q)``, ``f_q`` the activation of the *presynaptic* population
  ``q`` and the bias term present iff ``p.bias`` (on a root, ``mu_p = b_p`` is a prior mean);
* precision-weighted prediction error ``eps_p = Pi_p (x_p - mu_p)`` (positive when the value is
  above its prediction), ``Pi_p`` a scalar or one positive number per unit (``pop.precision``);
* energy::

      F = sum_{p with an error population} F_p,    F_p = 1/2 sum_i Pi_{p,i} (x_{p,i} - mu_{p,i})^2

  over the populations that receive a prediction (``net.has_error(p)``: an incoming connection or
  a bias). It is the negative log-density of the Gaussian model up to a constant (the precisions
  are fixed, so the log-normaliser is left out). Inference *descends* F in the values
  (``dx = -rate dF/dx``) and learning descends the batch mean of F in the parameters, so with
  these signs ``dF/dx_p = eps_p - f_p'(x_p) * sum_{c: p -> r} W_c^T eps_r`` and
  ``dF/dW_c = -eps_r f_q(x_q)^T``, ``dF/db_p = -eps_p``.

Nothing here knows about backends: the functions read the :class:`~neuropc.model.network.Network`
description directly and are differentiable with torch autograd.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np

from . import operators
from .activations import shaped_activation
from .distributions import energy_torch, to_rows
from .network import Network

if TYPE_CHECKING:  # torch is imported lazily so that ``import neuropc`` stays fast
    import torch

__all__ = [
    "activation", "connection_params", "energy", "errors", "population_energy", "prediction",
    "predictions", "total_energy",
]  # fmt: skip


def _value(net: Network, values: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in values:
        raise KeyError(
            f"values: missing population {name!r}; expected: {', '.join(net.populations)}"
        )
    x = values[name]
    size = net.populations[name].size
    if x.ndim != 2 or x.shape[1] != size:
        raise ValueError(f"values[{name!r}]: expected shape (batch, {size}); got {tuple(x.shape)}")
    return x


def _param(params: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if key not in params:
        raise KeyError(f"params: missing {key!r}")
    t = params[key]
    if tuple(t.shape) != shape:
        raise ValueError(f"params[{key!r}]: expected shape {shape}; got {tuple(t.shape)}")
    return t


def activation(net: Network, name: str, x: torch.Tensor) -> torch.Tensor:
    """``f(x)`` of population ``name``, ``(B, n)``: elementwise, or a softmax over the
    population's normalisation axis (each row of a shaped population's categories)."""
    pop = net.populations[name]
    return shaped_activation(pop.activation, pop.shape, pop.axis).torch(x)


def connection_params(net: Network, conn) -> list[tuple[str, str, tuple[int, ...]]]:
    """``(key, name, shape)`` of every parameter of connection ``conn``, in the operator's order
    (the first keyed by the connection's name, e.g. a dense ``W`` as ``"pre->post"``)."""
    shapes = conn.operator().param_shapes([net[q].shape for q in conn.pres], net[conn.post].shape)
    return [
        (operators.param_key(conn.name, k, j == 0), k, tuple(shape))
        for j, (k, shape) in enumerate(shapes.items())
    ]


def prediction(
    net: Network, params: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor], name: str
) -> torch.Tensor | None:
    """``mu = sum_{c into name} op_c(f(x_pre_1), ...; theta_c) + b``, flat ``(B, n)`` (the bias
    alone, ``(n,)``, for a root with a prior mean; None when the population receives nothing)."""
    pop = net.populations[name]
    mu = _param(params, f"{name}:bias", (pop.size,)) if pop.bias else None
    for c in net.incoming(name):
        theta = {k: _param(params, key, shape) for key, k, shape in connection_params(net, c)}
        xs = [_value(net, values, q) for q in c.pres]
        b = xs[0].shape[0]
        f_pres = [activation(net, q, x).reshape(b, *net[q].shape) for q, x in zip(c.pres, xs)]
        term = c.operator().forward(f_pres, theta).reshape(b, -1)
        mu = term if mu is None else mu + term
    return mu


def predictions(
    net: Network, params: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Predictions ``mu_p = sum_{c into p} op_c(f(x_pre_1), ...; theta_c) + b_p``, shape
    ``(B, n_p)`` (flat), of every population with an error population; a dense connection's
    operator is ``f(x_q) W_c^T`` (:mod:`neuropc.model.operators`; shaped populations enter them
    as ``(B, *shape)``).

    ``params``: every connection parameter (``"pre->post"`` -> a dense ``W`` of shape
    ``(n_post, n_pre)``, ``"pre->post:name"`` for an operator's further ones) and
    ``"pop:bias"`` -> ``b`` of shape ``(n_pop,)`` for every population with ``bias``;
    ``values``: every population's value, shape ``(B, n_p)``.
    """
    mu: dict[str, torch.Tensor] = {}
    for name in net.populations:
        if net.has_error(name):
            x = _value(net, values, name)
            mu[name] = x.new_zeros(x.shape) + prediction(net, params, values, name)
    return mu


def _precision(
    net: Network, name: str, like: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """``Pi`` of population ``name``: ``params["name:precision"]`` for a Precision parameter
    (a scalar broadcast to the units, a vector, or a full matrix; differentiable), else the
    network's fixed per-unit precision."""
    import torch

    key = f"{name}:precision"
    if params is not None and key in params:
        pi = torch.as_tensor(params[key], dtype=like.dtype, device=like.device)
        return pi.expand(like.shape[1]) if pi.ndim == 0 else pi
    pi = np.broadcast_to(np.asarray(net.populations[name].precision, np.float64), (like.shape[1],))
    return torch.as_tensor(np.array(pi), dtype=like.dtype, device=like.device)


def errors(
    net: Network,
    params: Mapping[str, torch.Tensor],
    values: Mapping[str, torch.Tensor],
    clamped: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Errors ``eps_p = -dF_p/dmu_p``, shape ``(B, n_p)``, of every population with an error
    population, by autograd of the energy (arguments as in :func:`energy`); for a Gaussian this
    is the precision-weighted prediction error ``Pi_p (x_p - mu_p)``."""
    import torch

    mu = predictions(net, params, values)
    out = {}
    for n, m in mu.items():
        m0 = m.detach().requires_grad_(True)
        pi = _precision(net, n, m0, params)
        f = population_energy(net, n, values[n].detach(), m0, n in clamped, pi)
        (g,) = torch.autograd.grad(f.sum(), m0)
        out[n] = -g
    return out


def energy(
    net: Network,
    params: Mapping[str, torch.Tensor],
    values: Mapping[str, torch.Tensor],
    clamped: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Per-sample energy of every population ``p`` with an error population, shape ``(B,)``: its
    distribution's energy (:mod:`neuropc.model.distributions`), e.g. for a Gaussian::

        F_p = 1/2 sum_i Pi_{p,i} (x_{p,i} - mu_{p,i})^2,   mu_p = sum_{q -> p} W f_q(x_q) + b_p

    ``params``: ``"pre->post"`` -> ``W`` ``(n_post, n_pre)`` and ``"pop:bias"`` -> ``(n_pop,)``;
    ``values``: every population's value ``(B, n_p)``. Differentiable in both. ``clamped`` names
    the populations whose values are data: under ``energy="KL"`` a clamped value holds
    probabilities and a free one the distribution's parameters (for Gaussians and ``energy="F"``
    it makes no difference).
    """
    mu = predictions(net, params, values)
    out: dict[str, torch.Tensor] = {}
    for n, m in mu.items():
        out[n] = population_energy(
            net, n, values[n], m, n in clamped, _precision(net, n, m, params)
        )
    return out


def population_energy(net: Network, name: str, x, mu, clamped: bool, pi) -> torch.Tensor:
    """Per-sample energy ``(B,)`` of population ``name``: its distribution's, a Categorical's
    summed over the distributions (rows) of a shaped population."""
    pop = net.populations[name]
    if len(pop.shape) == 1 or pop.distribution.name != "categorical":
        return energy_torch(pop.distribution, x, mu, clamped, pi)
    rows = (to_rows(t, pop.shape, pop.axis) for t in (x, mu))
    return energy_torch(pop.distribution, *rows, clamped, pi).reshape(x.shape[0], -1).sum(dim=1)


def total_energy(
    net: Network,
    params: Mapping[str, torch.Tensor],
    values: Mapping[str, torch.Tensor],
    clamped: Collection[str] = (),
) -> torch.Tensor:
    """Per-sample total energy ``F = sum_p F_p``, shape ``(B,)`` (see :func:`energy`); zeros when
    no population has an error population. Backends report the batch mean ``F.mean()`` and their
    weight gradients are ``d F.mean() / d theta``."""
    import torch

    parts = list(energy(net, params, values, clamped).values())
    if not parts:
        if not values:
            raise ValueError("values: empty; the batch size is unknown")
        x = next(iter(values.values()))
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return torch.stack(parts).sum(dim=0)
