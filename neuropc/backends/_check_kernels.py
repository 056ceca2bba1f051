"""The compiled loops of :mod:`neuropc.array_checks`: finiteness on the bits (every exponent bit
set: NaN or +-inf, an integer comparison summed as integers, which vectorises without
reassociating float arithmetic) and the probability simplex, row by row."""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import overload

from ._simd import prefer_512

_JIT = dict(cache=True, nogil=True)


def _bits(a):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_bits)
def _bits_impl(a):
    """The entries of the float array ``a`` as unsigned integers of their width (a view), and the
    mask of their exponent bits."""
    if a.dtype == types.float32:
        return lambda a: (a.reshape(a.size).view(np.uint32), np.uint32(0x7F800000))
    if a.dtype == types.float64:
        return lambda a: (a.reshape(a.size).view(np.uint64), np.uint64(0x7FF0000000000000))
    return None


@nb.njit(**_JIT)
def count_nonfinite(a):
    """Entries of the float32 or float64 array ``a`` (any shape, C order) that are NaN or +-inf."""
    prefer_512()
    bits, e = _bits(a)
    n = 0
    for i in range(bits.size):
        n += (bits[i] & e) == e
    return n


@nb.njit(**_JIT)
def first_row_off_simplex(a, tol):
    """The first row of the 2-D C-order ``a`` with a negative entry or a sum (float64, in order)
    off 1 by more than ``tol``; -1 if there is none."""
    for r in range(a.shape[0]):
        s = 0.0
        low = 0.0
        for j in range(a.shape[1]):
            v = a[r, j]
            s += v
            low = min(low, v)
        if low < 0.0 or abs(s - 1.0) > tol:
            return r
    return -1
