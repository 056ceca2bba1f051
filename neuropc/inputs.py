"""Checks of what a user hands a simulator: data and initial values, validation sets, trial
labels and run settings that depend on the network. Each raises ``ValueError`` naming the
population (or setting), what was expected and what was given, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .analysis import metrics as _metrics
from .array_checks import all_finite
from .dynamics.inference import Inference
from .dynamics.plan import Plan
from .model.distributions import check_data as check_distribution_data
from .model.distributions import to_rows
from .model.network import Network
from .record import schema


def check_data(
    network: Network,
    plan: Plan,
    dtype: np.dtype,
    data: Mapping[str, np.ndarray],
    phase: str,
    *,
    values: bool = False,
) -> dict[str, np.ndarray]:
    """Validate names, shapes, batch sizes and finiteness; returns the arrays (cast to the
    simulator dtype when they are written into the backend buffer)."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"data must be a mapping from population name to array; got {type(data).__name__}"
        )
    clamped = plan.clamped_names(phase)
    out: dict[str, np.ndarray] = {}
    n = None
    for name, arr in data.items():
        network[name]  # unknown names raise with the valid list
        if not values and name not in clamped:
            role = network[name].role
            why = " (targets are never clamped at test time)" if role == "target" else ""
            raise ValueError(
                f"population {name!r} is not clamped in phase {phase!r}{why}; clamped: "
                f"{', '.join(sorted(clamped)) or '(none)'}"
            )
        if values and name in clamped:
            raise ValueError(
                f"population {name!r} is clamped in phase {phase!r}; pass its data, not values"
            )
        pop = network[name]
        size, shape = pop.size, pop.shape
        try:
            a = np.asarray(arr)
        except ValueError as e:  # ragged nested lists
            raise ValueError(
                f"population {name!r}: data is not a rectangular array ({e})"
            ) from None
        if len(shape) > 1 and a.shape[1:] == shape:  # (batch, *shape): stored flat, C order
            a = a.reshape(a.shape[0], size)
        if a.ndim != 2 or a.shape[1] != size:
            want = f"(batch, {size})" + (
                f" or (batch, {', '.join(map(str, shape))})" if len(shape) > 1 else ""
            )
            raise ValueError(
                f"population {name!r}: expected {'values' if values else 'data'} of shape "
                f"{want}; got shape {a.shape}"
            )
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(
                f"population {name!r}: batch size {a.shape[0]} differs from {n} of the other arrays"
            )
        if a.dtype.kind not in "iuf":  # integers and floats (booleans are no numbers here)
            raise ValueError(f"population {name!r}: expected real numbers; got dtype {a.dtype}")
        if a.dtype.kind == "f":  # (integers are finite)
            check_finite(name, a)
        check_fits(name, a, dtype)
        if not values:  # clamped data of a Bernoulli / Categorical are probabilities
            check_distribution_data(name, pop.distribution, to_rows(a, shape, pop.axis))
        q = plan.index(name)
        for op, pres in zip(plan.cops, plan.cpres):  # what an operator reads (token ids in range)
            if q in pres:
                op.check_input(pres.index(q), name, a.reshape(-1, *shape))
        out[name] = a
    if not values:
        missing = sorted(clamped - set(out))
        if missing:
            raise ValueError(
                f"population {missing[0]!r} is clamped in phase {phase!r} but no data was given; "
                f"expected data for: {', '.join(sorted(clamped))}"
            )
        if n == 0:
            raise ValueError("data has an empty batch")
    return out


def check_validation(network: Network, plan: Plan, dtype: np.dtype, validation: object) -> None:
    """``fit(validation=(inputs, labels))``: checked before the first epoch."""
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise ValueError(
            f"fit(validation=...) must be a pair (inputs, labels); got {type(validation).__name__}"
        )
    inputs, labels = validation
    arrays = check_data(network, plan, dtype, inputs, "test")
    n = batch_len(arrays)
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"fit(validation=...): labels must have shape ({n},); got {lab.shape}")
    if lab.dtype.kind not in "iu":
        raise ValueError(f"fit(validation=...): labels must be integers; got dtype {lab.dtype}")
    target = _metrics.target_name(network)
    size = network[target].size
    if n and (lab.min() < 0 or lab.max() >= size):
        raise ValueError(
            f"fit(validation=...): labels must be class indices in [0, {size}) of population "
            f"{target!r}; got values from {lab.min()} to {lab.max()}"
        )


def check_leaky(plan: Plan, cfg: Inference) -> None:
    """Leaky error neurons ``eps <- eps + r ((x - mu) - eps / Pi)`` converge only for
    ``0 < r / Pi < 2`` (the iteration multiplies the distance to the fixed point by
    ``1 - r / Pi``): refuse an unstable ``error_rate``."""
    if cfg.errors != "leaky":
        return
    r = cfg.rate if cfg.error_rate is None else cfg.error_rate
    for k, name in enumerate(plan.names):
        if not plan.has_err[k]:
            continue
        pi = float(np.min(plan.precision[plan.error_slice(name)]))
        if r / pi >= 2.0:
            raise ValueError(
                f"Inference error_rate {r:g} is unstable for leaky errors: population "
                f"{name!r} has precision {pi:g}, and error_rate / precision = {r / pi:g} "
                "must be < 2"
            )


def check_trials(declared: Sequence[str], trials: Mapping | None, n: int) -> dict[str, np.ndarray]:
    """Per-sample trial labels: declared columns (``record(trial_columns=...)``), ``n`` each, and
    short enough for the file (checked before the batch runs)."""
    if trials is None:
        return {}
    out = {}
    for k, v in trials.items():
        if k not in declared:
            raise ValueError(
                f"trial column {k!r} was not declared; declared in record(trial_columns=...): "
                f"{', '.join(declared) or '(none)'}"
            )
        a = np.asarray(v, dtype=object)
        if a.shape != (n,):
            raise ValueError(f"trial column {k!r}: expected shape ({n},); got {a.shape}")
        for x in a:  # before the batch runs: a label the file cannot hold changes nothing
            schema.label(str(x), k)
        out[k] = a
    return out


def check_finite(name: str, a: np.ndarray, what: str = "population {!r}: data") -> None:
    if not all_finite(a):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"{what.format(name)} contains NaN or inf (first at index {bad})")


def check_fits(name: str, a: np.ndarray, dtype: np.dtype) -> None:
    """Refuse data whose values overflow ``dtype`` when cast (float64 1e300 -> float32 inf)."""
    if a.dtype.kind != "f" or a.dtype.itemsize <= dtype.itemsize or not a.size:
        return
    big = float(np.max(np.abs(a)))
    if big > float(np.finfo(dtype).max):
        raise ValueError(
            f"population {name!r}: data overflow {dtype}: the largest magnitude is {big:g}, above "
            f"{dtype}'s maximum {float(np.finfo(dtype).max):g}"
        )


def float_dtype(dtype: object) -> np.dtype:
    """``"float32"`` or ``"float64"`` (names or numpy dtypes) as a numpy dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        raise ValueError(f"Simulator dtype must be 'float32' or 'float64'; got {dtype!r}")
    return dt


def batch_len(arrays: Mapping[str, np.ndarray]) -> int:
    for a in arrays.values():
        return int(np.shape(a)[0])
    return 0
