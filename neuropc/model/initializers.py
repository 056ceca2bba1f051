"""Initial parameters of a network: weights by each connection's initialiser, biases by
``bias_init``."""

from __future__ import annotations

import numpy as np

from ..dynamics.plan import Plan
from . import operators as _ops
from .network import Network


def init_parameters(net: Network, plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Initial flat parameters (float64, then cast by the backend, so float32 and float64
    simulators with one seed start from the same weights).

    Weights by each connection's operator (:mod:`neuropc.model.operators`, e.g.
    :class:`~neuropc.model.operators.Dense`), in the plan's connection order from one generator;
    biases ``bias_init``.
    """
    flat = np.zeros(plan.n_params)
    for cname in plan.conn_names:
        conn = net.connection(cname)
        sl, (n_post, n_pre) = plan.weight_slice(cname)
        theta = _ops.get(conn.kind).init(rng, n_pre, n_post, conn.init, conn.gain)
        flat[sl] = theta["W"].ravel()
    for name in plan.names:
        sl = plan.bias_slice(name)
        if sl is not None:
            flat[sl] = np.broadcast_to(
                np.asarray(net[name].bias_init, np.float64), (sl.stop - sl.start,)
            )
    return flat
