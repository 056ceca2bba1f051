"""Declarative probes: what a :class:`~neuropc.record.recording.Recorder` records, and how often.

A probe names a *target* and a *variable*:

======================  ===========================  ===============================================
variable                target                       one row holds
======================  ===========================  ===============================================
``value``, ``error``    a population                 the recorded units of one sample (``steps``:
                                                     at one inference step)
``noise``               a population                 the Gaussian noise added to its values at one
                                                     step (``sqrt(2 rate temperature) xi``); 0 at
                                                     the last recorded step, which has no update
``energy``              a population or ``"total"``  the batch-mean energy
                                                     ``1/B sum_b 1/2 sum_i eps_i (x_i - mu_i)``:
                                                     rows are batches (and steps), not samples
``precision``           a population                 its per-unit precision, once per batch
``weights``             a connection ``"pre->post"``  ``|W|_F, mean, std, min, max`` once per batch
                        or an encoder parameter
                        (``"encoder:mean.W"``, ...)
``updates``             a connection or an encoder   ``|dW|_F, |dF/dW|_F, |dW|_F / |W|_F`` per
                        parameter                    learning batch (dW: the optimiser's change;
                                                     an encoder's gradient column is NaN)
``alignment``           a connection                 ``cosine, rel_error, norm_ratio`` of PC's local
                                                     gradient against backprop's, per learning batch
======================  ===========================  ===============================================

The per-sample variables (value, error, noise, energy) take a ``mode``:

* ``"steps"``: full trajectories, one row per (sample, recorded step); steps ``0, every, 2 every,
  ..`` up to the run's ``steps`` (step t is the state *before* update t, so the last row is the
  settled state). After an early stop (``Inference.tol``) the remaining rows repeat the settled
  state.
* ``"settled"``: one row per sample, the state at the end of inference.
* ``"summary"``: one row per sample, ``reduce`` (mean, min, max, or the Euclidean norm over steps)
  of the steps in ``window = (first, stop)`` (stop excluded; None means to the end). The window
  must fit the run: a run of ``T`` steps (states ``0..T``) needs ``first <= T`` and
  ``stop <= T + 1``; checked when recording starts and before each batch.

``units`` and ``samples`` are absolute indices (into the population and into each batch); ``every``
thins the steps of ``steps`` probes and the batches of per-batch probes; ``phases`` says in which
phases (``"train"``, ``"test"``) the probe records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..dynamics.plan import Plan

SAMPLE_VARS = ("value", "error", "noise", "energy")
BATCH_VARS = ("precision", "weights", "updates", "alignment")
VARIABLES = SAMPLE_VARS + BATCH_VARS
MODES = ("steps", "settled", "summary")
REDUCES = ("mean", "min", "max", "norm")
PHASES = ("train", "test")
COLUMNS = {
    "weights": ("frobenius_norm", "mean", "std", "min", "max"),
    "updates": ("update_norm", "gradient_norm", "update_to_weight"),
    "alignment": ("cosine", "rel_error", "norm_ratio"),
}
UNITS = {  # physical units of each variable (dimensionless model quantities)
    "value": "a.u.",
    "error": "a.u.",
    "noise": "a.u.",
    "energy": "a.u. (free energy)",
    "precision": "1/a.u.^2",
    "weights": "a.u.",
    "updates": "a.u.",
    "alignment": "dimensionless",
}


@dataclass(frozen=True)
class Probe:
    """One recording. ``Probe("h1", "error")`` records every unit's error at every step.

    ``target``: a population name (``"h1"``; ``"h1:error"`` is accepted as shorthand for variable
    ``error``), ``"total"`` (energy only) or a connection ``"pre->post"``.
    """

    target: str
    variable: str = "value"
    mode: str = "steps"
    units: Sequence[int] | None = None
    samples: Sequence[int] | None = None
    every: int = 1
    phases: Sequence[str] = PHASES
    reduce: str = "mean"
    window: tuple[int, int | None] = (0, None)
    name: str = ""
    dtype: str = "float32"

    def __post_init__(self) -> None:
        tgt, _, var = str(self.target).partition(":")
        if var and tgt != "encoder":  # "h1:error" shorthand ("encoder:..." names a parameter)
            if self.variable not in ("value", var):
                raise ValueError(
                    f"probe {self.target!r}: the address says {var!r} but variable={self.variable!r}"
                )
            object.__setattr__(self, "target", tgt)
            object.__setattr__(self, "variable", var)
        if isinstance(self.phases, str):
            object.__setattr__(self, "phases", (self.phases,))
        object.__setattr__(self, "phases", tuple(self.phases))
        if not self.name:
            suffix = "" if self.mode == "steps" or self.variable in BATCH_VARS else f"_{self.mode}"
            object.__setattr__(self, "name", f"{self.target}:{self.variable}{suffix}")

    @property
    def per_batch(self) -> bool:
        return self.variable in BATCH_VARS

    def describe(self) -> dict:
        """JSON-able description (stored in the file)."""
        return {
            "name": self.name, "target": self.target, "variable": self.variable,
            "mode": self.mode if not self.per_batch else "batch",
            "units": None if self.units is None else [int(u) for u in self.units],
            "samples": None if self.samples is None else [int(s) for s in self.samples],
            "every": int(self.every), "phases": list(self.phases), "reduce": self.reduce,
            "window": [self.window[0], self.window[1]], "dtype": self.dtype,
        }  # fmt: skip


@dataclass
class Bound:
    """A validated probe against a plan: absolute columns in the backend buffers."""

    probe: Probe
    pop: int = -1  # population index, -1 for total energy and connections
    conn: int = -1
    units: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    columns: tuple[str, ...] = ()  # column labels of per-batch variables

    @property
    def width(self) -> int:
        return len(self.columns) if self.columns else len(self.units)


def _indices(what: str, given: Sequence[int] | None, n: int, probe: Probe) -> np.ndarray:
    if given is None:
        return np.arange(n, dtype=np.int64)
    a = np.asarray(given)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"probe {probe.name!r}: {what} must be a non-empty 1-d sequence of integers; got {given!r}"
        )
    if a.min() < 0 or a.max() >= n:
        raise ValueError(
            f"probe {probe.name!r}: {what} must lie in [0, {n}); got min {a.min()}, max {a.max()}"
        )
    if len(np.unique(a)) != a.size:
        raise ValueError(f"probe {probe.name!r}: {what} has repeated indices")
    return a.astype(np.int64)


def bind(probe: Probe, plan: Plan) -> Bound:
    """Validate ``probe`` against ``plan`` (names, variables, indices, options)."""
    p = probe
    if p.variable not in VARIABLES:
        raise ValueError(
            f"probe {p.name!r}: unknown variable {p.variable!r}; valid: {', '.join(VARIABLES)}"
        )
    if p.mode not in MODES:
        raise ValueError(f"probe {p.name!r}: unknown mode {p.mode!r}; valid: {', '.join(MODES)}")
    if p.reduce not in REDUCES:
        raise ValueError(
            f"probe {p.name!r}: unknown reduce {p.reduce!r}; valid: {', '.join(REDUCES)}"
        )
    bad = [ph for ph in p.phases if ph not in PHASES]
    if bad or not p.phases:
        raise ValueError(f"probe {p.name!r}: phases must be among {PHASES}; got {p.phases!r}")
    if not isinstance(p.every, int | np.integer) or p.every < 1:
        raise ValueError(f"probe {p.name!r}: every must be an integer >= 1; got {p.every!r}")
    if np.dtype(p.dtype) not in (np.float16, np.float32, np.float64):
        raise ValueError(f"probe {p.name!r}: dtype must be float16, float32 or float64")
    w0, w1 = p.window
    if (
        not isinstance(w0, int)
        or w0 < 0
        or (w1 is not None and (not isinstance(w1, int) or w1 <= w0))
    ):
        raise ValueError(f"probe {p.name!r}: window must be (first, stop) with 0 <= first < stop")
    if p.samples is not None:
        s = np.asarray(p.samples)
        if (s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer) or s.min() < 0
                or np.any(np.diff(s) <= 0)):  # fmt: skip
            raise ValueError(
                f"probe {p.name!r}: samples must be increasing, non-negative batch indices "
                f"(rows stay in trial order); got {p.samples!r}"
            )
    if p.variable in ("weights", "updates") and p.target in plan.encoder_params:
        return Bound(p, columns=COLUMNS[p.variable])
    if p.variable in ("weights", "updates", "alignment"):
        if p.target not in plan.param_names:
            raise ValueError(
                f"probe {p.name!r}: variable {p.variable!r} needs a connection parameter; unknown "
                f"{p.target!r}; valid: {', '.join(plan.param_names + plan.encoder_params) or '(none)'}"
            )
        conn = next(c for c, cp in enumerate(plan.cparams)
                    if any(k == p.target for k, _, _ in cp.values()))  # fmt: skip
        return Bound(p, conn=conn, columns=COLUMNS[p.variable])
    if p.target == "total":
        if p.variable != "energy":
            raise ValueError(f"probe {p.name!r}: target 'total' has only variable 'energy'")
        return Bound(p, units=np.zeros(1, np.int64), columns=("total",))
    if p.target not in plan.names:
        raise ValueError(
            f"probe {p.name!r}: unknown population {p.target!r}; valid: "
            f"{', '.join(plan.names)}, total (energy), or a connection: "
            f"{', '.join(plan.conn_names) or '(none)'}"
        )
    i = plan.index(p.target)
    if p.variable in ("error", "energy", "precision") and not plan.has_err[i]:
        valid = [n for n, h in zip(plan.names, plan.has_err) if h]
        raise ValueError(
            f"probe {p.name!r}: population {p.target!r} has no error neurons (it is a root without "
            f"a prior); populations with {p.variable}: {', '.join(valid)}"
        )
    if p.variable == "energy":
        return Bound(p, pop=i, units=np.zeros(1, np.int64), columns=("energy",))
    units = _indices("units", p.units, int(plan.sizes[i]), p)
    return Bound(p, pop=i, units=units)


def defaults(plan: Plan, preset: str) -> list[Probe]:
    """Probe presets. ``"energy"``: energy of every error-bearing population and the total, per
    step (on by default). ``"settled"``: energy, plus the settled value of every population that is
    not an input and the settled error of every error population. ``"steps"``: the same as full
    per-step trajectories. Inputs are the data the caller already holds; probe them explicitly."""
    if preset not in ("none", "energy", "settled", "steps"):
        raise ValueError(f"unknown preset {preset!r}; valid: none, energy, settled, steps")
    if preset == "none":
        return []
    out = [Probe(n, "energy") for n, h in zip(plan.names, plan.has_err) if h]
    out.append(Probe("total", "energy"))
    if preset == "energy":
        return out
    for n, r, h in zip(plan.names, plan.roles, plan.has_err):
        if r != "input":
            out.append(Probe(n, "value", mode=preset))
        if h:
            out.append(Probe(n, "error", mode=preset))
    return out


def with_name(probe: Probe, name: str) -> Probe:
    return replace(probe, name=name)


def check_unique(bound: Iterable[Bound]) -> None:
    seen: set[str] = set()
    for b in bound:
        if b.probe.name in seen:
            raise ValueError(
                f"two probes are named {b.probe.name!r}; give one of them name=... to tell them apart"
            )
        seen.add(b.probe.name)
