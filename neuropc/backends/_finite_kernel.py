"""The compiled loops of :func:`neuropc.finite.all_finite`: how many entries of a C-contiguous
float array are NaN or +-inf. Such an entry has every exponent bit set (IEEE 754), so the test is
an integer comparison on the entry's bits, summed as integers: it vectorises without
reassociating float arithmetic."""

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
