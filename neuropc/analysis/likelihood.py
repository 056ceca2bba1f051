"""Log-likelihood bounds of a network's generative model (issue 12): the log joint and the
importance weights that :func:`neuropc.analysis.generative.elbo` / ``iwae`` turn into bounds.

The energy F (:mod:`neuropc.model.energy`) leaves out constants, so the log joint is::

    log p(x, z) = -F(x, z) - C,   C = sum_{Gaussian p} (n_p/2 log 2 pi - 1/2 log det Pi_p)

(for a Gaussian with a :class:`~neuropc.model.distributions.Precision` parameter F already holds
``-1/2 log det Pi``, so only ``n_p/2 log 2 pi`` is added). Bernoulli and Categorical populations
with the ``"F"`` energy contribute their exact negative log-probability for binary / one-hot data,
so C has no term for them. With a Gaussian proposal ``q(z|x) = N(mu, diag s^2)`` over the latent
populations, ``log w_k = log p(x, z_k) - log q(z_k|x)``, ``z_k = mu + s xi_k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..model.distributions import Gaussian, Precision
from ..model.energy import total_energy
from ..model.network import Network

_LOG2PI = math.log(2.0 * math.pi)


def log_constant(net: Network, params: Mapping[str, np.ndarray] | None = None) -> float:
    """``C`` of the module docstring: what ``-log p`` adds to the energy F. ``params`` may hold
    ``"pop:precision"`` values (else the network's fixed precisions count)."""
    c = 0.0
    for name, pop in net.populations.items():
        if not net.has_error(name):
            continue
        dist = pop.distribution
        if isinstance(dist, Gaussian):
            c += 0.5 * pop.size * _LOG2PI
            if not isinstance(getattr(dist, "precision", None), Precision):
                pi = np.broadcast_to(np.asarray(pop.precision, np.float64), (pop.size,))
                c -= 0.5 * float(np.sum(np.log(pi)))
        elif dist.energy != "F":
            raise ValueError(
                f"population {name!r}: log p needs the 'F' energy of its {type(dist).__name__} "
                f"distribution; got energy={dist.energy!r}"
            )
    return c


def log_weights(
    net: Network,
    params: Mapping[str, np.ndarray],
    data: Mapping[str, np.ndarray],
    latents: Sequence[str],
    mu: np.ndarray,
    logvar: np.ndarray,
    k: int,
    seed: int = 0,
) -> np.ndarray:
    """``(N, k)`` log importance weights of the data (``data``: every clamped population) with
    the proposal ``N(mu, diag exp(logvar))`` over the concatenated ``latents`` (which must be
    every other population), computed in float64."""
    import torch

    mu = torch.as_tensor(np.asarray(mu, np.float64))
    s = torch.exp(0.5 * torch.as_tensor(np.asarray(logvar, np.float64)))
    n, d = mu.shape
    sizes = [net[t].size for t in latents]
    if sum(sizes) != d:
        raise ValueError(f"log_weights: mu has {d} columns; the latents have {sum(sizes)} units")
    missing = [p for p in net.populations if p not in data and p not in latents]
    if missing:
        raise ValueError(f"log_weights: population {missing[0]!r} is neither data nor a latent")
    g = torch.Generator()
    g.manual_seed(int(seed))
    xi = torch.randn((k, n, d), generator=g, dtype=torch.float64)
    z = (mu + s * xi).reshape(k * n, d)
    vals = {p: torch.as_tensor(np.asarray(a, np.float64)).repeat(k, 1) for p, a in data.items()}
    vals.update(zip(latents, torch.split(z, sizes, dim=1)))
    th = {p: torch.as_tensor(np.asarray(a, np.float64)) for p, a in params.items()
          if not p.startswith("encoder:")}  # fmt: skip
    with torch.no_grad():
        log_p = -total_energy(net, th, vals, list(data)) - log_constant(net, params)
        log_q = (-0.5 * (xi * xi) - torch.log(s) - 0.5 * _LOG2PI).sum(-1).reshape(k * n)
        return (log_p - log_q).reshape(k, n).T.numpy().copy()


def encoder_log_weights(
    net: Network,
    params: Mapping[str, np.ndarray],
    encoder,
    data: Mapping[str, np.ndarray],
    k: int,
    seed: int = 0,
) -> np.ndarray:
    """:func:`log_weights` with an amortised encoder's ``q(z|x)`` as the proposal (its targets
    the latents; ``encoder``: a :class:`~neuropc.dynamics.amortised.AmortisedEncoder`, e.g.
    ``sim.encoder`` or ``VAE.encoder``)."""
    import torch

    with torch.no_grad():
        mu, lv = encoder.encode(encoder.inputs(data))
    return log_weights(net, params, data, encoder.spec.targets, mu.double().numpy(),
                       lv.double().numpy(), k, seed)  # fmt: skip
