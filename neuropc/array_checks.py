"""Whole-array checks of user data, each one compiled pass: every entry finite
(:func:`all_finite`), rows on the probability simplex (:func:`first_row_off_simplex`).

Why compiled: numpy's versions are right, but every learning batch pays for them right after a
long numba kernel, whose code and data have evicted numpy's from the caches. There the first numpy
reduction of a batch costs about 12 us more than it does warm, and each one is a pass of its own
(with a temporary array for ``isfinite``): the standard task's input check took 32 us a batch,
the Categorical target's 13 us, 1-2% of the batch each (docs/performance.md, issue 14, sixth
round). The compiled loops are kernels (``neuropc.backends._check_kernels``); numba is imported
on their first use (``import neuropc`` does not import it).

NaN and +-inf are the floats whose exponent bits are all set (IEEE 754), so finiteness is an
integer test on the bits, summed as integers: a loop that vectorises without reassociating any
float sum."""

from __future__ import annotations

import numpy as np

# entries: below this, numpy's check. Warm, numpy's costs about as much as the compiled call up
# to some 16k entries; but in a learning batch it runs cold, right after the batch's kernels:
# there the compiled check of a 128 x 10 target took 30 us less (1% of a compiled torch batch of
# the standard task, docs/performance.md, issue 14, eighth round)
LARGE = 64
_kernels = None


def all_finite(a: np.ndarray) -> bool:
    """``np.all(np.isfinite(a))`` for a numpy array of any dtype (integers are finite)."""
    kind = a.dtype.kind
    if kind != "f":
        return kind in "iub" or bool(np.all(np.isfinite(a)))
    width = a.dtype.itemsize
    if a.size >= LARGE and width in (4, 8) and a.flags.c_contiguous and a.dtype.isnative:
        return _compiled().count_nonfinite(a) == 0
    return bool(np.all(np.isfinite(a)))


def first_row_off_simplex(a: np.ndarray, tol: float = 1e-6) -> int:
    """The first row of the finite 2-D array ``a`` with a negative entry or whose sum (added in
    float64, in order) is off 1 by more than ``tol``; -1 when every row is a distribution."""
    if a.dtype.kind != "f" or not a.dtype.isnative or a.dtype.itemsize not in (4, 8):
        a = np.asarray(a, np.float64)
    return int(_compiled().first_row_off_simplex(np.ascontiguousarray(a), float(tol)))


def _compiled():
    """The kernels' module (imported on first use)."""
    global _kernels
    if _kernels is None:
        from .backends import _check_kernels

        _kernels = _check_kernels
    return _kernels
