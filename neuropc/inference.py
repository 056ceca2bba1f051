"""Inference settings: how values settle on a batch."""

from __future__ import annotations

from dataclasses import dataclass, replace

INITS = ("forward", "zero", "given")
MODES = ("strict", "fpa", "zil", "ipc")
ERROR_DYNAMICS = ("instant", "leaky")


@dataclass(frozen=True)
class Inference:
    """Settings of PC inference (gradient descent, or Langevin sampling, of the energy F).

    Each step updates every free value population at once from the current state::

        x <- x - rate * dF/dx + sqrt(2 * rate * temperature) * xi,   xi ~ N(0, I)

    ``temperature = 0`` is plain PC; ``temperature = 1`` samples the posterior exp(-F) (overdamped
    Langevin, Euler-Maruyama; Zahid et al. 2023). ``seed`` fixes the noise (otherwise the
    simulator's seed stream is used).

    ``init``: ``"forward"`` sets free values to their predictions in topological order (free roots
    to their prior mean, or zero when they have none); ``"zero"`` sets them to 0; ``"given"`` uses
    values passed to the call and forward-initialises the rest.

    ``tol``: stop early once the largest per-sample update norm ``|dx|_2`` is below ``tol``
    (0 disables). ``errors``: ``"instant"`` computes ``eps = Pi (x - mu)`` each step; ``"leaky"``
    makes error neurons leaky integrators ``eps <- eps + error_rate ((x - mu) - eps / Pi)``
    (Bogacz 2017 eqs 12-14), whose fixed point is the instant error; ``error_rate`` defaults to
    ``rate``.

    ``mode``: ``"strict"`` PC (default), ``"fpa"`` (fixed-prediction assumption), ``"zil"``
    (zero-divergence inference learning) or ``"ipc"`` (incremental PC); ``nudge = beta`` nudges the
    targets instead of clamping them. Their exact conditions are in :mod:`neuropc.modes`.
    """

    steps: int = 20
    rate: float = 0.1
    init: str = "forward"
    tol: float = 0.0
    temperature: float = 0.0
    seed: int | None = None
    errors: str = "instant"
    error_rate: float | None = None
    mode: str = "strict"
    nudge: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"Inference.steps must be an integer >= 0; got {self.steps!r}")
        for name in ("rate", "tol", "temperature"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and v == v and v != float("inf")):
                raise ValueError(f"Inference.{name} must be a finite number >= 0; got {v!r}")
        if self.init not in INITS:
            raise ValueError(f"Inference.init must be one of {', '.join(INITS)}; got {self.init!r}")
        if self.errors not in ERROR_DYNAMICS:
            raise ValueError(
                f"Inference.errors must be one of {', '.join(ERROR_DYNAMICS)}; got {self.errors!r}"
            )
        if self.mode not in MODES:
            raise ValueError(f"Inference.mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.nudge is not None and not (
            self.nudge == self.nudge and self.nudge not in (0, float("inf"), float("-inf"))
        ):
            raise ValueError(f"Inference.nudge must be a finite nonzero number; got {self.nudge!r}")
        if self.mode in ("fpa", "zil") and self.init != "forward":
            raise ValueError(f"mode {self.mode!r} needs init='forward'; got {self.init!r}")
        if self.mode in ("fpa", "zil") and self.errors != "instant":
            raise ValueError(f"mode {self.mode!r} needs errors='instant'")
        if self.mode == "zil" and self.rate != 1.0:
            raise ValueError(
                f"mode 'zil' needs rate=1 (Song et al. 2020, condition C3); got {self.rate!r}"
            )
        if self.nudge is not None and self.errors != "instant":
            raise ValueError("nudge needs errors='instant'")
        if self.mode == "zil" and self.nudge is not None:
            raise ValueError("mode 'zil' does not combine with nudge")
        if self.error_rate is not None and not (self.error_rate > 0):
            raise ValueError(f"Inference.error_rate must be > 0; got {self.error_rate!r}")

    def replace(self, **kw: object) -> Inference:
        """A copy with some fields changed."""
        return replace(self, **kw)
