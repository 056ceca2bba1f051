"""Initial parameters of a network: weights by each connection's initialiser, biases by
``bias_init``."""

from __future__ import annotations

import numpy as np

from ..dynamics.plan import Plan
from .network import Network


def init_parameters(net: Network, plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Initial flat parameters (float64, then cast by the backend, so float32 and float64
    simulators with one seed start from the same weights).

    Parameters by each connection's operator (:mod:`neuropc.model.operators`, e.g.
    :class:`~neuropc.model.operators.dense.Dense`), in the plan's connection order from one
    generator; biases ``bias_init``.
    """
    flat = np.zeros(plan.n_params)
    for c, cname in enumerate(plan.conn_names):
        conn = net.connection(cname)
        pre_shapes = [plan.shapes[q] for q in plan.cpres[c]]
        theta = plan.cops[c].init(rng, pre_shapes, plan.shapes[plan.cpost[c]], conn.init, conn.gain)
        for pname, (_, o, shape) in plan.cparams[c].items():
            flat[o : o + int(np.prod(shape))] = np.asarray(theta[pname], np.float64).ravel()
    for name in plan.names:
        sl = plan.bias_slice(name)
        if sl is not None:
            flat[sl] = np.broadcast_to(
                np.asarray(net[name].bias_init, np.float64), (sl.stop - sl.start,)
            )
    return flat
