"""Inference settings: how values settle on a batch."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import validation as _v

INITS = ("forward", "zero", "given", "amortised")
MODES = ("strict", "fpa", "zil", "ipc")
ERROR_DYNAMICS = ("instant", "leaky")


@dataclass(frozen=True)
class Preconditioner:
    """A diagonal, RMSprop-like preconditioner of the inference dynamics (Zahid et al. 2023)::

        v <- beta2 v + (1 - beta2) g^2,    vhat = v / (1 - beta2^t)   (bias_correction)
        M = 1 / (eps + sqrt(vhat))
        x <- x - rate M g + sqrt(2 rate temperature M) xi

    with ``g = dF/dx`` and ``t`` the step (from 1). The statistics ``v`` are kept per chain
    (sample) and unit, and start at 0 in every run (batch). The metric-divergence term
    ``Gamma`` of preconditioned Langevin dynamics is omitted, so with noise the chain targets
    ``exp(-F)`` only as far as ``M`` changes slowly."""

    beta2: float = 0.99
    eps: float = 1e-8
    bias_correction: bool = True

    def __post_init__(self) -> None:
        v = _v.number(self.beta2, "Preconditioner.beta2", low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "beta2", v)
        object.__setattr__(
            self, "eps", _v.number(self.eps, "Preconditioner.eps", low=0.0, low_open=True)
        )
        object.__setattr__(
            self, "bias_correction", _v.flag(self.bias_correction, "Preconditioner.bias_correction")
        )


@dataclass(frozen=True)
class Inference:
    """Settings of PC inference (gradient descent, or Langevin sampling, of the energy F).

    Each step updates every free value population at once from the current state::

        x <- x - rate * dF/dx + sqrt(2 * rate * temperature) * xi,   xi ~ N(0, I)

    ``temperature = 0`` is plain PC; ``temperature = 1`` is the unadjusted Langevin algorithm
    (overdamped Langevin dynamics discretised by Euler-Maruyama, no Metropolis correction; Zahid
    et al. 2023) targeting the posterior exp(-F): its stationary distribution differs from the
    posterior by a bias of order ``rate`` (for a Gaussian posterior of variance s^2 the chain's
    variance is s^2 / (1 - rate / (2 s^2))), so lower ``rate`` for more faithful samples. Langevin
    noise is refused in modes ``"fpa"`` and ``"zil"``, which are deterministic equivalences with
    backprop. ``seed`` fixes the noise (otherwise the simulator's seed stream is used).

    ``init``: ``"forward"`` sets free values to their predictions in topological order (free roots
    to their prior mean, or zero when they have none); ``"zero"`` sets them to 0; ``"given"`` uses
    values passed to the call and forward-initialises the rest; ``"amortised"`` starts the
    network's encoder targets (:meth:`Network.encoder <neuropc.model.network.Network.encoder>`)
    at ``z_0 ~ q_phi(z | x)`` (``init_sample=True``, the default) or at its mean ``mu_phi(x)``
    (``init_sample=False``) and forward-initialises the rest; in a training batch the encoder
    then learns from the chain's collected samples (:mod:`neuropc.dynamics.amortised`).

    ``tol``: stop early once the largest per-sample update norm ``|dx|_2`` is below ``tol``
    (0 disables; refused in mode ``"zil"``). ``errors``: ``"instant"`` computes
    ``eps = Pi (x - mu)`` each step; ``"leaky"`` makes error neurons leaky integrators
    ``eps <- eps + error_rate ((x - mu) - eps / Pi)`` (Bogacz 2017 eqs 12-14), whose fixed point
    is the instant error; ``error_rate`` defaults to ``rate`` and must keep
    ``error_rate / Pi < 2`` (else the iteration diverges; checked against every population's
    precision when the simulator runs). With leaky errors the error neurons' state is what the
    circuit has: ``State.errors`` holds it, and the value updates and the local weight gradients
    (``gradients()``, ``learn()``) use it, so they equal ``dF/dtheta`` of the reported energy
    (which is computed from ``x - mu``) only once the error neurons have settled.

    ``burn_in`` and ``collect`` (Langevin learning, Zahid et al. 2023): the weight gradient is
    the average of the local gradients ``dF/dtheta`` over the *collected* states of the chain,
    ``G = 1/|S| sum_{t in S} dF/dtheta (x_t)``, which is the gradient of the (negative) ELBO
    ``E_q[F(x, theta)]`` with ``q`` the chain's empirical distribution over ``S``. ``collect``:
    ``"last"`` (default: ``S = {steps}``, the final state, today's PC), ``"mean"`` (every state
    from step ``burn_in`` to ``steps``) or an integer ``k`` (states ``burn_in``,
    ``burn_in + k``, ... up to ``steps``). ``"mean"`` and ``k`` need Langevin noise
    (``temperature > 0``; without it the states are a deterministic relaxation, not samples)
    and mode ``"strict"``; ``burn_in < steps``.

    ``preconditioner``: a :class:`Preconditioner` scales each unit's drift by ``M`` and its noise
    by ``sqrt(M)``.

    ``mode``: ``"strict"`` PC (default), ``"fpa"`` (fixed-prediction assumption), ``"zil"``
    (zero-divergence inference learning) or ``"ipc"`` (incremental PC); ``nudge = beta`` nudges the
    targets instead of clamping them. Their exact conditions are in :mod:`neuropc.dynamics.modes`.
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
    burn_in: int = 0
    collect: str | int = "last"
    preconditioner: Preconditioner | None = None
    init_sample: bool | None = None

    def __post_init__(self) -> None:
        _v.integer(self.steps, "Inference.steps", low=0, high=_v.MAX_STEPS)
        for name in ("rate", "tol", "temperature"):
            object.__setattr__(
                self, name, _v.number(getattr(self, name), f"Inference.{name}", low=0)
            )
        if self.seed is not None:
            _v.integer(self.seed, "Inference.seed", low=0, high=2**32 - 1)
        for name, valid in (("init", INITS), ("errors", ERROR_DYNAMICS), ("mode", MODES)):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in valid:
                raise ValueError(f"Inference.{name} must be one of {', '.join(valid)}; got {v!r}")
        if self.nudge is not None:
            beta = _v.number(self.nudge, "Inference.nudge")
            if beta == 0:
                raise ValueError(
                    f"Inference.nudge must be a finite nonzero number; got {self.nudge!r}"
                )
        if self.error_rate is not None:
            _v.number(self.error_rate, "Inference.error_rate", low=0, low_open=True)
        if self.mode in ("fpa", "zil") and self.init != "forward":
            raise ValueError(f"mode {self.mode!r} needs init='forward'; got {self.init!r}")
        if self.mode in ("fpa", "zil") and self.errors != "instant":
            raise ValueError(f"mode {self.mode!r} needs errors='instant'")
        if self.mode == "zil" and self.rate != 1.0:
            raise ValueError(
                f"mode 'zil' needs rate=1 (Song et al. 2020, condition C3); got {self.rate!r}"
            )
        if self.mode == "zil" and self.tol > 0:
            # an early stop would end inference before the deep layers reach their scheduled step
            # and leave their gradients silently zero
            raise ValueError(
                f"mode 'zil' takes each gradient at a scheduled step and cannot stop early; got "
                f"tol={self.tol!r} (use tol=0)"
            )
        if self.mode in ("fpa", "zil") and self.temperature > 0:
            # the noise would break the exact equality with backprop that defines these modes, and
            # frozen predictions do not sample the posterior of the energy either
            raise ValueError(
                f"mode {self.mode!r} is deterministic (it equals backprop exactly); got "
                f"temperature={self.temperature!r}: Langevin sampling needs mode 'strict' or 'ipc'"
            )
        _v.integer(self.burn_in, "Inference.burn_in", low=0)
        if self.burn_in and self.burn_in >= self.steps:
            raise ValueError(
                f"Inference.burn_in must be < steps ({self.steps}); got {self.burn_in!r}"
            )
        if self.collect not in ("last", "mean"):
            if isinstance(self.collect, str) or isinstance(self.collect, bool):
                raise ValueError(
                    f"Inference.collect must be 'last', 'mean' or a step interval k >= 1; got "
                    f"{self.collect!r}"
                )
            _v.integer(self.collect, "Inference.collect", low=1)
        if self.collect != "last" and self.temperature == 0:
            raise ValueError(
                f"Inference.collect={self.collect!r} averages the gradient over the chain's "
                "samples: it needs Langevin noise (temperature > 0); without noise use "
                "collect='last'"
            )
        if self.collect != "last" and self.mode != "strict":
            raise ValueError(
                f"Inference.collect={self.collect!r} needs mode 'strict'; got {self.mode!r}"
            )
        if self.preconditioner is not None:
            _v.instance(self.preconditioner, Preconditioner, "Inference.preconditioner",
                        "an npc.Preconditioner(...)")  # fmt: skip
            if self.mode in ("fpa", "zil") or self.errors != "instant":
                raise ValueError(
                    "Inference.preconditioner needs mode 'strict' or 'ipc' with instant errors; "
                    f"got mode={self.mode!r}, errors={self.errors!r}"
                )
        if self.collect != "last" and self.tol > 0:
            raise ValueError(
                f"Inference.collect={self.collect!r} averages over scheduled steps and cannot "
                f"stop early; got tol={self.tol!r} (use tol=0)"
            )
        if self.burn_in and self.collect == "last":
            raise ValueError(
                "Inference.burn_in only matters with collect='mean' or an interval k; got "
                f"burn_in={self.burn_in!r} with collect='last'"
            )
        if self.init_sample is not None:
            _v.flag(self.init_sample, "Inference.init_sample")
            if self.init != "amortised":
                raise ValueError(
                    f"Inference.init_sample chooses how an amortised warm start draws z_0; it "
                    f"needs init='amortised'; got init={self.init!r}"
                )
        if self.nudge is not None and self.errors != "instant":
            raise ValueError("nudge needs errors='instant'")
        if self.mode == "zil" and self.nudge is not None:
            raise ValueError("mode 'zil' does not combine with nudge")

    def collected(self) -> list[int]:
        """The steps whose states the weight gradient averages (see ``collect``)."""
        if self.collect == "last":
            return [self.steps]
        k = 1 if self.collect == "mean" else int(self.collect)
        return list(range(self.burn_in, self.steps + 1, k))

    def replace(self, **kw: object) -> Inference:
        """A copy with some fields changed."""
        return replace(self, **kw)
