"""Backends that run a lowered network: ``"numba"`` (CPU kernels), ``"torch"`` (CPU/CUDA)."""

from __future__ import annotations

import numpy as np

from ..dynamics.plan import Plan
from .base import Backend, RunOutput

BACKENDS = ("numba", "torch")


def create(
    name: str,
    plan: Plan,
    dtype: np.dtype,
    device: str | None = None,
    compile: bool | str = False,
) -> Backend:
    """Instantiate backend ``name`` for ``plan``; ``compile`` (torch only): run the inference
    steps through ``torch.compile`` (True, or a torch.compile mode such as ``"reduce-overhead"``)."""
    if name == "numba":
        if compile is not False:
            raise ValueError(
                "compile= applies to the torch backend; the numba kernels are always compiled"
            )
        from .compile_notice import announce
        from .numba_backend import NumbaBackend

        backend = NumbaBackend(plan, dtype, device)
        announce(backend.dtype)  # "compiling kernels ..." when the first run will compile them
        return backend
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(plan, dtype, device, compile)
    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "RunOutput", "create"]
