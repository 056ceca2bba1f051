"""Optimisers applied to the local (Hebbian) weight gradients.

They follow torch.optim's definitions exactly (tests check this against torch), applied to
``G = dF/dtheta`` of the batch-mean energy, so a step descends the energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPT_NONE, OPT_SGD, OPT_ADAM = 0, 1, 2


@dataclass(frozen=True)
class SGD:
    """SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    kind: int = OPT_SGD

    def hyper(self) -> np.ndarray:
        _check(self.lr, "lr")
        return np.array(
            [self.lr, self.momentum, self.weight_decay, float(self.nesterov), self.dampening]
        )


@dataclass(frozen=True)
class Adam:
    """Adam as torch.optim.Adam (L2 weight decay), or AdamW with ``decoupled=True``."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    kind: int = OPT_ADAM

    def hyper(self) -> np.ndarray:
        _check(self.lr, "lr")
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


Optimizer = SGD | Adam


def _check(v: float, name: str) -> None:
    if not (v >= 0 and np.isfinite(v)):
        raise ValueError(f"optimizer {name} must be a finite number >= 0; got {v!r}")
