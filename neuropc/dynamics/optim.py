"""Optimisers applied to the local (Hebbian) weight gradients.

They follow torch.optim's definitions exactly (tests check this against torch), applied to
``G = dF/dtheta`` of the batch-mean energy, so a step descends the energy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .. import validation as _v
from .natural_gradient import NaturalGradient

OPT_NONE, OPT_SGD, OPT_ADAM = 0, 1, 2


@dataclass(frozen=True)
class SGD:
    """SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD.

    Settings are checked when the optimiser is built: ``lr >= 0``, ``momentum >= 0``,
    ``dampening`` in [0, 1], a finite ``weight_decay``, and Nesterov needs momentum > 0 and no
    dampening (as torch)."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    kind: int = OPT_SGD

    def __post_init__(self) -> None:
        _number(self, "lr", low=0.0)
        _number(self, "momentum", low=0.0)
        _number(self, "weight_decay")
        _number(self, "dampening", low=0.0, high=1.0)
        object.__setattr__(self, "nesterov", _v.flag(self.nesterov, "SGD.nesterov"))
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "SGD.nesterov needs momentum > 0 and dampening = 0; got "
                f"momentum={self.momentum!r}, dampening={self.dampening!r}"
            )
        _kind(self, OPT_SGD)

    def hyper(self) -> np.ndarray:
        return np.array(
            [self.lr, self.momentum, self.weight_decay, float(self.nesterov), self.dampening]
        )


@dataclass(frozen=True)
class Adam:
    """Adam as torch.optim.Adam (L2 weight decay), or AdamW with ``decoupled=True``.

    Settings are checked when the optimiser is built: ``lr >= 0``, ``betas`` two numbers in
    [0, 1), ``eps > 0`` (with ``eps = 0`` a parameter whose gradient is 0 gets 0/0 = NaN) and a
    finite ``weight_decay``."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    kind: int = OPT_ADAM

    def __post_init__(self) -> None:
        _number(self, "lr", low=0.0)
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"Adam.betas must be a pair of numbers; got {betas!r}")
        b = tuple(
            _v.number(x, f"Adam.betas[{i}]", low=0.0, high=1.0, high_open=True)
            for i, x in enumerate(betas)
        )
        object.__setattr__(self, "betas", b)
        _number(self, "eps", low=0.0, low_open=True)
        _number(self, "weight_decay")
        object.__setattr__(self, "decoupled", _v.flag(self.decoupled, "Adam.decoupled"))
        _kind(self, OPT_ADAM)

    def hyper(self) -> np.ndarray:
        return np.array(
            [
                self.lr,
                self.betas[0],
                self.betas[1],
                self.eps,
                self.weight_decay,
                float(self.decoupled),
            ]
        )


def AdamW(lr: float = 1e-3, weight_decay: float = 1e-2, **kw: object) -> Adam:
    """AdamW: Adam with decoupled weight decay."""
    return Adam(lr=lr, weight_decay=weight_decay, decoupled=True, **kw)


Optimizer = SGD | Adam | NaturalGradient


def _number(opt: object, field: str, **bounds: object) -> None:
    """Check ``opt.field`` (a finite number within ``bounds``) and store it as a float."""
    v = _v.number(getattr(opt, field), f"{type(opt).__name__}.{field}", **bounds)
    object.__setattr__(opt, field, v)


def _kind(opt: object, kind: int) -> None:
    if opt.kind != kind:  # an internal tag: the compiled kernels dispatch on it
        raise ValueError(f"{type(opt).__name__}.kind is fixed to {kind}; got {opt.kind!r}")


def check_optimizer(opt: object, name: str = "optimizer") -> None:
    """Raise ``TypeError`` unless ``opt`` is one of neuropc's optimisers."""
    _v.instance(
        opt, (SGD, Adam, NaturalGradient), name,
        "an optimiser: npc.SGD(...), npc.Adam(...), npc.AdamW(...) or npc.NaturalGradient(...)",
    )  # fmt: skip


def torch_optimizer(optimizer: Optimizer, params: Iterable) -> object:
    """The torch optimiser that :mod:`neuropc.dynamics.optim`'s ``optimizer`` mirrors, same
    hyper-parameters: ``Adam`` -> ``torch.optim.Adam`` (``AdamW`` when ``decoupled``), ``SGD`` ->
    ``torch.optim.SGD``."""
    import torch

    params = list(params)
    if isinstance(optimizer, Adam):
        cls = torch.optim.AdamW if optimizer.decoupled else torch.optim.Adam
        return cls(
            params,
            lr=optimizer.lr,
            betas=tuple(optimizer.betas),
            eps=optimizer.eps,
            weight_decay=optimizer.weight_decay,
        )
    if isinstance(optimizer, SGD):
        return torch.optim.SGD(
            params,
            lr=optimizer.lr,
            momentum=optimizer.momentum,
            dampening=optimizer.dampening,
            weight_decay=optimizer.weight_decay,
            nesterov=optimizer.nesterov,
        )
    raise ValueError(f"no torch optimiser mirrors {type(optimizer).__name__}; valid: SGD, Adam")
