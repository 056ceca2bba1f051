"""Reference implementations in torch that neuropc's simulator is checked against.

:mod:`neuropc.reference.backprop` is the backprop twin of any :class:`~neuropc.model.network.Network`:
the same predictions computed feed-forward, trained by automatic differentiation.
:mod:`neuropc.reference.natural_gradient` is its K-FAC optimiser (the update of
``npc.NaturalGradient``) and the exact Fisher natural gradient of tiny networks.
:mod:`neuropc.reference.vae` is the like-for-like VAE of a network with an encoder (issue 12).
"""

from __future__ import annotations

from .backprop import BackpropModel, feedforward, gradients, loss, torch_optimizer
from .natural_gradient import KFAC, exact_natural_gradient
from .vae import VAE

__all__ = [
    "KFAC",
    "VAE",
    "BackpropModel",
    "exact_natural_gradient",
    "feedforward",
    "gradients",
    "loss",
    "torch_optimizer",
]
