"""neuropc.array_checks.all_finite against numpy's isfinite (the oracle), on arrays large enough for
the compiled route: every IEEE special at every kind of position, both float widths, layouts the
compiled route refuses, integers."""

import numpy as np
import pytest

from neuropc.array_checks import LARGE, all_finite, first_row_off_simplex

SPECIALS = [np.nan, np.inf, -np.inf]
# finite edge values: the largest finite, the smallest subnormal, negative zero
EDGES = {np.float32: [np.finfo(np.float32).max, np.float32(1e-45), -0.0],
         np.float64: [np.finfo(np.float64).max, 5e-324, -0.0]}  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_special_at_every_position(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, LARGE // 32)).astype(dtype)
    a.flat[rng.integers(0, a.size, 50)] = rng.choice(EDGES[dtype], 50)
    assert all_finite(a) is True
    for v in SPECIALS:
        for i in (0, 1, a.size // 2, a.size - 1):  # first, second, middle, last entry
            b = a.copy()
            b.flat[i] = v
            assert all_finite(b) == bool(np.all(np.isfinite(b))) is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_payloads_and_signs(dtype):
    """NaNs with other payloads and the sign bit set are NaNs too (exponent all ones)."""
    u = np.uint32 if dtype == np.float32 else np.uint64
    bits = np.zeros(LARGE, u)
    top = u(0x7FC00001) if dtype == np.float32 else u(0x7FF8000000000001)
    sign = u(0x80000000) if dtype == np.float32 else u(0x8000000000000000)
    bits[7] = top | sign
    a = bits.view(dtype)
    assert np.isnan(a[7]) and all_finite(a) is False


@pytest.mark.parametrize("make", [
    lambda a: a[:, ::2],  # strided
    lambda a: a.T,  # Fortran order
    lambda a: a.ravel()[:8],  # small
    lambda a: a.astype(np.float16),  # a width without a compiled route
    lambda a: a.astype(">f4"),  # big-endian (numba takes native byte order only)
])  # fmt: skip
def test_other_layouts_agree(make):
    a = np.random.default_rng(1).standard_normal((128, 512)).astype(np.float32)
    for v in (None, np.nan):
        b = a.copy()
        if v is not None:
            b[2, 4] = v
        c = make(b)
        assert all_finite(c) == bool(np.all(np.isfinite(c)))


def test_integers_and_booleans_are_finite():
    assert all_finite(np.arange(LARGE * 2)) is True
    assert all_finite(np.ones(5, bool)) is True


def _off_simplex_oracle(a: np.ndarray, tol: float) -> int:
    """Row by row in Python: a negative entry, or a sum (math.fsum, exactly rounded) off 1."""
    import math

    for r, row in enumerate(np.asarray(a, np.float64)):
        if min(row) < 0 or abs(math.fsum(row) - 1.0) > tol:
            return r
    return -1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simplex_rows_against_a_row_by_row_oracle(dtype):
    rng = np.random.default_rng(2)
    good = rng.dirichlet(np.ones(10), 128)
    good[::7] = np.eye(10)[rng.integers(0, 10, len(good[::7]))]  # one-hot rows too
    a = good.astype(dtype)
    assert first_row_off_simplex(a) == _off_simplex_oracle(a, 1e-6) == -1
    for r in (0, 63, 127):
        for bad in ("negative", "sum high", "sum low"):
            b = good.copy()
            if bad == "negative":
                b[r, 3], b[r, 4] = -0.25, b[r, 4] + b[r, 3] + 0.25  # sum still 1
            else:
                b[r] *= 1 + 1e-4 if bad == "sum high" else 1 - 1e-4
            b = b.astype(dtype)
            assert first_row_off_simplex(b) == _off_simplex_oracle(b, 1e-6) == r, (r, bad)


def test_simplex_tolerance_and_other_inputs():
    row = np.full((1, 4), 0.25)
    for off, want in ((5e-7, -1), (2e-6, 0)):
        b = row.copy()
        b[0, 0] += off
        assert first_row_off_simplex(b) == want
    assert first_row_off_simplex(np.array([[0, 1], [1, 0]], np.int64)) == -1  # integers
    assert first_row_off_simplex(np.eye(3, dtype=np.float16)[:, ::-1]) == -1  # strided, f16
    assert first_row_off_simplex(np.array([[-0.0, 1.0]])) == -1  # negative zero is not < 0
