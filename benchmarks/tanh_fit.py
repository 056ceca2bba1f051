"""Where the float32 tanh of the numba kernels and of compiled CPU graphs comes from, and its error.

``tanh(x) ~ x P(x^2) / Q(x^2)`` on ``|x| <= 9`` (beyond, float32 tanh is within an ulp of +-1),
with ``P`` of degree 4 and ``Q`` of degree 4 (``Q(0) = 1``): a near-minimax fit of the relative
error by Lawson's iteration (weighted least squares of the linearised residual ``x P - tanh(x)
Q``, the weights multiplied by the error each round), in the scaled variable ``(x / 9)^2`` for
conditioning. Its error in exact arithmetic is about 2e-8 (a third of a float32 ulp); the
float32 evaluation (Horner with fused multiply-adds, one division) brings the total to about 5
ulp.

    python benchmarks/tanh_fit.py            # the coefficients, then the kernel's accuracy and speed

Prints the coefficients as they appear in ``neuropc/model/activations.py`` (``TANH_P``,
``TANH_Q``, shared by the numba kernels and the torch backend's compiled CPU graphs), then the
compiled kernel's largest and mean error in float32 ulps over every third float32 in [2^-12,
9.5] against float64 ``np.tanh``, and its ns per element beside numpy's float32 ``np.tanh`` on
the same block (a (64, 256) block of the standard task's hidden layers).
"""

from __future__ import annotations

import time

import numpy as np

CLAMP = 9.0
DEG_P, DEG_Q = 4, 4


def fit(deg_p: int = DEG_P, deg_q: int = DEG_Q, rounds: int = 400) -> tuple[np.ndarray, ...]:
    """Coefficients ``(p, q)`` in powers of ``s = x^2`` (``q[0] = 1``) and the largest relative
    error of the fit in float64."""
    x = np.concatenate([np.linspace(1e-3, CLAMP, 40000), np.geomspace(1e-7, 1e-3, 400)])
    t = np.tanh(x)
    u = (x / CLAMP) ** 2
    A = np.hstack([np.stack([x * u**i for i in range(deg_p + 1)], 1),
                   np.stack([-t * u**j for j in range(1, deg_q + 1)], 1)])  # fmt: skip
    w = np.ones_like(x)
    best = (np.inf, None, None)
    for _ in range(rounds):
        sol = np.linalg.lstsq(A * (w / t)[:, None], w, rcond=None)[0]
        p, q = sol[: deg_p + 1], np.concatenate([[1.0], sol[deg_p + 1 :]])
        err = np.abs(x * np.polyval(p[::-1], u) / np.polyval(q[::-1], u) / t - 1.0)
        if err.max() < best[0]:
            best = (err.max(), p, q)
        w = np.maximum(w * np.sqrt(err), 1e-300)
        w /= w.sum()
    e, p, q = best
    scale = CLAMP ** (-2.0 * np.arange(max(deg_p, deg_q) + 1))
    return p * scale[: deg_p + 1], q * scale[: deg_q + 1], e


def accuracy() -> tuple[float, float]:
    """The kernel's largest and mean error in float32 ulps (every third float32 in
    [2^-12, 9.5] against float64 ``np.tanh``)."""
    from neuropc.backends._numba_kernels import _tanh_rows

    lo, hi = np.array([2.0**-12, 9.5], np.float32).view(np.int32)
    x = np.arange(lo, hi, 3, dtype=np.int32).view(np.float32).reshape(1, -1)
    f, d = np.empty_like(x), np.empty_like(x)
    _tanh_rows(x, f, d, 0, x.shape[1])
    ref = np.tanh(x[0].astype(np.float64))
    ulps = np.abs(f[0] - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return float(ulps.max()), float(ulps.mean())


def speed(repeats: int = 5000) -> tuple[float, float]:
    """ns per element of the kernel (tanh and its derivative) and of numpy's float32 tanh."""
    from neuropc.backends._numba_kernels import _tanh_rows

    x = (np.random.default_rng(0).standard_normal((64, 256)) * 2).astype(np.float32)
    f, d = np.empty_like(x), np.empty_like(x)
    out = []
    for fn in (lambda: _tanh_rows(x, f, d, 0, 256), lambda: np.tanh(x, out=f)):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append((time.perf_counter() - t0) / repeats / x.size * 1e9)
    return out[0], out[1]


if __name__ == "__main__":
    p, q, e = fit()
    print(f"fit: largest relative error {e:.3g} (float64)")
    print("TANH_P =", tuple(float(np.float32(c)) for c in p))
    print("TANH_Q =", tuple(float(np.float32(c)) for c in q))
    worst, mean = accuracy()
    print(f"kernel: largest error {worst:.2f} ulp, mean {mean:.3f} ulp")
    ours, numpy_ = speed()
    print(f"kernel {ours:.3f} ns/element (tanh and 1 - tanh^2); numpy float32 tanh {numpy_:.3f}")
