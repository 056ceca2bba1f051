"""The numba backend's standard-normal generator (``neuropc.backends._normal``): the Langevin noise.

Oracles: the exact moments of N(0, 1) (mean 0, variance 1, skewness 0, excess kurtosis 0) and its
tail probabilities (scipy), each checked within 5 standard errors of its estimate over 10^6 draws;
a Kolmogorov-Smirnov test against ``scipy.stats.norm``; zero lag-1 autocorrelation and zero
correlation between the two outputs of a Box-Muller pair, and between streams of different
counters or seeds; numpy's libm for the logarithm, sine and cosine helpers. All draws are fixed
(key, counter), so every check is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neuropc.backends import _normal as N

DRAWS = 10**6


def _normals(dtype, seed: int = 3, counter: int = 0, n: int = DRAWS) -> np.ndarray:
    out = np.empty(n, dtype)
    nxt = N.fill_normal(out, np.uint64(N.key_from_seed(seed)), np.uint64(counter))
    assert int(nxt) == counter + (n + 1) // 2  # one 64-bit word per pair of normals
    return out


def _within(est: float, exact: float, se: float) -> None:
    assert abs(est - exact) <= 5 * se, f"{est} vs {exact} (5 SE = {5 * se})"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module", params=[np.float64, np.float32], ids=["float64", "float32"])
def z(request) -> np.ndarray:
    out = _normals(request.param)
    assert out.dtype == request.param and np.all(np.isfinite(out))
    return out.astype(np.float64)


def test_moments(z: np.ndarray) -> None:
    n = len(z)
    _within(z.mean(), 0.0, 1 / np.sqrt(n))
    _within(z.var(), 1.0, np.sqrt(2 / n))
    _within(float(stats.skew(z)), 0.0, np.sqrt(6 / n))
    _within(float(stats.kurtosis(z)), 0.0, np.sqrt(24 / n))  # excess kurtosis


def test_kolmogorov_smirnov(z: np.ndarray) -> None:
    assert stats.kstest(z, stats.norm.cdf).pvalue > 1e-3


@pytest.mark.parametrize("c", [3.0, 4.0])
def test_tails(z: np.ndarray, c: float) -> None:
    p = 2 * stats.norm.sf(c)
    _within(float(np.mean(np.abs(z) > c)), p, np.sqrt(p * (1 - p) / len(z)))


def test_no_correlations(z: np.ndarray) -> None:
    se = 1 / np.sqrt(len(z))
    _within(_corr(z[:-1], z[1:]), 0.0, se)  # lag 1
    half = len(z) // 2  # word i gives out[i] and out[half + i]: the two outputs of one pair
    _within(_corr(z[:half], z[half : 2 * half]), 0.0, np.sqrt(2) * se)
    _within(_corr(z[:half] ** 2, z[half : 2 * half] ** 2), 0.0, np.sqrt(2) * se)  # shared radius


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_key_and_counter_give_the_same_bits(dtype) -> None:
    a, b = _normals(dtype, counter=7, n=10_001), _normals(dtype, counter=7, n=10_001)
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_counters_and_seeds_give_other_streams(dtype) -> None:
    n = 200_000
    base = _normals(dtype, n=n)
    after = _normals(dtype, counter=n // 2, n=n)  # the next range of words of the same stream
    seed = _normals(dtype, seed=4, n=n)  # a nearby seed
    for o in (after, seed):
        _within(_corr(base, o), 0.0, 1 / np.sqrt(n))
        if dtype == np.float64:  # no value in common (float32 values may coincide by chance)
            assert np.intersect1d(base, o).size == 0
    # a counter is a position in the stream: one word on, the same values one place on
    shifted = _normals(dtype, counter=1, n=n)
    np.testing.assert_array_equal(shifted[: n // 2 - 1], base[1 : n // 2])
    assert not np.any(shifted[: n // 2] == base[: n // 2]) or dtype == np.float32
    assert len({N.key_from_seed(s) for s in range(1000)}) == 1000


def test_odd_lengths_and_the_word_layout() -> None:
    """Word ``counter + i`` gives out[i] and out[n // 2 + i]; an odd length takes one more word,
    whose first normal is the last value."""
    for dtype in (np.float64, np.float32):
        odd = _normals(dtype, counter=11, n=2 * 500 + 1)
        np.testing.assert_array_equal(odd[:-1], _normals(dtype, counter=11, n=1000))
        assert odd[-1] == _normals(dtype, counter=11 + 500, n=2)[0]
        one = _normals(dtype, counter=11 + 500, n=1)
        assert one[0] == odd[-1]


def test_log_helpers_against_libm() -> None:
    x = np.concatenate([np.geomspace(1e-300, 1e300, 20_001), np.linspace(0.5, 2.0, 20_001),
                        [2.0**-33, 1.0 - 2.0**-52, 1.0, 1.0 + 2.0**-52, np.sqrt(2), np.sqrt(0.5)]])  # fmt: skip
    got = np.array([N.log64(float(v)) for v in x])
    ref = np.log(x)
    assert np.all(np.abs(got - ref) <= 1e-9 * np.abs(ref) + 1e-15)
    x32 = np.geomspace(1e-37, 1e37, 20_001).astype(np.float32)
    got32 = np.array([N.log32(v) for v in x32], np.float64)
    ref32 = np.log(x32.astype(np.float64))
    assert np.all(np.abs(got32 - ref32) <= 3e-7 * np.abs(ref32) + 1e-7)


def test_sincos_helpers_against_libm() -> None:
    phi = np.linspace(-np.pi / 4, np.pi / 4, 20_001)
    got = np.array([N.sincos64(float(p)) for p in phi])
    np.testing.assert_allclose(got[:, 0], np.sin(phi), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], np.cos(phi), rtol=0, atol=1e-9)
    got32 = np.array([N.sincos32(np.float32(p)) for p in phi], np.float64)
    p32 = phi.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(got32[:, 0], np.sin(p32), rtol=0, atol=3e-7)
    np.testing.assert_allclose(got32[:, 1], np.cos(p32), rtol=0, atol=3e-7)


def test_the_angle_of_a_word_covers_the_circle() -> None:
    """A 32-bit word stands for theta = phi + q pi/2: quadrant q = its top two bits, phi in
    (-pi/4, pi/4) from the other 30 (module docstring of _normal)."""
    b = np.unique(np.linspace(0, 2**32 - 1, 20_001).astype(np.uint64))
    q = b >> np.uint64(30)
    phi = ((b & np.uint64(0x3FFFFFFF)).astype(np.float64) + 0.5) * 2.0**-30 - 0.5
    theta = phi * (np.pi / 2) + q.astype(np.float64) * (np.pi / 2)
    got = np.array([N.circle64(int(v)) for v in b])
    np.testing.assert_allclose(got[:, 0], np.cos(theta), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], np.sin(theta), rtol=0, atol=1e-9)
    got32 = np.array([N.circle32(int(v)) for v in b], np.float64)
    np.testing.assert_allclose(got32[:, 0], np.cos(theta), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got32[:, 1], np.sin(theta), rtol=0, atol=1e-6)


def test_float32_normals_agree_with_float64_ones() -> None:
    """Same words, float32 arithmetic: float32 rounding, except that u = (a + 1/2) 2^-32 near 1
    rounds to a float32 (by up to 2^-25), which moves a small radius r by up to 2^-25 / r."""
    key, n = np.uint64(N.key_from_seed(5)), 1_000_000
    z64, z32 = np.empty(n), np.empty(n, np.float32)
    N.fill_normal(z64, key, np.uint64(0))
    N.fill_normal(z32, key, np.uint64(0))
    r = np.hypot(z64[: n // 2], z64[n // 2 :])
    r = np.concatenate([r, r])
    assert np.all(np.abs(z32 - z64) <= 2e-6 * (1 + np.abs(z64)) + 2.0**-25 / r)


@pytest.mark.parametrize("n", [2, 128, 130, 4096, 4098, 7, 129])
def test_rows_are_fill_normal_of_each_row(n) -> None:
    """``fill_normal_rows``: row r of a block from row0 is ``fill_normal`` of its own n values from
    word ``counter + (row0 + r) ceil(n / 2)`` (the oracle: one call per row), whether the block's
    rows are filled in passes over many rows (even n up to 4096) or one by one (odd n, longer
    rows); several passes (70 rows of 128 span three)."""
    key, counter, row0, rows = N.key_from_seed(9), np.uint64(5), 3, 70 if n <= 130 else 3
    for dtype in (np.float32, np.float64):
        got = np.empty(rows * n, dtype)
        N.fill_normal_rows(got, n, row0, key, counter, 0.5)
        words = (n + 1) // 2
        for r in range(rows):
            row = np.empty(n, dtype)
            N.fill_normal(row, key, counter + np.uint64((row0 + r) * words), 0.5)
            np.testing.assert_array_equal(got[r * n : (r + 1) * n], row)
