"""Backends that run a lowered network: ``"numba"`` (CPU kernels), ``"torch"`` (CPU/CUDA)."""

from __future__ import annotations

import numpy as np

from ..plan import Plan
from .base import Backend, RunOutput

BACKENDS = ("numba", "torch")


def create(name: str, plan: Plan, dtype: np.dtype, device: str | None = None) -> Backend:
    """Instantiate backend ``name`` for ``plan``."""
    if name == "numba":
        from .numba_backend import NumbaBackend

        return NumbaBackend(plan, dtype, device)
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(plan, dtype, device)
    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "RunOutput", "create"]
