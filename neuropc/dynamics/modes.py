"""Inference modes and their exact conditions.

``strict`` (default)
    Plain PC: predictions and Jacobians follow the current values at every step; the weight
    gradients are taken at the end of inference. Not equal to backprop in general; it approaches
    backprop as the output error shrinks (Whittington & Bogacz 2017), e.g. under output nudging
    ``beta -> 0``, where the relative error falls in proportion to ``beta``.
``fpa``
    Fixed-prediction assumption (Millidge et al. 2020; Rosenbaum 2022): forward initialisation,
    then every prediction ``mu`` and every ``f'`` stay at their feed-forward values. At the fixed
    point ``eps_l = f'(x_l) * sum W^T eps_post`` with the output error ``Pi (y - yhat)``: the
    errors are backprop's deltas and the weight gradients equal backprop's, for any DAG and any
    hidden precision. With ``rate * Pi_hidden = 1`` the fixed point is reached exactly after as
    many steps as the longest path to a target.
``zil``
    Zero-divergence inference learning (Song et al. 2020): forward initialisation (C1), rate 1
    (C3), unit precision on free populations, and the weights into a population at distance ``d``
    from the targets (and its bias) take their gradient at step ``d`` (C2). Exact backprop for
    graphs where every path from a population to the targets has the same length (levelled
    graphs; insert linear identity populations to level a graph with skip connections).
``ipc``
    Incremental PC (Salvatori et al. 2024): the weights take an optimiser step at every inference
    step, from the same state as the value step. Not equal to backprop.

``Inference(nudge=beta)``: a target clamped in training holds ``mu + beta (y - mu)`` at every
step, following its current prediction ``mu``, so its error is ``Pi beta (y - mu)``; the
gradients are scaled by ``1 / beta`` (PCX's nudging, ``h = u - beta (u - y)``; ``beta = 1`` is
plain clamping, negative ``beta`` nudges away from the label). This is the equilibrium of an
output soft-clamped to the label (equilibrium propagation), and strict PC's gradients approach
backprop's as ``beta -> 0`` with an error proportional to ``beta``. (Holding the target fixed at
its *initial* ``mu + beta (y - mu)`` instead would not: the hidden values' relaxation then moves
``mu`` by O(beta) and leaves an O(1) bias in ``eps / beta``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.distributions import by_code
from .inference import MODES, Inference
from .plan import Plan

CODES = {m: i for i, m in enumerate(MODES)}


@dataclass(frozen=True)
class ModeSetup:
    """What a backend needs to run a mode: its code, per-population depth (Z-IL), the nudging
    strength (0 when nothing is nudged) and which populations are nudged."""

    code: int
    depth: np.ndarray  # (P,) int64
    nudge: float
    nudged: np.ndarray  # (P,) bool


def depths(plan: Plan, clamped: np.ndarray) -> np.ndarray:
    """Distance (in connections) from each population to the clamped targets below it.

    Clamped populations and free populations that predict nothing have depth 0; any other
    population has ``1 + depth(post)``, which must be the same for all its posts (levelled graph).
    """
    n = plan.n_pops
    out_posts: list[list[int]] = [[] for _ in range(n)]
    for pres, p in zip(plan.cpres, plan.cpost):
        for q in pres:
            out_posts[int(q)].append(int(p))
    d = np.zeros(n, dtype=np.int64)
    for p in reversed(range(n)):
        if clamped[p] or not out_posts[p]:
            continue
        ds = {int(d[q]) + 1 for q in out_posts[p]}
        if len(ds) > 1:
            raise ValueError(
                f"mode 'zil' needs a levelled graph: population {plan.names[p]!r} reaches the "
                f"targets over paths of lengths {sorted(ds)}; insert linear identity populations "
                "so that every path from it has the same length"
            )
        d[p] = ds.pop()
    return d


def setup(plan: Plan, clamped: np.ndarray, cfg: Inference, *, learning: bool = False) -> ModeSetup:
    """Validate ``cfg`` against the plan and phase, and lower it for the backends. In Z-IL, a
    population deeper than ``cfg.steps`` gets no gradient (zero): an error when ``learning``."""
    code = CODES[cfg.mode]
    _check_distributions(plan, cfg)
    depth = np.zeros(plan.n_pops, dtype=np.int64)
    if cfg.mode == "zil":
        depth = depths(plan, clamped)
        for i, name in enumerate(plan.names):
            if plan.has_err[i] and not clamped[i]:
                if plan.prec_rule[i]:
                    raise ValueError(
                        f"mode 'zil' needs unit precision on free populations; population "
                        f"{name!r} learns its precision"
                    )
                sl = plan.error_slice(name)
                if not np.all(plan.precision[sl] == 1.0):
                    raise ValueError(
                        f"mode 'zil' needs unit precision on free populations; population "
                        f"{name!r} has precision {plan.precision[sl].tolist()}"
                    )
        need = int(depth.max(initial=0))
        if learning and cfg.steps < need:
            raise ValueError(
                f"mode 'zil' needs steps >= {need} (the longest distance to a target); got {cfg.steps}"
            )
    nudged = np.array(
        [
            bool(clamped[i] and plan.has_err[i] and plan.roles[i] == "target")
            for i in range(plan.n_pops)
        ]
    )
    beta = float(cfg.nudge) if cfg.nudge is not None and nudged.any() else 0.0
    return ModeSetup(code, depth, beta, nudged)


def _check_distributions(plan: Plan, cfg: Inference) -> None:
    """Leaky error neurons, nudging and Z-IL are defined for Gaussian populations: refuse them when
    a population has another distribution (naming it)."""
    for i, name in enumerate(plan.names):
        if cfg.errors == "leaky" and int(plan.prec_kind[i]) == 3:
            raise ValueError(
                f"errors='leaky' needs a diagonal precision; population {name!r} has a full one"
            )
        if cfg.errors == "leaky" and plan.prec_fast[i]:
            raise ValueError(
                f"errors='leaky' does not combine with a fast precision; population {name!r} "
                "re-estimates its precision during inference"
            )
        if not plan.has_err[i] or int(plan.dist[i]) == 0:
            continue
        kind = by_code(int(plan.dist[i])).name
        what = (
            "errors='leaky'" if cfg.errors == "leaky"
            else "nudge" if cfg.nudge is not None
            else "mode 'zil'" if cfg.mode == "zil"
            else None
        )  # fmt: skip
        if what is not None:
            raise ValueError(
                f"{what} is defined for Gaussian populations; population {name!r} is {kind}"
            )
