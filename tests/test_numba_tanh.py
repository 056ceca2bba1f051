"""The numba kernels' tanh (``_numba_kernels._tanh_rows``: tanh and its derivative), against
float64 ``np.tanh`` as the oracle, in units in the last place of the kernel's precision. float32
is a rational fit (benchmarks/tanh_fit.py derives it), float64 an exp form; both are specified to
a few ulp (float32 within 6, float64 within 8), with exact saturation, symmetry and special values."""

from __future__ import annotations

import numpy as np
import pytest

from neuropc.backends._numba_kernels import _tanh_rows


def _tanh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x).reshape(1, -1)
    f, d = np.empty_like(x), np.empty_like(x)
    _tanh_rows(x, f, d, 0, x.shape[1])
    return f[0], d[0]


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    ref = np.tanh(x.astype(np.float64) if x.dtype == np.float32 else x)
    if x.dtype == np.float32:
        return np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    # float64: the reference's own rounding (np.tanh is within 1 ulp) is part of the bound
    return np.abs(got - ref) / np.spacing(np.abs(ref))


def test_float32_within_6_ulp():
    """Every third float32 from 2^-12 to 9.5 (about 120 million values / 3), both signs."""
    lo, hi = np.array([2.0**-12, 9.5], np.float32).view(np.int32)
    x = np.arange(lo, hi, 3, dtype=np.int32).view(np.float32)
    f, d = _tanh(x)
    assert _ulps(f, x).max() <= 6.0
    np.testing.assert_array_equal(_tanh(-x)[0], -f)  # odd, exactly
    np.testing.assert_array_equal(d, np.float32(1.0) - f * f)


def test_float64_within_8_ulp():
    """(6 measured: the exp form's expm1 and division; 8 ulp is 1.8e-15 relative, far inside the
    1e-10 that the float64 kernels must match torch to.)"""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 21, 2_000_000), np.geomspace(1e-300, 1e-3, 10_000)])
    f, d = _tanh(x)
    assert _ulps(f, x).max() <= 8.0
    np.testing.assert_array_equal(_tanh(-x)[0], -f)
    np.testing.assert_array_equal(d, 1.0 - f * f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 9.0, 20.0, -20.0, 1e30, np.inf, -np.inf, np.nan], dtype)
    f, d = _tanh(x)
    np.testing.assert_array_equal(f[:4], x[:4])  # tanh(x) = x below the rounding of x^3 / 3
    assert np.signbit(f[1])
    np.testing.assert_array_equal(f[5:10], np.sign(x[5:10]))  # saturated: exactly +-1
    np.testing.assert_array_equal(d[5:10], 0.0)
    assert np.isnan(f[10]) and np.isnan(d[10])
    if dtype == np.float32:
        assert f[4] == 1.0  # float32 tanh(9) rounds to 1
