"""Reference implementations in torch that neuropc's simulator is checked against.

:mod:`neuropc.reference.backprop` is the backprop twin of any :class:`~neuropc.model.network.Network`:
the same predictions computed feed-forward, trained by automatic differentiation.
"""

from __future__ import annotations

from .backprop import BackpropModel, feedforward, gradients, loss, torch_optimizer

__all__ = ["BackpropModel", "feedforward", "gradients", "loss", "torch_optimizer"]
