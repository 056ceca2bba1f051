"""Initial parameters of a network: weights by each connection's initialiser, biases by
``bias_init``."""

from __future__ import annotations

import numpy as np

from ..dynamics.plan import Plan
from .network import Network


def init_parameters(net: Network, plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Initial flat parameters (float64, then cast by the backend, so float32 and float64
    simulators with one seed start from the same weights).

    ``xavier_uniform``: U(-a, a), a = gain sqrt(6 / (n_pre + n_post)); ``xavier_normal``:
    N(0, gain^2 2 / (n_pre + n_post)); ``kaiming_uniform``: U(-a, a), a = gain sqrt(3 / n_pre);
    ``normal``: N(0, gain^2 / n_pre); ``zeros``; ``ones`` (all equal to gain). Biases: bias_init.
    """
    flat = np.zeros(plan.n_params)
    for cname in plan.conn_names:
        conn = net.connection(cname)
        sl, (n_post, n_pre) = plan.weight_slice(cname)
        g = conn.gain
        if conn.init == "xavier_uniform":
            a = g * np.sqrt(6.0 / (n_pre + n_post))
            w = rng.uniform(-a, a, (n_post, n_pre))
        elif conn.init == "xavier_normal":
            w = rng.normal(0.0, g * np.sqrt(2.0 / (n_pre + n_post)), (n_post, n_pre))
        elif conn.init == "kaiming_uniform":
            a = g * np.sqrt(3.0 / n_pre)
            w = rng.uniform(-a, a, (n_post, n_pre))
        elif conn.init == "normal":
            w = rng.normal(0.0, g / np.sqrt(n_pre), (n_post, n_pre))
        elif conn.init == "zeros":
            w = np.zeros((n_post, n_pre))
        else:  # ones
            w = np.full((n_post, n_pre), g)
        flat[sl] = w.ravel()
    for name in plan.names:
        sl = plan.bias_slice(name)
        if sl is not None:
            flat[sl] = np.broadcast_to(
                np.asarray(net[name].bias_init, np.float64), (sl.stop - sl.start,)
            )
    return flat
