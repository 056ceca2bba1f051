"""A fast, deterministic, vectorisable standard-normal generator for the numba kernels.

Why not ``np.random.standard_normal`` inside numba: numba draws one scalar at a time (the polar
method, with rejection: ~22 ns per draw on the benchmark machine) from a hidden global state, so
a loop that calls it can neither vectorise nor be reproduced apart from every other draw of the
process. Why not libm: numba has no SVML on these machines, so ``np.log`` / ``np.sin`` /
``np.cos`` are scalar libm calls that stop LLVM from vectorising the loop around them. Everything
below is integer arithmetic, ``+ - * /``, ``sqrt``, selects and bit casts, which LLVM turns into
SIMD code (64-bit multiplies included, on AVX-512DQ).

Bits: a counter-based generator. Word ``i`` of the stream with key ``k`` is

    h_i = mix(k + i G)  (mod 2^64),   G = 0x9E3779B97F4A7C15 (2^64 / golden ratio, odd),

with ``mix`` the splitmix64 finaliser (Steele, Lea & Flood 2014, the output function of
``java.util.SplittableRandom``; a bijection with full avalanche)::

    z ^= z >> 30;  z *= 0xBF58476D1CE4E5B9;  z ^= z >> 27;  z *= 0x94D049BB133111EB;  z ^= z >> 31

``i -> k + i G`` is a bijection of the 64-bit integers, so a stream does not repeat within 2^64
words. A run's key is ``mix(seed + G)``; every call of :func:`fill_normal` consumes a range of
counters and returns where the next range starts, so the draws of one run never overlap, and the
same (key, counter) gives bit-identical values on every call and in every process (on the same
CPU: the compiled code may fuse multiply-adds differently on another).

Normals: Box-Muller on the high and low 32-bit halves ``a``, ``b`` of a word::

    u = (a + 1/2) 2^-32 in (0, 1),   r = sqrt(-2 ln u),   (z0, z1) = r (cos theta, sin theta),

theta uniform on the circle: the top two bits of ``b`` pick the quadrant ``q`` and its other 30
bits the angle within it, ``phi = (((b mod 2^30) + 1/2) 2^-30 - 1/2) pi/2`` in (-pi/4, pi/4), and
``theta = phi + q pi/2``, so ``(cos theta, sin theta)`` is ``(cos phi, sin phi)`` turned by q
quarter turns: a swap when q is odd, and sign-bit flips (:func:`circle64`). z0, z1 are independent
N(0, 1) up to the 2^-32 grid of u: |z| <= sqrt(2 ln 2^33) = 6.76, a cut tail of probability
1.4e-11 (cuRAND's Box-Muller uses the same 32-bit uniforms). :func:`fill_normal` puts the pair of
word ``counter + i`` at ``out[i]`` and ``out[n // 2 + i]``.

Logarithm (:func:`log64`), for a positive normal double x: ``x = 2^e m`` with m in [sqrt(1/2),
sqrt(2)), read from the bits after adding (bits of 1) - (bits of sqrt(1/2)), so that the exponent
field steps where the mantissa passes sqrt(2) (as musl's ``log``), and with the offset taken off
the mantissa again. With ``s = (m - 1) / (m + 1)``, ``|s| <= 3 - 2 sqrt(2) = 0.1716``::

    ln x = e ln 2 + 2 atanh(s) = e ln 2 + 2 (s + s^3/3 + ... + s^13/13) + R,
    |R| <= 2 |s|^15 / (15 (1 - s^2)) <= 4.6e-13,

and relative to ``ln m = 2 atanh(s)``, ``|R| / |ln m| <= s^14 / (15 (1 - s^2)) <= 1.4e-12``:
below 1e-12 relative plus a few ulp of rounding.

Sine and cosine (:func:`sincos64`), for ``|phi| <= pi/4``, by Taylor polynomials without any
branch or range reduction::

    sin phi = phi - phi^3/3! + ... - phi^11/11!,   |R_s| <= (pi/4)^13 / 13! = 7.0e-12,
    cos phi = 1 - phi^2/2! + ... + phi^12/12!,     |R_c| <= (pi/4)^14 / 14! = 3.9e-13.

The float32 forms (:func:`log32`, :func:`sincos32`, used to fill float32 arrays, at twice the
SIMD width) stop at s^9 (|R| / |ln m| <= 2.1e-9), phi^9 (1.8e-9) and phi^10 (1.2e-10), so their
error is float32 rounding (a few 1e-8); there u itself is a float32, which near 1 is off by up to
2^-25 and moves a small radius r by up to 2^-25 / r (only r < 0.03 sees more than 1e-6). All
these bounds are far below what a simulation can see (the tests check them against numpy's libm
and the float32 output against the float64 one), and the output's statistics are those of exact
Box-Muller on the 32-bit grid.

Speed (the benchmark machine's Xeon, AVX-512 with LLVM's 256-bit vectors): about 0.5 ns per
float32 normal and 1.1 ns per float64 normal, against ~21 ns for numba's scalar
``np.random.standard_normal``.

Numba's on-disk cache of a kernel that calls into this module is keyed on the kernel's file
alone: after editing this module, clear numba's cache of ``_numba_kernels`` (its ``.nbi`` /
``.nbc`` files in ``neuropc/backends/__pycache__``, or under ``$NUMBA_CACHE_DIR``) or touch
``_numba_kernels.py``, so that the kernels recompile with the change.
"""

from __future__ import annotations

import sys

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from ._simd import prefer_512

# contract: a * b + c may become one fused multiply-add (same code, same CPU, same bits: streams
# stay reproducible); nothing is reassociated, so the polynomials keep their order of evaluation.
_JIT = dict(cache=True, error_model="numpy", fastmath={"contract"})

_U = np.uint64
_U32 = np.uint32
_f32 = np.float32
GOLDEN = _U(0x9E3779B97F4A7C15)
_M1 = _U(0xBF58476D1CE4E5B9)
_M2 = _U(0x94D049BB133111EB)


def _bitcast(src, dst, name):
    """An intrinsic reinterpreting the bits of a ``src`` scalar as a ``dst`` scalar (a free LLVM
    bitcast, vectorisable)."""

    def typer(typingctx, x):
        if x != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


_f64_bits = _bitcast(types.float64, types.uint64, "_f64_bits")
_bits_f64 = _bitcast(types.uint64, types.float64, "_bits_f64")
_f32_bits = _bitcast(types.float32, types.uint32, "_f32_bits")
_bits_f32 = _bitcast(types.uint32, types.float32, "_bits_f32")


@nb.njit(inline="always", **_JIT)
def mix64(z):
    """The splitmix64 finaliser of a uint64 (a bijection with full avalanche)."""
    z = (z ^ (z >> _U(30))) * _M1
    z = (z ^ (z >> _U(27))) * _M2
    return z ^ (z >> _U(31))


@nb.njit(**_JIT)
def key_from_seed(seed):
    """The stream key of an integer seed, ``mix64(seed + G)`` (nearby seeds, unrelated keys)."""
    return mix64(_U(seed) + GOLDEN)


def _fact(k):
    return float(np.prod(np.arange(1, k + 1, dtype=np.float64)))


# Taylor coefficients (-1)^k / (2k+1)! of the sine and (-1)^k / (2k)! of the cosine
_S3, _S5, _S7, _S9, _S11 = ((-1.0) ** k / _fact(2 * k + 1) for k in range(1, 6))
_C2, _C4, _C6, _C8, _C10, _C12 = ((-1.0) ** k / _fact(2 * k) for k in range(1, 7))
_HALF_PI = 0.5 * np.pi
_PHI_A, _PHI_B = _HALF_PI * 2.0**-30, _HALF_PI * (2.0**-31 - 0.5)  # phi = (b mod 2^30) A + B

# ---- float64 ----------------------------------------------------------------------------------
_LN2 = 0.6931471805599453
_MANT64 = _U(0x000FFFFFFFFFFFFF)
_RT64 = _U(0x3FE6A09E667F3BCD)  # the bits of sqrt(1/2)
_SHIFT64 = _U(0x3FF0000000000000) - _RT64


@nb.njit(inline="always", **_JIT)
def _log64_parts(x):
    """``(e, t)`` with ``ln x = e ln 2 + 2 t`` (``t = atanh(s)``) of a positive, normal float64
    ``x`` (module docstring)."""
    # x = 2^e m with m in [sqrt(1/2), sqrt(2)): offset the bits so that the exponent steps at
    # mantissa sqrt(2) instead of 2, read e, then put sqrt(1/2)'s bits back (as musl's log)
    bits = _f64_bits(x) + _SHIFT64
    e = np.float64(np.int64(bits >> _U(52))) - 1023.0
    m = _bits_f64((bits & _MANT64) + _RT64)
    s = (m - 1.0) / (m + 1.0)
    q = s * s
    p = 1 / 3 + q * (1 / 5 + q * (1 / 7 + q * (1 / 9 + q * (1 / 11 + q * (1 / 13)))))
    return e, s + s * q * p


@nb.njit(inline="always", **_JIT)
def log64(x):
    """ln x of a positive, normal float64 ``x``, branchless (module docstring: below 1e-12
    relative error plus rounding)."""
    e, t = _log64_parts(x)
    return e * _LN2 + 2.0 * t


@nb.njit(inline="always", **_JIT)
def sincos64(phi):
    """(sin phi, cos phi) of a float64 ``|phi| <= pi/4``, branchless (module docstring: below
    7e-12 absolute error plus rounding)."""
    q = phi * phi
    s = phi + phi * q * (_S3 + q * (_S5 + q * (_S7 + q * (_S9 + q * _S11))))
    c = 1.0 + q * (_C2 + q * (_C4 + q * (_C6 + q * (_C8 + q * (_C10 + q * _C12)))))
    return s, c


@nb.njit(inline="always", **_JIT)
def circle64(b):
    """(cos theta, sin theta) of the angle theta that the 32-bit word ``b`` (an integer below
    2^32) stands for: quadrant ``b >> 30``, angle within it from the other 30 bits (module
    docstring)."""
    b = _U(b)
    # phi = (((b mod 2^30) + 1/2) 2^-30 - 1/2) pi/2, as one multiply-add
    phi = np.float64(b & _U(0x3FFFFFFF)) * _PHI_A + _PHI_B
    s, c = sincos64(phi)
    # q = b >> 30 quarter turns: (c, s) -> (-s, c) -> (-c, -s) -> (s, -c), as a swap when q is
    # odd and sign bits: x's flips when q is 1 or 2 (bit 30 xor bit 31), y's when q >= 2 (bit 31)
    odd = (b & _U(0x40000000)) != _U(0)
    sx = ((b ^ (b << _U(1))) & _U(0x80000000)) << _U(32)
    sy = (b & _U(0x80000000)) << _U(32)
    x = _bits_f64(_f64_bits(s if odd else c) ^ sx)
    y = _bits_f64(_f64_bits(c if odd else s) ^ sy)
    return x, y


@nb.njit(inline="always", **_JIT)
def _pair64(a, b, scale):
    """Two float64 standard normals times ``scale`` from two 32-bit words (Box-Muller, module
    docstring)."""
    # u = (a + 1/2) 2^-32 as one multiply-add, and -2 ln u = e (-2 ln 2) - 4 t: both exact
    # rewrites (scalings by powers of 2), bit for bit -2 log64(u), with two operations fewer
    e, t = _log64_parts(np.float64(a) * 2.0**-32 + 2.0**-33)
    r = np.sqrt(e * (-2.0 * _LN2) + -4.0 * t) * scale
    x, y = circle64(b)
    return r * x, r * y


# ---- float32 ----------------------------------------------------------------------------------
_MANT32 = _U32(0x007FFFFF)
_RT32 = _U32(0x3F3504F3)  # the bits of sqrt(1/2) in float32
_SHIFT32 = _U32(0x3F800000 - 0x3F3504F3)
_LN2f, _PHI_Af, _PHI_Bf = _f32(_LN2), _f32(_PHI_A), _f32(_PHI_B)
_T3f, _T5f, _T7f, _T9f = (_f32(1.0 / k) for k in (3, 5, 7, 9))
_S3f, _S5f, _S7f, _S9f = (_f32(c) for c in (_S3, _S5, _S7, _S9))
_C2f, _C4f, _C6f, _C8f, _C10f = (_f32(c) for c in (_C2, _C4, _C6, _C8, _C10))
_1f, _2f, _127f = _f32(1.0), _f32(2.0), _f32(127.0)
_M2LN2f, _M4f = _f32(-2.0) * _LN2f, _f32(-4.0)  # -2 ln 2 (exactly -2 times float32 ln 2), -4


@nb.njit(inline="always", **_JIT)
def _log32_parts(x):
    """:func:`_log64_parts` of a positive, normal float32 ``x`` in float32 arithmetic (series to
    s^9)."""
    # numba widens uint32 arithmetic to 64 bits: the casts keep the lanes 32 bits wide
    bits = _U32(_f32_bits(x) + _SHIFT32)
    e = np.float32(np.int32(bits >> _U32(23))) - _127f
    m = _bits_f32(_U32((bits & _MANT32) + _RT32))
    s = (m - _1f) / (m + _1f)
    q = s * s
    p = _T3f + q * (_T5f + q * (_T7f + q * _T9f))
    return e, s + s * q * p


@nb.njit(inline="always", **_JIT)
def log32(x):
    """ln x of a positive, normal float32 ``x`` in float32 arithmetic (series to s^9)."""
    e, t = _log32_parts(x)
    return e * _LN2f + _2f * t


@nb.njit(inline="always", **_JIT)
def sincos32(phi):
    """(sin phi, cos phi) of a float32 ``|phi| <= pi/4`` in float32 arithmetic (sine to phi^9,
    cosine to phi^10)."""
    q = phi * phi
    s = phi + phi * q * (_S3f + q * (_S5f + q * (_S7f + q * _S9f)))
    c = _1f + q * (_C2f + q * (_C4f + q * (_C6f + q * (_C8f + q * _C10f))))
    return s, c


@nb.njit(inline="always", **_JIT)
def circle32(b):
    """:func:`circle64` in float32 arithmetic (the angle within the quadrant keeps 24 of its 30
    bits)."""
    b = _U32(b)
    f = np.float32(np.int32(_U32(b & _U32(0x3FFFFFFF))))
    phi = f * _PHI_Af + _PHI_Bf
    s, c = sincos32(phi)
    odd = _U32(b & _U32(0x40000000)) != _U32(0)
    sx = _U32(_U32(b ^ _U32(b << _U32(1))) & _U32(0x80000000))
    sy = _U32(b & _U32(0x80000000))
    x = _bits_f32(_U32(_f32_bits(s if odd else c) ^ sx))
    y = _bits_f32(_U32(_f32_bits(c if odd else s) ^ sy))
    return x, y


@nb.njit(inline="always", **_JIT)
def _pair32(a, b, scale):
    """Two float32 standard normals times ``scale`` from two 32-bit words, in float32 arithmetic
    (the small values of u, the tails, convert exactly: below 2^24 the integers are float32
    numbers; near 1 u rounds to 1 at most, giving r = 0, with probability below 2^-25)."""
    # as _pair64: bit for bit the two roundings of (a + 1/2) 2^-32 (powers of 2 scale exactly)
    e, t = _log32_parts(np.float32(a) * _f32(2.0**-32) + _f32(2.0**-33))
    r = np.sqrt(e * _M2LN2f + _M4f * t) * scale
    x, y = circle32(b)
    return r * x, r * y


# ---- filling arrays -----------------------------------------------------------------------------
def _pair(a, b, scale, out):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_pair, jit_options=_JIT)
def _pair_impl(a, b, scale, out):
    """Box-Muller in the precision of ``out``'s dtype (float32 runs at twice the SIMD width)."""
    if out.dtype == types.float32:
        return lambda a, b, scale, out: _pair32(a, b, np.float32(scale))
    return lambda a, b, scale, out: _pair64(a, b, np.float64(scale))


_CHUNK = 2048  # words per pass: the scratch (16 KiB) stays in L1
# a word's high and low 32-bit halves, as entries 2 i + _HI and 2 i + _LO of its uint32 view
_HI = 1 if sys.byteorder == "little" else 0
_LO = 1 - _HI


@nb.njit(**_JIT)
def _hash_words(W, key, base):
    """Words base, base + 1, ... of the stream ``key``, ``h_i = mix64(key + (base + i) G)``, into
    the uint64 ``W``. Box-Muller reads their halves from W's uint32 view, two interleaved
    streams that the vectoriser splits with a shuffle (splitting them here into two arrays cost
    more: 0.46 -> 0.45 ns a normal, measured)."""
    prefer_512()
    w = key + base * GOLDEN
    for i in range(W.shape[0]):
        W[i] = mix64(w)
        w += GOLDEN  # an induction variable: no multiply per word


@nb.njit(**_JIT)
def fill_normal(out, key, counter, scale=1.0):
    """Fill the 1-D contiguous array ``out`` (float32 or float64) with standard normals, times
    ``scale``, of the stream ``key`` from word ``counter`` on (both uint64); returns the next
    unused counter, ``counter + ceil(len(out) / 2)``. Same arguments, bit-identical output
    (``scale`` multiplies the radius: 1 gives the standard normals exactly). Word ``counter + i``
    gives the pair ``out[i]``, ``out[n // 2 + i]`` (its high half the radius, its low half the
    angle), and for an odd length ``n`` the last word gives ``out[n - 1]``."""
    prefer_512()
    S = np.empty(max(min(out.shape[0] // 2, _CHUNK), 1), np.uint64)
    return _fill(out, _U(key), _U(counter), scale, S)


@nb.njit(**_JIT)
def fill_normal_rows(out, n, row0, key, counter, scale=1.0):
    """Fill ``out``, rows of ``n`` values each (row-major, 1-D contiguous), as rows ``row0``,
    ``row0 + 1``, ... of a batch: row ``r`` is :func:`fill_normal` of its own ``n`` values from
    word ``counter + r ceil(n / 2)``. A row's draws depend on its index in the batch only, so a
    batch run in row blocks (on several threads) draws exactly the normals of the whole batch.
    Returns nothing: the caller advances the counter by ``rows ceil(n / 2)`` for the batch.

    Rows of an even length up to ``2 _CHUNK`` use consecutive words: their hashes are drawn for
    many rows in one pass, then Box-Muller fills row by row (the same values as row-by-row
    :func:`fill_normal` calls, whose set-up per row of 128 cost 0.45 ns per normal, measured)."""
    prefer_512()
    if n == 0:
        return
    rows = out.shape[0] // n
    words = _U((n + 1) // 2)
    key = _U(key)
    h = n // 2
    if n % 2 == 1 or h > _CHUNK:
        S = np.empty(max(min(h, _CHUNK), 1), np.uint64)
        for i in range(rows):
            _fill(out[i * n : (i + 1) * n], key, _U(counter) + _U(row0 + i) * words, scale, S)
        return
    per = _CHUNK // h  # rows per pass
    S = np.empty(min(per, rows) * h, np.uint64)
    V = S.view(np.uint32)
    for r in range(0, rows, per):
        m = min(per, rows - r)
        _hash_words(S[: m * h], key, _U(counter) + _U(row0 + r) * words)
        for k in range(m):
            lo = out[(r + k) * n : (r + k) * n + h]  # (slices indexed from 0: numba's
            hi = out[(r + k) * n + h : (r + k + 1) * n]  # wraparound check on o[h + j] would
            v = V[2 * k * h : 2 * (k + 1) * h]  # stop the loop from vectorising)
            for j in range(h):
                z0, z1 = _pair(v[2 * j + _HI], v[2 * j + _LO], scale, out)
                lo[j] = z0
                hi[j] = z1


@nb.njit(**_JIT)
def _fill(out, key, base, scale, S):
    """:func:`fill_normal` with its scratch ``S`` (uint64, ``min(len(out) // 2, _CHUNK)`` words or
    more, at least 1) given.

    Done in chunks of ``_CHUNK`` words: a pass of hashes into an L1 scratch, then a pass of
    Box-Muller on it (each loop one simple stream over separate arrays, which LLVM vectorises)."""
    prefer_512()
    n = out.shape[0]
    half = n // 2
    V = S.view(np.uint32)
    lo = out[:half]
    hi = out[half : 2 * half]
    for c in range(0, half, _CHUNK):
        m = min(_CHUNK, half - c)
        _hash_words(S[:m], key, base + _U(c))
        lo_ = lo[c : c + m]
        hi_ = hi[c : c + m]
        for j in range(m):
            z0, z1 = _pair(V[2 * j + _HI], V[2 * j + _LO], scale, out)
            lo_[j] = z0
            hi_[j] = z1
    if n > 2 * half:  # odd length: one more word for the last value
        _hash_words(S[:1], key, base + _U(half))
        z0, _z1 = _pair(V[_HI], V[_LO], scale, out)
        out[n - 1] = z0
    return base + _U((n + 1) // 2)
