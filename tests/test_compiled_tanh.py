"""The tanh that the torch backend's graphs compiled for the CPU compute
(``Activation.torch_forward`` under ``torch.compile``), against float64 ``np.tanh`` as the
oracle, in units in the last place of the graph's precision. float32 is the rational fit that the
numba kernels use too (``activations.TANH_P``, ``TANH_Q``; benchmarks/tanh_fit.py), within 6 ulp
with exact saturation at ``|x| >= 9``; float64 is inductor's own tanh, within 2 ulp (1 for the
vectorised tanh, 1 for the oracle's rounding). Both are odd exactly and keep NaN, infinities and
signed zeros. Eager runs call ``torch.tanh`` itself."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _cxx

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not _cxx(), reason="no C++ compiler for torch.compile")


def _compiled_tanh(x: np.ndarray) -> np.ndarray:
    from neuropc.model.activations import get

    act = get("tanh")
    fn = torch.compile(lambda t: act.torch_forward(t)[0], dynamic=False, fullgraph=True)
    with torch.inference_mode():
        return fn(torch.from_numpy(x)).numpy()


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    ref = np.tanh(x.astype(np.float64))
    return np.abs(got - ref) / np.spacing(np.abs(ref).astype(x.dtype)).astype(np.float64)


def test_float32_rational_within_6_ulp():
    """Every 97th float32 from 2^-12 to 9.5 (about 1.3 million values), both signs in one call
    (the same graph)."""
    lo, hi = np.array([2.0**-12, 9.5], np.float32).view(np.int32)
    x = np.arange(lo, hi, 97, dtype=np.int32).view(np.float32)
    f = _compiled_tanh(np.concatenate([x, -x]))
    pos, neg = f[: len(x)], f[len(x) :]
    assert _ulps(pos, x).max() <= 6.0
    np.testing.assert_array_equal(neg, -pos)  # odd, exactly
    # the fit, not torch.tanh: the rational form differs from it somewhere in this range
    assert np.any(pos != torch.tanh(torch.from_numpy(x)).numpy())


def test_float64_within_2_ulp():
    """Down to 1e-300: the expm1 form used before lost every digit there (inductor computes
    expm1 as ``exp(y) - 1``), and hundreds of ulp at 1e-3."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 21, 200_000), np.geomspace(1e-300, 1e-3, 10_000)])
    f = _compiled_tanh(np.concatenate([x, -x]))
    pos, neg = f[: len(x)], f[len(x) :]
    assert _ulps(pos, x).max() <= 2.0
    np.testing.assert_array_equal(neg, -pos)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_and_saturation(dtype):
    """Saturated: the fits return +-1 from 9 on (float32 tanh rounds to +-1 from 9.01), float64
    tanh from about 19.1."""
    big = 9.0 if dtype == np.float32 else 19.5
    x = np.array([np.nan, np.inf, -np.inf, big, -big, 25.0, -30.0, 0.0, -0.0, 1e-30], dtype)
    f = _compiled_tanh(x)
    assert np.isnan(f[0])
    np.testing.assert_array_equal(f[1:7], np.array([1, -1, 1, -1, 1, -1], dtype))
    assert f[7] == 0 and not np.signbit(f[7]) and f[8] == 0 and np.signbit(f[8])
    assert f[9] == dtype(1e-30)
