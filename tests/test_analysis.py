"""neuropc.analysis.measures against closed forms and independent computations."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from neuropc.analysis import measures as an


# ---- energy -------------------------------------------------------------------------------------
def test_energy_over_steps_matches_loop() -> None:
    rng = np.random.default_rng(0)
    # three batches of different lengths, rows shuffled so batches interleave
    steps = np.concatenate([np.arange(4), np.arange(6), np.arange(3)])
    energy = rng.normal(size=(len(steps), 2))
    perm = rng.permutation(len(steps))
    out = an.energy_over_steps(energy[perm], steps[perm], ["total", "output"])
    np.testing.assert_array_equal(out["steps"], np.arange(6))
    for c, name in enumerate(["total", "output"]):
        want = [
            np.mean([energy[r, c] for r in range(len(steps)) if steps[r] == t]) for t in range(6)
        ]
        np.testing.assert_allclose(out[name], want, rtol=0, atol=1e-12)


def test_energy_over_steps_missing_step_is_nan_and_float_steps() -> None:
    out = an.energy_over_steps(np.array([[1.0], [3.0], [5.0]]), np.array([0.0, 0.0, 2.0]), ["e"])
    np.testing.assert_array_equal(out["e"], [2.0, np.nan, 5.0])


@pytest.mark.parametrize(
    ("energy", "steps", "columns", "match"),
    [
        (np.zeros((3, 2)), np.zeros(3, int), ["a"], r"energy: expected shape \(rows, n_columns=1\), got \(3, 2\)"),
        (np.zeros((3, 1)), np.zeros(4, int), ["a"], r"steps: expected shape \(rows=3,\), got \(4,\)"),
        (np.zeros((2, 1)), np.array([0, -1]), ["a"], "steps: expected non-negative integers"),
        (np.zeros((2, 1)), np.array([0, 0.5]), ["a"], "steps: expected non-negative integers"),
        (np.zeros((2, 2)), np.zeros(2, int), ["a", "a"], "columns: expected distinct"),
        (np.zeros((2, 1)), np.zeros(2, int), ["steps"], "columns: expected distinct"),
    ],
)  # fmt: skip
def test_energy_over_steps_errors(energy, steps, columns, match) -> None:
    with pytest.raises(ValueError, match=match):
        an.energy_over_steps(energy, steps, columns)


# ---- ERPs ---------------------------------------------------------------------------------------
N_LAGS, N_UNITS = 7, 4


def _offset_epochs(rng: np.random.Generator) -> tuple[np.ndarray, list[str], dict[str, float]]:
    offsets = {"dev": 2.5, "std": -1.0, "ctr": 0.25}
    conditions = ["dev", "std", "ctr"] * 5
    epochs = np.stack([np.full((N_LAGS, N_UNITS), offsets[c]) for c in conditions])
    return epochs, conditions, offsets


def test_erp_constant_offsets_exact() -> None:
    epochs, conditions, offsets = _offset_epochs(np.random.default_rng(0))
    out = an.erp(epochs, conditions)
    assert sorted(out) == sorted(offsets)
    for c, off in offsets.items():
        np.testing.assert_allclose(out[c], np.full(N_LAGS, off * N_UNITS), rtol=0, atol=1e-12)
    w = np.array([0.5, 1.0, 2.0, 4.0])
    weighted = an.erp(epochs, conditions, weights=w)
    for c, off in offsets.items():
        np.testing.assert_allclose(weighted[c], np.full(N_LAGS, off * 7.5), rtol=0, atol=1e-12)


def test_erp_baseline_removes_per_epoch_constant() -> None:
    rng = np.random.default_rng(1)
    epochs, conditions, _ = _offset_epochs(rng)
    # a transient after lag 3 on top of a random per-epoch, per-unit constant
    transient = np.zeros((N_LAGS, N_UNITS))
    transient[3:] = 1.0
    shifted = epochs + transient + rng.normal(size=(len(epochs), 1, N_UNITS)) * 10
    out = an.erp(shifted, conditions, baseline=(0, 3))
    for c in out:
        np.testing.assert_allclose(out[c], transient.sum(axis=1), rtol=0, atol=1e-12)
    per_unit = an.erp_units(shifted, conditions, baseline=(0, 3))
    for c in per_unit:
        np.testing.assert_allclose(per_unit[c], transient, rtol=0, atol=1e-12)


def test_erp_matches_loop_and_units() -> None:
    rng = np.random.default_rng(2)
    epochs = rng.normal(size=(11, N_LAGS, N_UNITS))
    conditions = np.array([0, 1, 1, 2, 0, 2, 2, 1, 0, 0, 1])
    w = rng.uniform(0.5, 2.0, size=N_UNITS)
    out = an.erp(epochs, conditions, baseline=(1, 3), weights=w)
    units = an.erp_units(epochs, conditions, baseline=(1, 3))
    assert list(out) == ["0", "1", "2"]
    for k in range(3):
        rows = [e for e in range(11) if conditions[e] == k]
        want = np.zeros(N_LAGS)
        for e in rows:
            for u in range(N_UNITS):
                base = (epochs[e, 1, u] + epochs[e, 2, u]) / 2
                want += w[u] * (epochs[e, :, u] - base)
        np.testing.assert_allclose(out[str(k)], want / len(rows), rtol=0, atol=1e-12)
        assert units[str(k)].shape == (N_LAGS, N_UNITS)
        np.testing.assert_allclose(units[str(k)] @ w, out[str(k)], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": np.zeros((3, 4))}, r"epochs: expected shape \(n_epochs, n_lags, n_units\), got \(3, 4\)"),
        ({"conditions": ["a"] * 2}, r"conditions: expected shape \(n_epochs=3,\), got \(2,\)"),
        ({"weights": np.ones(3)}, r"weights: expected shape \(n_units=2,\), got \(3,\)"),
        ({"baseline": (2, 2)}, r"baseline: expected \(l0, l1\) with 0 <= l0 < l1 <= 4"),
        ({"baseline": (0, 5)}, r"baseline: expected \(l0, l1\) with 0 <= l0 < l1 <= 4"),
    ],
)  # fmt: skip
def test_erp_errors(kwargs: dict, match: str) -> None:
    args = {"epochs": np.zeros((3, 4, 2)), "conditions": ["a", "b", "a"], **kwargs}
    with pytest.raises(ValueError, match=match):
        an.erp(**args)


def test_difference_wave_and_errors() -> None:
    erps = {"dev": np.array([1.0, 4.0]), "std": np.array([0.5, 1.0])}
    np.testing.assert_array_equal(an.difference_wave(erps, "dev", "std"), [0.5, 3.0])
    with pytest.raises(
        ValueError, match=re.escape("b: no condition 'ctr'; available: ['dev', 'std']")
    ):
        an.difference_wave(erps, "dev", "ctr")
    with pytest.raises(ValueError, match=r"erps\['x'\]: expected shape \(2,\)"):
        an.difference_wave({**erps, "x": np.zeros(3)}, "dev", "x")


def test_peak() -> None:
    wave = np.array([0.0, 1.0, 3.0, 2.0, -4.0, 5.0, -1.0])
    assert an.peak(wave) == (5.0, 5)
    assert an.peak(wave, sign=-1) == (-4.0, 4)
    assert an.peak(wave, window=(0, 4)) == (3.0, 2)  # half-open: lag 4 excluded
    assert an.peak(wave, window=(5, 7), sign=-1) == (-1.0, 6)  # latency counts from lag 0
    assert an.peak(np.array([1.0, np.nan, 2.0])) == (2.0, 2)
    with pytest.raises(ValueError, match="sign: expected"):
        an.peak(wave, sign=0)
    with pytest.raises(ValueError, match=r"window: expected \(l0, l1\)"):
        an.peak(wave, window=(3, 3))
    with pytest.raises(ValueError, match=r"wave: expected shape \(n_lags,\), got \(2, 3\)"):
        an.peak(np.zeros((2, 3)))


# ---- mismatch indices ---------------------------------------------------------------------------
def test_mismatch_indices_hand_values() -> None:
    # DEV=3, STD=0, CTR=4: N = 5
    out = an.mismatch_indices(np.array([3.0, 2.0]), np.array([0.0, 1.0]), np.array([4.0, 2.0]))
    # second unit: N = sqrt(4 + 1 + 4) = 3
    np.testing.assert_allclose(out["iMM"], [0.6, 1 / 3], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["iPE"], [-0.2, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["iRS"], [0.8, 1 / 3], rtol=0, atol=1e-15)


def test_mismatch_identity_zero_and_bounds() -> None:
    rng = np.random.default_rng(3)
    dev, std, ctr = rng.uniform(0, 5, size=(3, 50))
    dev[0] = std[0] = ctr[0] = 0.0
    out = an.mismatch_indices(dev, std, ctr)
    np.testing.assert_allclose(out["iMM"], out["iPE"] + out["iRS"], rtol=0, atol=1e-15)
    for v in out.values():
        assert v[0] == 0.0 and np.all(np.abs(v) <= 1.0)
    with pytest.raises(
        ValueError, match=r"ctr: expected shape \(50,\) \(that of dev\), got \(49,\)"
    ):
        an.mismatch_indices(dev, std, ctr[:-1])


def test_ssa_index() -> None:
    np.testing.assert_allclose(
        an.ssa_index(np.array([3.0, 0.0, 1.0, 0.0]), np.array([1.0, 2.0, 1.0, 0.0])),
        [0.5, -1.0, 0.0, 0.0],
        rtol=0,
        atol=1e-15,
    )
    with pytest.raises(ValueError, match=r"std: expected shape \(2,\)"):
        an.ssa_index(np.ones(2), np.ones(3))


def test_repetition_curve() -> None:
    rep = np.array([2, 0, 1, 0, 2, 1, 0])
    resp = np.array([1.0, 10.0, 4.0, 8.0, 3.0, 6.0, 12.0])
    values, means = an.repetition_curve(resp, rep)
    np.testing.assert_array_equal(values, [0, 1, 2])
    np.testing.assert_allclose(means, [10.0, 5.0, 2.0], rtol=0, atol=1e-15)
    _, per_unit = an.repetition_curve(np.stack([resp, -resp], axis=1), rep)
    np.testing.assert_allclose(per_unit, [[10.0, -10.0], [5.0, -5.0], [2.0, -2.0]], atol=1e-15)
    with pytest.raises(ValueError, match=r"repetition: expected shape \(n_trials=7,\), got \(6,\)"):
        an.repetition_curve(resp, rep[:-1])


# ---- decoding -----------------------------------------------------------------------------------
N_TRIALS, N_STEPS, ONSET = 200, 10, 5


def _decoding_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two balanced classes; pure noise before step ONSET, then class means -/+1.5 on every unit
    (margin 3 sigma per unit, 8 units: essentially separable)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], N_TRIALS // 2)
    data = rng.normal(size=(N_TRIALS, N_STEPS, 8))
    data[:, ONSET:] += (1.5 * (2 * labels - 1))[:, None, None]
    return data, labels


def test_decode_over_steps_signal_and_chance() -> None:
    data, labels = _decoding_data()
    acc = an.decode_over_steps(data, labels, folds=5, ridge=1.0, seed=0)
    assert acc.shape == (N_STEPS,)
    assert np.all(acc[ONSET:] >= 0.98)
    # Under the null a step's pooled accuracy has mean 1/2 but is over-dispersed relative to
    # Binomial(200, 1/2) / 200 (sd 0.035): the test trials of a fold share one classifier, and
    # leaving them out pulls that classifier away from them. Over 3000 null datasets of this
    # design the sd was 0.045 (1.26x binomial; this data set's step 1 gives 0.30, a 4.4 sd
    # draw). So allow 4.5 x 1.5 x binomial sd per step, and sd / sqrt(5) for the mean of the
    # five independent noise steps.
    sd = 1.5 * np.sqrt(0.25 / N_TRIALS)
    assert np.all(np.abs(acc[:ONSET] - 0.5) <= 4.5 * sd), acc[:ONSET]
    assert abs(acc[:ONSET].mean() - 0.5) <= 4.5 * sd / np.sqrt(ONSET)


def test_temporal_generalisation_diagonal_and_structure() -> None:
    data, labels = _decoding_data()
    acc = an.decode_over_steps(data, labels, folds=4, ridge=0.5, seed=7)
    tg = an.temporal_generalisation(data, labels, folds=4, ridge=0.5, seed=7)
    assert tg.shape == (N_STEPS, N_STEPS)
    np.testing.assert_array_equal(np.diag(tg), acc)
    # the signal is stationary after onset, so it generalises across all signal steps
    assert np.all(tg[ONSET:, ONSET:] >= 0.98)
    # Signal-trained, tested on pure noise: each test trial's prediction is independent of its
    # label, and folds are balanced, so the accuracy is a sum of independent Bernoullis with mean
    # 1/2 and variance at most binomial: sd <= sqrt(1/4 / n). 4.5 sd per entry: false-alarm
    # probability ~7e-6 each.
    sd = np.sqrt(0.25 / N_TRIALS)
    assert np.all(np.abs(tg[ONSET:, :ONSET] - 0.5) <= 4.5 * sd), tg[ONSET:, :ONSET]


def test_decoding_deterministic_and_label_types() -> None:
    data, labels = _decoding_data(1)
    keep = np.r_[0:30, 100:130]  # 30 trials of each class, 3 steps
    data, labels = data[keep, :3], labels[keep]
    a = an.decode_over_steps(data, labels, seed=3)
    np.testing.assert_array_equal(a, an.decode_over_steps(data, labels, seed=3))
    # the same classes spelled as strings (same sort order) give the same folds and answers
    names = np.where(labels == 0, "a", "b")
    np.testing.assert_array_equal(a, an.decode_over_steps(data, names, seed=3))
    tg = an.temporal_generalisation(data, labels, seed=3)
    np.testing.assert_array_equal(tg, an.temporal_generalisation(data, labels, seed=3))


def test_stratified_folds_balanced() -> None:
    index = np.repeat([0, 1, 2], [10, 7, 3])
    fold = an._stratified_folds(index, 3, seed=0)
    for k, n in enumerate([10, 7, 3]):
        counts = np.bincount(fold[index == k], minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize(("n", "p"), [(30, 5), (6, 20)])  # primal and dual branches
@pytest.mark.parametrize("ridge", [0.0, 2.0])
def test_fit_ridge_matches_augmented_lstsq(n: int, p: int, ridge: float) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p)
    y = np.eye(3)[rng.integers(0, 3, size=n)]
    mean, scale, w, b = an._fit_ridge(x, y, ridge)
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(scale, x.std(0), atol=1e-12)
    z = (x - x.mean(0)) / x.std(0)
    # min |Y - [1 Z][b; W]|^2 + ridge |W|^2 as one least-squares system; the bias row is unpenalised
    design = np.block([[np.ones((n, 1)), z], [np.zeros((p, 1)), np.sqrt(ridge) * np.eye(p)]])
    target = np.vstack([y, np.zeros((p, 3))])
    sol = np.linalg.lstsq(design, target, rcond=None)[0]
    if ridge == 0 and p > n:  # underdetermined: compare fitted values (minimum norm differs by b)
        np.testing.assert_allclose(z @ w + b, np.hstack([np.ones((n, 1)), z]) @ sol, atol=1e-10)
    else:
        np.testing.assert_allclose(b, sol[0], atol=1e-10)
        np.testing.assert_allclose(w, sol[1:], atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data": np.zeros((8, 3))}, r"data: expected shape \(n_trials, n_steps, n_units\), got \(8, 3\)"),
        ({"labels": np.zeros(7)}, r"labels: expected shape \(n_trials=8,\), got \(7,\)"),
        ({"labels": np.zeros(8)}, "labels: expected >= 2 classes"),
        ({"labels": np.array([0] * 7 + [1])}, "labels: expected >= 2 classes with >= 2 trials"),
        ({"folds": 1}, "folds: expected 2 <= folds <= n_trials=8, got 1"),
        ({"folds": 9}, "folds: expected 2 <= folds <= n_trials=8, got 9"),
        ({"ridge": -1.0}, "ridge: expected >= 0"),
    ],
)  # fmt: skip
def test_decoding_errors(kwargs: dict, match: str) -> None:
    args = {"data": np.zeros((8, 2, 3)), "labels": np.repeat([0, 1], 4), **kwargs}
    for fn in (an.decode_over_steps, an.temporal_generalisation):
        with pytest.raises(ValueError, match=match):
            fn(**args)


# ---- RSA ----------------------------------------------------------------------------------------
def test_rdm_against_scipy_and_numpy() -> None:
    rng = np.random.default_rng(5)
    p = rng.normal(size=(6, 9))
    np.testing.assert_allclose(an.rdm(p, "euclidean"), cdist(p, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(an.rdm(p, "sqeuclidean"), cdist(p, p) ** 2, rtol=0, atol=1e-12)
    d = an.rdm(p)
    np.testing.assert_allclose(d, 1 - np.corrcoef(p), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    # scaling and shifting a pattern leaves its correlations alone; negating it gives 2 - d
    q = p.copy()
    q[0] = 3 * p[0] + 1
    np.testing.assert_allclose(an.rdm(q), d, atol=1e-12)
    q[0] = -p[0]
    np.testing.assert_allclose(an.rdm(q)[0, 1:], 2 - d[0, 1:], atol=1e-12)


def test_rdm_flat_pattern_and_errors() -> None:
    p = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [3.0, 1.0, 0.0]])
    d = an.rdm(p)
    assert np.all(np.isnan(d[1])) and np.all(np.isnan(d[:, 1]))
    assert d[0, 0] == 0.0 and d[0, 2] == pytest.approx(1 - np.corrcoef(p[0], p[2])[0, 1])
    with pytest.raises(
        ValueError, match="method: unknown 'cosine'; valid: correlation, euclidean, sqeuclidean"
    ):
        an.rdm(p, "cosine")
    with pytest.raises(
        ValueError, match=r"patterns: expected shape \(n_conditions, n_units\), got \(3,\)"
    ):
        an.rdm(p[0])


def test_rdms_by_population_and_condition_patterns() -> None:
    rng = np.random.default_rng(6)
    data = rng.normal(size=(12, 5))
    conds = np.array(["b", "a", "c"] * 4)
    labels, pats = an.condition_patterns(data, conds)
    np.testing.assert_array_equal(labels, ["a", "b", "c"])
    for i, c in enumerate(labels):
        np.testing.assert_allclose(pats[i], data[conds == c].sum(0) / 4, rtol=0, atol=1e-15)
    out = an.rdms_by_population({"h1": pats, "h2": pats[:, :3]}, "euclidean")
    np.testing.assert_allclose(out["h2"], cdist(pats[:, :3], pats[:, :3]), atol=1e-12)
    with pytest.raises(ValueError, match=r"patterns\['h2'\]: expected shape"):
        an.rdms_by_population({"h1": pats, "h2": pats[0]})
    with pytest.raises(
        ValueError, match=r"conditions: expected shape \(n_trials=12,\), got \(3,\)"
    ):
        an.condition_patterns(data, conds[:3])


def test_compare_rdms() -> None:
    rng = np.random.default_rng(7)
    d = an.rdm(rng.normal(size=(7, 10)), "euclidean")
    for m in an.COMPARE_METHODS:
        assert an.compare_rdms(d, d, m) == pytest.approx(1.0, abs=1e-12)
    # a strictly monotone transform keeps the rank order but not linearity
    assert an.compare_rdms(d, d**3, "spearman") == pytest.approx(1.0, abs=1e-12)
    assert an.compare_rdms(d, d**3, "kendall") == pytest.approx(1.0, abs=1e-12)
    assert an.compare_rdms(d, d**3, "pearson") < 1 - 1e-3
    # reversing the order gives -1 for the rank correlations
    assert an.compare_rdms(d, -d, "spearman") == pytest.approx(-1.0, abs=1e-12)
    # hand-computed Pearson: upper triangles (1, 2, 3) and (1, 3, 2) have r = 0.5
    a = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=float)
    b = np.array([[0, 1, 3], [1, 0, 2], [3, 2, 0]], dtype=float)
    assert an.compare_rdms(a, b, "pearson") == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(
        ValueError, match="method: unknown 'cosine'; valid: spearman, pearson, kendall"
    ):
        an.compare_rdms(a, b, "cosine")
    with pytest.raises(ValueError, match=r"a: expected shape \(n, n\) with n >= 3, got \(2, 3\)"):
        an.compare_rdms(a[:2], b)
    with pytest.raises(ValueError, match=r"b: expected shape \(3, 3\) \(that of a\), got \(4, 4\)"):
        an.compare_rdms(a, np.eye(4))
