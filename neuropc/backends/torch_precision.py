"""Fast precisions on the torch backend: per-unit vectors or full matrices re-estimated at every
inference step by their rule (:mod:`neuropc.dynamics.precision`), in place in the tensors the
relaxation reads, and restarted from the slow (parameter) values at the start of every run."""

from __future__ import annotations

import numpy as np
import torch

from ..dynamics.plan import Plan
from ..dynamics.precision import full_rule_step, rule_start, rule_step


class FastPrecisions:
    """The fast precisions of one backend: ``pi`` is the backend's list of precision tensors
    (updated in place); the slow values are kept aside, with each rule's running state."""

    def __init__(self, plan: Plan, pi: list) -> None:
        self.pi = pi
        self.pops = [int(p) for p in np.flatnonzero(plan.prec_fast)]
        # per population: its rule's options and whether it is the EMA (read once, not per step)
        self.rules = {p: ([float(v) for v in plan.prec_hp[p]], int(plan.prec_rule[p]) == 2)
                      for p in self.pops}  # fmt: skip
        self.slow = {p: pi[p].clone() for p in self.pops}
        self.state: dict[int, torch.Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.pops)

    def set_slow(self, p: int) -> None:
        """The backend's precision ``p`` was set to a new slow value."""
        if p in self.slow:
            self.slow[p].copy_(self.pi[p])

    def host(self) -> dict[int, np.ndarray]:
        """The precisions the run ended with (float64 host copies)."""
        return {p: self.pi[p].detach().to("cpu", torch.float64).numpy() for p in self.pops}

    def start(self) -> None:
        """Each run's fast precisions start from the slow ones (and so do their rules' states:
        ``S = Pi^-1 - damping``, or the Cholesky factor of ``Pi`` for a full one's gradient
        rule; any factor gives the same trajectory of ``Pi``)."""
        for p in self.pops:
            pi = self.pi[p]
            pi.copy_(self.slow[p])
            hp, ema = self.rules[p]
            damping = hp[2]
            if pi.ndim == 1:
                self.state[p] = rule_start(pi, damping)
            elif ema:
                eye = torch.eye(pi.shape[0], dtype=pi.dtype, device=pi.device)
                self.state[p] = torch.linalg.inv(pi) - damping * eye
            else:
                self.state[p] = torch.linalg.cholesky(pi)

    def step(self, d: list) -> None:
        """One step of every fast precision's rule (``precision.rule_step``) on the batch errors
        ``d`` of the current state, in place (the relaxation reads these tensors)."""
        for p in self.pops:
            hp, ema = self.rules[p]
            pi = self.pi[p]
            if pi.ndim == 2:  # full: the factor (gradient) or the covariance (EMA) in state
                second = d[p].T @ d[p] / d[p].shape[0]
                eye = torch.eye(pi.shape[0], dtype=pi.dtype, device=pi.device)
                new, chol, cov = full_rule_step(
                    pi, self.state[p], self.state[p], second, ema, *hp[:3], torch.linalg.inv, eye
                )
                self.state[p] = cov if ema else chol
            else:
                second = (d[p] * d[p]).mean(dim=0)
                if hp[5] > 1.0:  # scalar precision
                    second = second.mean().expand_as(second)
                new, self.state[p] = rule_step(pi, self.state[p], second, ema, *hp)
            pi.copy_(new)
