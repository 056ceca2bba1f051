"""Ancestral sampling of a network's generative model (``Simulator.sample``).

Populations are visited in topological order. A population that receives a prediction (it has
an error population) draws its value from its own distribution around that prediction, given
the values drawn for its presynaptic populations::

    mu_p = sum_{q -> p} W f(x_q) + b_p
    Gaussian     x_p = mu_p + Pi_p^-1/2 xi      (xi ~ N(0, I); Pi_p its current precision:
                                                 fixed, or the learned one; full: x = mu + L^-T xi
                                                 with Pi = L L^T)
    Bernoulli    x_p ~ Bernoulli(sigmoid(mu_p))     (0 / 1 samples)
    Categorical  x_p = one-hot of a draw from softmax(mu_p)

A root with a bias has the prior ``N(b, Pi^-1)`` (it has an error population). A root without a
prior (no bias, so no error population: typically a clamped input) must be ``given``. With
``mean=True`` every population takes its prediction's mean instead of a draw (``mu`` for a
Gaussian, the probabilities for the others); ``mean=["x"]`` only the populations named (e.g. the
Bernoulli means of the images, with the latents drawn). The computation is numpy from
``sim.parameters()``
and ``sim.precision``: the same on every backend, and deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np

from . import validation as _v

if TYPE_CHECKING:
    from .dynamics.plan import Plan
    from .model.network import Network
    from .simulator import Simulator


def sample(
    sim: Simulator,
    n: int,
    *,
    seed: int | None = None,
    given: Mapping[str, np.ndarray] | None = None,
    mean: bool | Collection[str] = False,
) -> dict[str, np.ndarray]:
    """``n`` ancestral samples of every population (see the module docstring), as float64
    arrays ``(n, size)``. ``given`` fixes populations (arrays ``(n, size)``, or ``(size,)`` for
    all samples); ``seed`` seeds the draws (otherwise the simulator's noise stream)."""
    n = _v.integer(n, "sample n", low=1)
    rng = np.random.default_rng(
        seed if seed is not None else int(sim.noise_rng.integers(0, 2**31 - 1))
    )
    return ancestral(sim.network, sim.plan, sim.parameters(), n, rng, given=given, mean=mean)


def ancestral(
    net: Network,
    pl: Plan,
    params: Mapping[str, np.ndarray],
    n: int,
    rng: np.random.Generator,
    *,
    given: Mapping[str, np.ndarray] | None = None,
    mean: bool | Collection[str] = False,
) -> dict[str, np.ndarray]:
    """:func:`sample` from explicit parameters (keys as ``Simulator.parameters()``; a
    ``"pop:precision"`` entry overrides the network's fixed precision), e.g. a reference model's."""
    given = dict(given or {})
    mean = [mean] if isinstance(mean, str) else mean
    means = set(pl.names) if mean is True else set() if mean is False else set(mean)
    for name in means | set(given):
        if name not in pl.names:
            raise ValueError(f"sample: unknown population {name!r}; populations: "
                             f"{', '.join(pl.names)}")  # fmt: skip
    for c, cname in enumerate(pl.conn_names):
        if not pl.flat_connection(c):
            raise ValueError(
                f"ancestral sampling draws flat dense networks; connection {cname!r} is of kind "
                f"{pl.conn_kinds[c]!r} between shaped populations"
            )
    values: dict[str, np.ndarray] = {}
    for i, name in enumerate(pl.names):
        size = int(pl.sizes[i])
        if name in given:
            values[name] = _given(given[name], name, n, size)
            continue
        if not pl.has_err[i]:
            raise ValueError(
                f"sample: population {name!r} has no prior (no bias and no incoming connection); "
                "pass its values with given={...}"
            )
        mu = np.zeros((n, size)) + params.get(f"{name}:bias", 0.0)
        for c, q, post in zip(pl.conn_names, pl.cpre, pl.cpost):
            if int(post) == i:
                pre = pl.names[int(q)]
                mu = mu + net[pre].activation.numpy(values[pre]) @ params[c].T
        pi = np.asarray(params.get(f"{name}:precision", net[name].precision), np.float64)
        pi = pi if pi.ndim == 2 else np.broadcast_to(pi, (size,))
        values[name] = _draw(net[name].distribution, mu, pi, rng, name in means)
    return values


def _given(a, name: str, n: int, size: int) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.shape == (size,):
        a = np.broadcast_to(a, (n, size))
    if a.shape != (n, size):
        raise ValueError(f"sample: given[{name!r}] must have shape ({n}, {size}) or ({size},); "
                         f"got {a.shape}")  # fmt: skip
    return np.array(a)


def _draw(dist, mu: np.ndarray, pi: np.ndarray, rng: np.random.Generator, mean: bool):
    kind = dist.name
    if kind == "gaussian":
        if mean:
            return mu
        xi = rng.standard_normal(mu.shape)
        if pi.ndim == 2:  # x = mu + L^-T xi, Pi = L L^T: Cov = L^-T L^-1 = Pi^-1
            return mu + np.linalg.solve(np.linalg.cholesky(pi).T, xi.T).T
        return mu + xi / np.sqrt(pi)
    if kind == "bernoulli":
        p = 1.0 / (1.0 + np.exp(-mu))
        return p if mean else (rng.random(mu.shape) < p).astype(np.float64)
    p = np.exp(mu - mu.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if mean:
        return p
    u = rng.random((mu.shape[0], 1))
    idx = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), mu.shape[1] - 1)
    return np.eye(mu.shape[1])[idx]
