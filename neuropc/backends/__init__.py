"""Backends that run a lowered network: ``"numba"`` (CPU kernels), ``"torch"`` (CPU/CUDA)."""

from __future__ import annotations

import numpy as np

from ..dynamics.plan import Plan
from .base import Backend, RunOutput

BACKENDS = ("numba", "torch")

# What each backend runs, declared here (without importing the backend): a network with a kind
# that a backend lacks is refused at Simulator(...), naming the population and the backends that
# have it. Distribution codes are those of neuropc.model.distributions.
_TORCH_OPERATORS = (
    "dense", "identity", "embedding", "attention_scores", "attention_values", "layernorm",
    "conv2d", "conv_transpose2d", "avg_pool2d", "max_pool2d",
)  # fmt: skip
SUPPORTS: dict[str, dict[str, frozenset]] = {
    "numba": {
        "distribution": frozenset({"gaussian", "bernoulli", "categorical"}),
        "precision": frozenset({"fixed", "scalar", "diag"}),
        "operator": frozenset({"dense"}),
    },
    "torch": {
        "distribution": frozenset({"gaussian", "bernoulli", "categorical", "normal"}),
        "precision": frozenset({"fixed", "scalar", "diag", "full"}),
        "operator": frozenset(_TORCH_OPERATORS),
    },
}
# backends whose kernels address populations as flat vectors only (a shaped population's
# operators map whole axes: tokens, channels)
FLAT_ONLY = frozenset({"numba"})
_PREC_KINDS = ("fixed", "scalar", "diag", "full")  # plan.prec_kind codes


def check_supported(name: str, plan: Plan) -> None:
    """Raise ``ValueError`` when backend ``name`` cannot run a population or connection of
    ``plan``."""
    from ..model.distributions import by_code

    for conn, kind in zip(plan.conn_names, plan.conn_kinds):
        if kind not in SUPPORTS[name]["operator"]:
            others = [b for b in BACKENDS if kind in SUPPORTS[b]["operator"]]
            raise ValueError(
                f"connection {conn!r} is of kind {kind!r}, which the {name} backend does not "
                f"run; backends that do: {', '.join(others) or '(none)'}"
            )

    for i, pop in enumerate(plan.names):
        if name in FLAT_ONLY and len(plan.shapes[i]) > 1:
            raise ValueError(
                f"population {pop!r} has shape {plan.shapes[i]}, which the {name} backend does "
                f"not run (flat populations only); backends that do: "
                f"{', '.join(b for b in BACKENDS if b not in FLAT_ONLY)}"
            )
        for what, kind in (
            ("distribution", by_code(int(plan.dist[i])).name),
            ("precision", _PREC_KINDS[int(plan.prec_kind[i])]),
        ):
            if kind not in SUPPORTS[name][what]:
                others = [b for b in BACKENDS if kind in SUPPORTS[b][what]]
                raise ValueError(
                    f"population {pop!r} has a {kind} {what}, which the {name} backend does "
                    f"not run; backends that do: {', '.join(others) or '(none)'}"
                )


def create(
    name: str,
    plan: Plan,
    dtype: np.dtype,
    device: str | None = None,
    compile: bool | str = False,
) -> Backend:
    """Instantiate backend ``name`` for ``plan``; ``compile`` (torch only): run the inference
    steps through ``torch.compile`` (True, or a torch.compile mode such as ``"reduce-overhead"``)."""
    if name in SUPPORTS:
        check_supported(name, plan)
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


__all__ = ["BACKENDS", "SUPPORTS", "Backend", "RunOutput", "check_supported", "create"]
