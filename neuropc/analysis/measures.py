"""Neuroscience analyses of recorded predictive-coding activity, on plain numpy arrays.

The functions take arrays as a recording reader hands them out (rows of trials, inference steps or
lags, and units) and return numpy arrays, or dicts of them keyed by ``str`` condition labels:

- energy traces: :func:`energy_over_steps`
- ERP-like waves: :func:`erp`, :func:`erp_units`, :func:`difference_wave`, :func:`peak`
- mismatch and adaptation: :func:`mismatch_indices`, :func:`ssa_index`, :func:`repetition_curve`
- time-resolved decoding: :func:`decode_over_steps`, :func:`temporal_generalisation`
- representational similarity: :func:`condition_patterns`, :func:`rdm`,
  :func:`rdms_by_population`, :func:`compare_rdms`

Condition labels are grouped with :func:`numpy.unique`, so groups come out in sorted order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import pdist, squareform

Labels = Sequence[Any] | np.ndarray

RDM_METHODS = ("correlation", "euclidean", "sqeuclidean")
COMPARE_METHODS = ("spearman", "pearson", "kendall")

__all__ = [
    "COMPARE_METHODS",
    "RDM_METHODS",
    "compare_rdms",
    "condition_patterns",
    "decode_over_steps",
    "difference_wave",
    "energy_over_steps",
    "erp",
    "erp_units",
    "mismatch_indices",
    "peak",
    "rdm",
    "rdms_by_population",
    "repetition_curve",
    "ssa_index",
    "temporal_generalisation",
]


# ---- input checks -------------------------------------------------------------------------------
def _shaped(x: Any, name: str, dims: tuple[str, ...], **sizes: int) -> np.ndarray:
    """``x`` as an array with one axis per entry of ``dims``; axes named in ``sizes`` must have
    that length."""
    a = np.asarray(x)
    ok = a.ndim == len(dims) and all(sizes.get(d, n) == n for d, n in zip(dims, a.shape))
    if not ok:
        want = ", ".join(f"{d}={sizes[d]}" if d in sizes else d for d in dims)
        raise ValueError(f"{name}: expected shape ({want}{',' * (len(dims) == 1)}), got {a.shape}")
    return a


def _same_shape(x: Any, name: str, ref: np.ndarray, ref_name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.shape != ref.shape:
        raise ValueError(f"{name}: expected shape {ref.shape} (that of {ref_name}), got {a.shape}")
    return a


def _window(window: tuple[int, int] | None, name: str, n: int) -> tuple[int, int]:
    """A half-open index range ``[l0, l1)`` inside ``0..n``; ``None`` is all of it."""
    if window is None:
        return 0, n
    l0, l1 = (int(v) for v in window)
    if not 0 <= l0 < l1 <= n:
        raise ValueError(f"{name}: expected (l0, l1) with 0 <= l0 < l1 <= {n}, got {tuple(window)}")
    return l0, l1


def _group_means(x: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ``labels`` and the mean of the rows of ``x`` having each."""
    if len(x) == 0:
        raise ValueError(f"{name}: needs at least one row, got shape {x.shape}")
    values, index = np.unique(labels, return_inverse=True)
    index = index.reshape(-1)
    return values, np.stack([x[index == k].mean(axis=0) for k in range(len(values))])


# ---- energy -------------------------------------------------------------------------------------
def energy_over_steps(
    energy: np.ndarray, steps: np.ndarray, columns: Sequence[str]
) -> dict[str, np.ndarray]:
    """Mean energy per inference step, pooled over the interleaved rows of all trials and batches.

    For each column ``c`` and step ``t = 0..T`` with ``T = max(steps)``::

        E_c[t] = (1 / |R_t|) * sum_{r in R_t} energy[r, c],    R_t = {r : steps[r] = t}

    ``energy`` is ``(rows, n_columns)``, ``steps`` ``(rows,)`` non-negative integers (integral
    floats are accepted). A step that no row has gives NaN. Returns ``{column: E_c}`` (each of
    length ``T + 1``) plus ``"steps"``: ``0..T``.
    """
    columns = list(columns)
    if len(set(columns)) != len(columns) or "steps" in columns:
        raise ValueError(f"columns: expected distinct names other than 'steps', got {columns}")
    e = _shaped(energy, "energy", ("rows", "n_columns"), n_columns=len(columns))
    s = _shaped(steps, "steps", ("rows",), rows=e.shape[0])
    if e.shape[0] == 0:
        raise ValueError(f"energy: needs at least one row, got shape {e.shape}")
    integral = np.issubdtype(s.dtype, np.integer) or (
        np.issubdtype(s.dtype, np.floating) and bool(np.all(s == np.round(s)))
    )
    if not integral or s.min() < 0:
        raise ValueError(
            f"steps: expected non-negative integers, got dtype {s.dtype}, min {s.min()}"
        )
    t = s.astype(np.intp)
    counts = np.bincount(t)
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN marks steps no row reached
        out = {c: np.bincount(t, weights=e[:, i]) / counts for i, c in enumerate(columns)}
    out["steps"] = np.arange(len(counts))
    return out


# ---- event-related responses --------------------------------------------------------------------
def erp_units(
    epochs: np.ndarray, conditions: Labels, baseline: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """Per-unit trial average per condition: ``(n_lags, n_units)`` for each condition ``c``::

        R_c[l, u] = mean_{e in c} (a[e, l, u] - b[e, u]),   b[e, u] = mean_{l0 <= k < l1} a[e, k, u]

    with ``b = 0`` when ``baseline`` is ``None``. ``epochs`` is ``(n_epochs, n_lags, n_units)``,
    ``conditions`` one label per epoch; keys are ``str(label)``, in sorted label order.
    """
    a = _shaped(epochs, "epochs", ("n_epochs", "n_lags", "n_units")).astype(float)
    labels = _shaped(conditions, "conditions", ("n_epochs",), n_epochs=a.shape[0])
    if baseline is not None:
        l0, l1 = _window(baseline, "baseline", a.shape[1])
        a = a - a[:, l0:l1].mean(axis=1, keepdims=True)
    values, means = _group_means(a, labels, "epochs")
    return {str(v): m for v, m in zip(values, means)}


def erp(
    epochs: np.ndarray,
    conditions: Labels,
    baseline: tuple[int, int] | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """ERP-like wave per condition: the trial average of the (weighted) sum over units::

        erp_c[l] = mean_{e in c} sum_u w_u (a[e, l, u] - b[e, u])

    with ``w = 1`` when ``weights`` is ``None`` (pass e.g. precisions, shape ``(n_units,)``) and
    ``b`` the per-epoch baseline of :func:`erp_units` (``baseline=(l0, l1)``, half-open, in lags).
    Returns ``{str(label): (n_lags,)}``.
    """
    per_unit = erp_units(epochs, conditions, baseline)
    n_units = np.shape(epochs)[2]
    if weights is None:
        return {c: r.sum(axis=1) for c, r in per_unit.items()}
    w = _shaped(weights, "weights", ("n_units",), n_units=n_units).astype(float)
    return {c: r @ w for c, r in per_unit.items()}


def difference_wave(erps: Mapping[str, np.ndarray], a: str, b: str) -> np.ndarray:
    """Difference of two condition waves, e.g. the mismatch negativity: ``d = erps[a] - erps[b]``."""
    for name, key in (("a", a), ("b", b)):
        if key not in erps:
            raise ValueError(f"{name}: no condition {key!r}; available: {sorted(erps)}")
    wa = np.asarray(erps[a], dtype=float)
    return wa - _same_shape(erps[b], f"erps[{b!r}]", wa, f"erps[{a!r}]")


def peak(
    wave: np.ndarray, window: tuple[int, int] | None = None, sign: int = 1
) -> tuple[float, int]:
    """Peak amplitude and latency of a 1-D wave within the half-open lag window ``[l0, l1)``::

        latency = argmax_{l0 <= l < l1} sign * wave[l],    amplitude = wave[latency]

    ``sign=+1`` finds the largest value, ``-1`` the most negative. The latency is an index into
    the whole wave (not the window); NaNs are skipped, and ties go to the earliest lag.
    """
    w = _shaped(wave, "wave", ("n_lags",)).astype(float)
    if sign not in (1, -1):
        raise ValueError(f"sign: expected +1 or -1, got {sign!r}")
    l0, l1 = _window(window, "window", len(w))
    seg = sign * w[l0:l1]
    if np.all(np.isnan(seg)):
        raise ValueError(f"wave: all NaN in window [{l0}, {l1})")
    i = l0 + int(np.nanargmax(seg))
    return float(w[i]), i


# ---- mismatch and adaptation indices ------------------------------------------------------------
def mismatch_indices(dev: np.ndarray, std: np.ndarray, ctr: np.ndarray) -> dict[str, np.ndarray]:
    """Mismatch decomposition of Parras et al. (2017), elementwise (e.g. per unit)::

        N   = sqrt(DEV^2 + STD^2 + CTR^2)
        iMM = (DEV - STD) / N      mismatch
        iPE = (DEV - CTR) / N      prediction error
        iRS = (CTR - STD) / N      repetition suppression

    so that ``iMM = iPE + iRS``, each in ``[-1, 1]`` for non-negative responses. ``dev``, ``std``
    and ``ctr`` are responses to the deviant, the standard and the many-standards control, of
    equal shape. Where ``N = 0`` (no response at all) every index is 0, not NaN. Returns
    ``{"iMM", "iPE", "iRS"}``.
    """
    d = np.asarray(dev, dtype=float)
    s = _same_shape(std, "std", d, "dev")
    c = _same_shape(ctr, "ctr", d, "dev")
    n = np.sqrt(d * d + s * s + c * c)
    nz = n > 0
    safe = np.where(nz, n, 1.0)
    return {
        "iMM": np.where(nz, (d - s) / safe, 0.0),
        "iPE": np.where(nz, (d - c) / safe, 0.0),
        "iRS": np.where(nz, (c - s) / safe, 0.0),
    }


def ssa_index(dev: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Stimulus-specific adaptation index of Ulanovsky et al. (2003), elementwise::

        SI = (DEV - STD) / (DEV + STD)

    with ``SI = 0`` where ``DEV + STD = 0``. Meant for non-negative responses (rates).
    """
    d = np.asarray(dev, dtype=float)
    s = _same_shape(std, "std", d, "dev")
    den = d + s
    nz = den != 0
    return np.where(nz, (d - s) / np.where(nz, den, 1.0), 0.0)


def repetition_curve(
    responses: np.ndarray, repetition: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean response per repetition index (adaptation curve)::

        R[k] = mean_{i : repetition[i] = k} responses[i]

    ``responses`` is ``(n_trials,)`` or ``(n_trials, ...)`` (averaged over trials only),
    ``repetition`` ``(n_trials,)``. Returns the sorted unique repetition values and ``R``.
    """
    r = np.asarray(responses, dtype=float)
    if r.ndim == 0:
        raise ValueError(f"responses: expected shape (n_trials, ...), got {r.shape}")
    rep = _shaped(repetition, "repetition", ("n_trials",), n_trials=r.shape[0])
    return _group_means(r, rep, "responses")


# ---- decoding -----------------------------------------------------------------------------------
def _stratified_folds(index: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each trial. Each class's trials, shuffled, are dealt round-robin, continuing from
    where the previous class stopped: every fold gets the floor or ceiling of each class's share,
    and fold sizes differ by at most one."""
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(index == k)) for k in range(int(index.max()) + 1)]
    )
    fold = np.empty(len(index), dtype=np.intp)
    fold[order] = np.arange(len(index)) % folds
    return fold


def _fit_ridge(
    x: np.ndarray, y: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardise ``x`` (n, p) with its own statistics, then fit
    ``min_{W, b} |Y - 1 b - Z W|^2 + ridge |W|^2``. Returns ``(mean, scale, W, b)``."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature stays at 0 rather than becoming NaN
    z = (x - mean) / scale
    # z has zero column means, so the unpenalised bias decouples: b = mean(Y), W from centred Y
    b = y.mean(axis=0)
    yc = y - b
    n, p = z.shape
    if ridge == 0:
        w = np.linalg.lstsq(z, yc, rcond=None)[0]
    elif p <= n:
        w = np.linalg.solve(z.T @ z + ridge * np.eye(p), z.T @ yc)
    else:  # dual form: an n x n system when there are more units than training trials
        w = z.T @ np.linalg.solve(z @ z.T + ridge * np.eye(n), yc)
    return mean, scale, w, b


def _predict(model: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mean, scale, w, b = model
    return np.argmax(((x - mean) / scale) @ w + b, axis=1)


def _cross_validate(
    data: np.ndarray, labels: np.ndarray, folds: int, ridge: float, seed: int, generalise: bool
) -> np.ndarray:
    """Pooled cross-validated accuracy, ``(n_steps, n_steps)`` when ``generalise`` (train at row,
    test at column), else ``(n_steps, 1)``. Both paths share fit and predict, so the diagonal of
    one is bitwise the column of the other."""
    x = _shaped(data, "data", ("n_trials", "n_steps", "n_units")).astype(float)
    n_trials, n_steps, _ = x.shape
    y = _shaped(labels, "labels", ("n_trials",), n_trials=n_trials)
    if not 2 <= folds <= n_trials:
        raise ValueError(f"folds: expected 2 <= folds <= n_trials={n_trials}, got {folds}")
    if ridge < 0:
        raise ValueError(f"ridge: expected >= 0, got {ridge}")
    classes, index = np.unique(y, return_inverse=True)
    index = index.reshape(-1)
    counts = np.bincount(index)
    if len(classes) < 2 or counts.min() < 2:
        # two per class keep every class in every training fold
        raise ValueError(
            f"labels: expected >= 2 classes with >= 2 trials each, got "
            f"{dict(zip(classes.tolist(), counts.tolist()))}"
        )
    fold = _stratified_folds(index, folds, seed)
    onehot = np.eye(len(classes))[index]
    correct = np.zeros((n_steps, n_steps if generalise else 1))
    for f in range(folds):
        train, test = fold != f, fold == f
        for i in range(n_steps):
            model = _fit_ridge(x[train, i], onehot[train], ridge)
            for col, j in enumerate(range(n_steps) if generalise else (i,)):
                correct[i, col] += np.count_nonzero(_predict(model, x[test, j]) == index[test])
    return correct / n_trials


def decode_over_steps(
    data: np.ndarray, labels: np.ndarray, folds: int = 5, ridge: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Time-resolved decoding: cross-validated accuracy of a linear classifier at each step.

    At step ``t``, for each of ``folds`` stratified folds (shuffled with ``seed``), features are
    standardised with the training fold's mean and std, ``z = (x - mu) / sigma``, and a
    one-vs-rest ridge least-squares classifier is fit on one-hot targets ``Y``::

        (W, b) = argmin |Y - 1 b - Z W|^2 + ridge * |W|^2    (bias unpenalised)
        y_hat  = argmax_k (z W + b)_k
        acc[t] = (1 / n_trials) * sum_folds #{test trials with y_hat = y}

    ``data`` is ``(n_trials, n_steps, n_units)``; ``labels`` ``(n_trials,)``, integers or
    strings, at least two classes with at least two trials each. Returns ``acc``, ``(n_steps,)``.
    """
    return _cross_validate(data, labels, folds, ridge, seed, generalise=False)[:, 0]


def temporal_generalisation(
    data: np.ndarray, labels: np.ndarray, folds: int = 5, ridge: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Temporal generalisation matrix (King & Dehaene 2014): train at step ``i``, test at ``j``::

        G[i, j] = (1 / n_trials) * sum_folds #{test trials at step j classified correctly by
                  the classifier (and standardisation) fit on the training fold at step i}

    Same classifier, folds and arguments as :func:`decode_over_steps`, whose result is exactly
    ``diag(G)``. Returns ``(n_steps, n_steps)``.
    """
    return _cross_validate(data, labels, folds, ridge, seed, generalise=True)


# ---- representational similarity ----------------------------------------------------------------
def condition_patterns(data: np.ndarray, conditions: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Mean activity pattern per condition::

        P[c, u] = mean_{i in c} data[i, u]

    ``data`` is ``(n_trials, n_units)``, ``conditions`` ``(n_trials,)``. Returns the sorted unique
    labels and ``P``, ``(n_conditions, n_units)``, rows in that order.
    """
    x = _shaped(data, "data", ("n_trials", "n_units")).astype(float)
    labels = _shaped(conditions, "conditions", ("n_trials",), n_trials=x.shape[0])
    return _group_means(x, labels, "data")


def _rdm(patterns: np.ndarray, method: str, name: str) -> np.ndarray:
    if method not in RDM_METHODS:
        raise ValueError(f"method: unknown {method!r}; valid: {', '.join(RDM_METHODS)}")
    p = _shaped(patterns, name, ("n_conditions", "n_units")).astype(float)
    if method != "correlation":
        return squareform(pdist(p, metric=method))
    c = p - p.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a flat pattern has no correlation: NaN
        z = c / norm
    d = 1.0 - z @ z.T
    d = np.clip((d + d.T) / 2, 0.0, 2.0)  # exact symmetry; clip rounding just outside [0, 2]
    idx = np.flatnonzero(norm[:, 0] > 0)
    d[idx, idx] = 0.0
    return d


def rdm(patterns: np.ndarray, method: str = "correlation") -> np.ndarray:
    """Representational dissimilarity matrix of condition patterns ``x_i`` (rows of
    ``(n_conditions, n_units)``), ``(n_conditions, n_conditions)``::

        correlation:  D[i, j] = 1 - r(x_i, x_j)       (Pearson r across units)
        euclidean:    D[i, j] = |x_i - x_j|
        sqeuclidean:  D[i, j] = |x_i - x_j|^2

    For ``correlation`` a pattern that is constant across units has undefined r: its row and
    column are NaN.
    """
    return _rdm(patterns, method, "patterns")


def rdms_by_population(
    patterns: Mapping[str, np.ndarray], method: str = "correlation"
) -> dict[str, np.ndarray]:
    """:func:`rdm` of each population's ``(n_conditions, n_units)`` patterns:
    ``{name: D_name}``."""
    return {k: _rdm(v, method, f"patterns[{k!r}]") for k, v in patterns.items()}


def compare_rdms(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> float:
    """Second-order similarity of two RDMs: the correlation of their off-diagonal upper triangles::

        rho = corr({a[i, j] : i < j}, {b[i, j] : i < j})

    with ``corr`` Spearman's rho, Pearson's r or Kendall's tau-b (``method``). Both must be
    ``(n, n)`` with ``n >= 3``; NaN entries propagate to a NaN result.
    """
    fns = {"spearman": stats.spearmanr, "pearson": stats.pearsonr, "kendall": stats.kendalltau}
    if method not in fns:
        raise ValueError(f"method: unknown {method!r}; valid: {', '.join(COMPARE_METHODS)}")
    da = np.asarray(a, dtype=float)
    if da.ndim != 2 or da.shape[0] != da.shape[1] or da.shape[0] < 3:
        raise ValueError(f"a: expected shape (n, n) with n >= 3, got {da.shape}")
    db = _same_shape(b, "b", da, "a")
    iu = np.triu_indices(da.shape[0], k=1)
    return float(fns[method](da[iu], db[iu]).statistic)
