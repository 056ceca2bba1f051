"""The compiled loops of :mod:`neuropc.array_checks`: finiteness on the bits (every exponent bit
set: NaN or +-inf, an integer comparison summed as integers, which vectorises without
reassociating float arithmetic) and the probability simplex, row by row."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._simd import prefer_512

_JIT = dict(cache=True, nogil=True)


@nb.njit(**_JIT)
def count_nonfinite32(a):
    """float32 entries of ``a`` (any shape, C order) that are NaN or +-inf."""
    prefer_512()
    bits = a.reshape(a.size).view(np.uint32)
    e = np.uint32(0x7F800000)
    n = 0
    for i in range(bits.size):
        n += (bits[i] & e) == e
    return n


@nb.njit(**_JIT)
def count_nonfinite64(a):
    """float64 entries of ``a`` (any shape, C order) that are NaN or +-inf."""
    prefer_512()
    bits = a.reshape(a.size).view(np.uint64)
    e = np.uint64(0x7FF0000000000000)
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
