"""Compiled kernels of the numba backend.

The backend's jitted code lives in this one file on purpose: numba's on-disk cache
(``cache=True``) is keyed on the file that defines a function and does not notice edits to jitted
helpers that live in other modules. Two helpers are compiled in from elsewhere, because other code
runs them too: the precision rules (:mod:`neuropc.dynamics.precision`) and the Langevin noise
generator (:mod:`._normal`); after editing either, clear numba's cache (``__pycache__`` beside
this file, or ``$NUMBA_CACHE_DIR``). An installed release is unaffected: new files, new cache.

Layout (see :mod:`neuropc.dynamics.plan`): the values of all populations of a batch live in one row-major
``(B, n_value)`` buffer, their errors in a ``(B, n_error)`` buffer, and every weight matrix
``W (n_post, n_pre)`` and bias in one flat parameter vector. A population is a column block, so
products are BLAS ``gemm`` calls on sub-blocks (leading dimension = buffer width), made straight
from compiled code through scipy's BLAS. Everything else is fused elementwise loops.

Two traps of this machine class shape the code: transcendental functions inside numba are scalar
libm calls (no SVML), so ``sigmoid``/``gelu`` and the float64 ``tanh`` use a vectorisable exp
written here, and the float32 ``tanh`` a rational fit (all accurate to a few ulp); and numba's
default Python error model (a ZeroDivisionError check on every division) stops LLVM from
vectorising, so every kernel uses ``error_model="numpy"``.
"""

from __future__ import annotations

import llvmlite.binding as _llvm
import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic, overload

from ..dynamics import precision as _precision  # the precision rules, compiled here as well
from ..dynamics import schedule as _sched  # the codes of a run's schedule
from ..dynamics.optim import OPT_ADAM, OPT_NONE  # optimiser codes: neuropc.dynamics.optim
from ..model.activations import TANH_P as _TANH_P64
from ..model.activations import TANH_Q as _TANH_Q64
from ..model.distributions import TINY as _TINY  # errors below it are flushed to 0

# the Langevin noise's generator (counter-based, vectorised); compiled into the kernels below, so
# numba's cache of this file does not see edits to it: clear the cache after changing _normal.py
from ._normal import fill_normal_rows, key_from_seed
from ._simd import prefer_512


def _torch_lib(name: str = "libtorch_cpu.so"):
    """A library of torch's own ``lib`` folder (ctypes): libtorch_cpu exports the MKL that the x86
    torch wheels link in, libgomp.so.1 is torch's OpenMP runtime."""
    import ctypes
    import os

    import torch

    return ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", name))


def _blas_addresses() -> tuple[str, dict[str, int]]:
    """The Fortran ``dgemm`` / ``sgemm`` the kernels call, chosen by ``NEUROPC_NUMBA_BLAS``:
    ``"torch"`` (the default when available): the MKL gemm that the x86 torch wheels export from
    libtorch_cpu, which runs the small gemms of PC about 2x faster than OpenBLAS and shares
    torch's OpenMP pool, so torch and numba in one process do not fight over the cores
    (docs/performance.md); ``"scipy"``: scipy's OpenBLAS (the fallback where torch has no MKL)."""
    import ctypes
    import os

    choice = os.environ.get("NEUROPC_NUMBA_BLAS", "auto")
    if choice not in ("auto", "torch", "scipy"):
        raise ValueError(f"NEUROPC_NUMBA_BLAS must be auto, torch or scipy; got {choice!r}")
    if choice != "scipy":
        try:
            import torch

            if not torch.backends.mkl.is_available():
                raise OSError("torch was built without MKL")
            lib = _torch_lib()
            out = {
                n: ctypes.cast(getattr(lib, n + "_"), ctypes.c_void_p).value
                for n in ("dgemm", "sgemm")
            }
            try:  # MKL's packed float32 gemm (pack a matrix once, multiply by it many times)
                for n in ("SGEMM_PACK_GET_SIZE", "SGEMM_PACK", "SGEMM_COMPUTE"):
                    out[n.lower()] = ctypes.cast(getattr(lib, n), ctypes.c_void_p).value
            except AttributeError:
                pass
            return "torch-mkl", out
        except (ImportError, OSError, AttributeError):
            if choice == "torch":
                raise
    return "scipy-openblas", {
        n: get_cython_function_address("scipy.linalg.cython_blas", n) for n in ("dgemm", "sgemm")
    }


def _team_addresses(blas: str) -> dict[str, int]:
    """What row blocks (:mod:`.row_blocks`, :func:`block_run`) call from compiled code, where it
    exists: ``mkl_local``, MKL's own thread count for the calling thread (``MKL_Set_Num_Threads_Local``
    of libtorch_cpu; OpenBLAS's count is process-wide, so without it batches run whole);
    ``gomp_parallel``, ``GOMP_parallel`` of torch's own libgomp, which starts the threads of
    :func:`team_run` (without it, a thread pool starts them); ``yield``, the OS's yield of a
    waiting thread."""
    import ctypes
    import sys

    out: dict[str, int] = {}
    if blas != "torch-mkl":
        return out

    def address(lib, name: str) -> int:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value

    try:
        out["yield"] = (
            address(ctypes.WinDLL("kernel32"), "SwitchToThread")
            if sys.platform == "win32"
            else address(ctypes.CDLL(None), "sched_yield")
        )
        out["mkl_local"] = address(_torch_lib(), "MKL_Set_Num_Threads_Local")
    except (OSError, AttributeError):
        return {}
    try:
        out["gomp_parallel"] = address(_torch_lib("libgomp.so.1"), "GOMP_parallel")
    except (OSError, AttributeError):
        pass
    return out


BLAS, _addresses = _blas_addresses()
# MKL's packed float32 gemm, where torch's MKL exports it (:func:`_pack_weights`). The kernels
# always call through these symbols (numba's cache keeps a kernel compiled with one BLAS for the
# next process, which may use another); where they are missing, stand-ins that are never called
# (a run passes packed=False) keep the symbols defined.
PACKED = "sgemm_pack" in _addresses
if not PACKED:
    import ctypes as _ct

    _stand_ins = (_ct.CFUNCTYPE(_ct.c_uint64, *[_ct.c_void_p] * 4)(lambda *a: 0),
                  _ct.CFUNCTYPE(None, *[_ct.c_void_p] * 9)(lambda *a: None),
                  _ct.CFUNCTYPE(None, *[_ct.c_void_p] * 12)(lambda *a: None))  # fmt: skip
    for _name, _f in zip(("sgemm_pack_get_size", "sgemm_pack", "sgemm_compute"), _stand_ins):
        _addresses[_name] = _ct.cast(_f, _ct.c_void_p).value
_team = _team_addresses(BLAS)
for _name, _address in {**_addresses, **_team}.items():
    _llvm.add_symbol("neuropc_" + _name, _address)
# a batch can run in row blocks (:func:`block_run`), and their threads start without Python
# (:func:`team_run`; else a thread pool starts them)
ROW_BLOCKS = "mkl_local" in _team
TEAM = "gomp_parallel" in _team
_vp = types.voidptr
_mkl_local = types.ExternalFunction("neuropc_mkl_local", types.int32(types.int32))
_yield = types.ExternalFunction("neuropc_yield", types.int32())
_dgemm = types.ExternalFunction("neuropc_dgemm", types.void(*([_vp] * 13)))
_sgemm = types.ExternalFunction("neuropc_sgemm", types.void(*([_vp] * 13)))
_pack_size = types.ExternalFunction("neuropc_sgemm_pack_get_size", types.uint64(*[_vp] * 4))
_pack = types.ExternalFunction("neuropc_sgemm_pack", types.void(*([_vp] * 9)))
_compute = types.ExternalFunction("neuropc_sgemm_compute", types.void(*([_vp] * 12)))

_JIT = dict(cache=True, error_model="numpy")
# reassociation lets LLVM vectorise the reductions (energies, update norms); used only in loops
# that hold plain arithmetic, never around the exp/tanh range reduction below.
_JIT_REDUCE = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


def _xgemm(C, *args):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_xgemm)
def _xgemm_impl(C, *args):
    if C.dtype == types.float64:
        return lambda C, *args: _dgemm(*args)
    if C.dtype == types.float32:
        return lambda C, *args: _sgemm(*args)
    return None


@intrinsic
def _ref(typingctx, x):
    """A pointer to a stack copy of the scalar ``x`` (Fortran BLAS takes every argument by
    reference; three small arrays per call, allocated and freed, cost more, measured)."""

    def codegen(context, builder, sig, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        return builder.bitcast(slot, ir.IntType(8).as_pointer())

    return types.voidptr(x), codegen


@nb.njit(**_JIT)
def gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
    """Row-major ``C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C`` (``op`` = transpose when the flag
    is set). ``A``, ``B``, ``C`` are views whose first element is the block origin and ``lda``,
    ``ldb``, ``ldc`` their row strides. Computed as the column-major product C^T = op(B)^T op(A)^T.
    """
    if M == 0 or N == 0:
        return
    i32, u8 = np.int32, np.uint8
    _xgemm(
        C, _ref(u8(84 if tb else 78)), _ref(u8(84 if ta else 78)), _ref(i32(N)), _ref(i32(M)),
        _ref(i32(K)), _ref(_like(C, alpha)), B.ctypes, _ref(i32(ldb)), A.ctypes, _ref(i32(lda)),
        _ref(_like(C, beta)), C.ctypes, _ref(i32(ldc)),
    )  # fmt: skip


@nb.njit(**_JIT)
def _pack_weights(P, sizes, cpre, cpost, cwoff, var_pred, backproj, clamped, nb_, PO):
    """MKL's packed form of every float32 weight matrix that the inference steps multiply by:
    ``W`` of each connection into a population whose prediction is recomputed every step (the
    product ``f(x_pre) W^T``), and of each connection that carries errors back (``eps W``).
    Their offsets go to ``PO`` (``(n_conn, 2)``: prediction, back-projection; -1 for none); returns
    the packed data (float32), for products with ``nb_`` rows.

    Why: a row block's gemm on a weight matrix packs that matrix again in every call, and the
    weights do not change during inference (no optimiser step during it). Packed once per run
    (``SGEMM_PACK``), each product is a ``SGEMM_COMPUTE``: 64 x 128 x 128 went 20.3 -> 18.8 us
    and 64 x 512 x 512 208.6 -> 178.1 us on one MKL thread, with the same bits (measured; in a
    batch, width 1024 went 63 -> 56 ms and width 512 did not change). At 1024 and beyond MKL's
    packed path sums in another order (differences at the rounding level). Only row blocks pack
    (the backend's ``packed``): on MKL's threads, a whole batch at width 2048 ran slower packed."""
    i32, u8 = np.int32, np.uint8
    total = 0
    for c in range(cpre.shape[0]):
        q, p = cpre[c], cpost[c]
        PO[c, 0] = PO[c, 1] = -1
        for form in range(2):  # 0: f(x_pre) W^T into post; 1: eps_post W into pre
            used = var_pred[p] and not clamped[q] if form == 0 else backproj[c]
            if not used:
                continue
            m, k = (sizes[p], sizes[q]) if form == 0 else (sizes[q], sizes[p])
            size = _pack_size(_ref(u8(65)), _ref(i32(m)), _ref(i32(nb_)), _ref(i32(k)))
            PO[c, form] = total
            total += (np.int64(size) + 63) // 4 // 16 * 16  # (floats, 64-byte multiples)
    PK = np.empty(total, np.float32)
    for c in range(cpre.shape[0]):
        q, p = cpre[c], cpost[c]
        for form in range(2):
            o = PO[c, form]
            if o < 0:
                continue
            m, k = (sizes[p], sizes[q]) if form == 0 else (sizes[q], sizes[p])
            # the weights (n_post, n_pre) row-major are (n_pre, n_post) column-major: 'T' for
            # the prediction, 'N' for the back-projection (as gemm passes them)
            _pack(_ref(u8(65)), _ref(u8(84 if form == 0 else 78)), _ref(i32(m)), _ref(i32(nb_)),
                  _ref(i32(k)), _ref(np.float32(1.0)), P[cwoff[c]:].ctypes, _ref(i32(sizes[q])),
                  PK[o:].ctypes)  # fmt: skip
    return PK


@nb.njit(**_JIT)
def _gemm_packed(M, N, K, A, B, ldb, beta, C, ldc):
    """Row-major ``C[M,N] = B[M,K] op(W) + beta C`` for a weight matrix packed by
    :func:`_pack_weights` into ``A`` (the column-major product C^T = op(W)^T B^T, as in
    :func:`gemm`)."""
    if M == 0 or N == 0:
        return
    i32, u8 = np.int32, np.uint8
    _compute(_ref(u8(80)), _ref(u8(78)), _ref(i32(N)), _ref(i32(M)), _ref(i32(K)), A.ctypes,
             _ref(i32(N)), B.ctypes, _ref(i32(ldb)), _ref(np.float32(beta)), C.ctypes,
             _ref(i32(ldc)))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# activations: scalar forms (vectorisable) and one block kernel
# ---------------------------------------------------------------------------------------------
_f32 = np.float32
# 1/k! for the exp polynomials
_E32 = tuple(_f32(1.0 / np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(2, 8))
_L2E32, _LN2HI32, _LN2LO32 = _f32(1.4426950408889634), _f32(0.693145751953125), _f32(1.4286068e-06)
_E2_32, _E3_32, _E4_32, _E5_32, _E6_32, _E7_32 = _E32


@intrinsic
def _pow2_32(typingctx, k):
    """2^k as a float32 for an integer-valued float32 0 <= k <= 127: the exponent field k + 127
    shifted into place and read as a float. Exactly ``float32(1 << int(k))``, in three 256-bit
    instructions: numba widens an int32 shift to int64, whose conversion back made the float32
    loops switch to 512-bit ops (the float32 tanh ran 20% slower, measured)."""
    if k != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        e = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(e, ir.Constant(i32, 23)), ir.FloatType())

    return k(k), codegen


@nb.njit(inline="always", error_model="numpy")
def _expm1_pos64(y):
    """exp(y) - 1 for 0 <= y <= 40, vectorisable: Cody-Waite reduction y = k ln2 + r, |r| <= ln2/2,
    q = exp(r) - 1 by its Taylor series to r^12 (truncation < 1e-17), then q 2^k + (2^k - 1) with
    2^k from an integer shift (k <= 58). No cancellation for small y (k = 0 gives q itself)."""
    k = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    q = r * (1.0 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
        1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (
            1 / 39916800 + r * (1 / 479001600))))))))))))  # fmt: skip
    s = np.float64(np.int64(1) << np.int64(k))
    return q * s + (s - 1.0)


@nb.njit(inline="always", error_model="numpy")
def _expm1_pos32(y):
    """float32 form of ``_expm1_pos64`` for 0 <= y <= 18 (Taylor to r^7, k <= 26)."""
    k = np.floor(y * _L2E32 + _f32(0.5))
    r = (y - k * _LN2HI32) - k * _LN2LO32
    q = r * (_f32(1.0) + r * (_E2_32 + r * (_E3_32 + r * (_E4_32 + r * (_E5_32 + r * (
        _E6_32 + r * _E7_32))))))  # fmt: skip
    s = _pow2_32(k)
    return q * s + (s - _f32(1.0))


def _tanh(x):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


# float32 tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9: activations.TANH_P, TANH_Q (the fit that
# benchmarks/tanh_fit.py derives; Q's constant term is 1)
_TANH_P = tuple(_f32(c) for c in _TANH_P64)
_TANH_Q = tuple(_f32(c) for c in _TANH_Q64[1:])
_TP0, _TP1, _TP2, _TP3, _TP4 = _TANH_P
_TQ1, _TQ2, _TQ3, _TQ4 = _TANH_Q


@overload(_tanh, inline="always")
def _tanh_impl(x):
    """tanh in the precision of x.

    float32: ``x P(x^2) / Q(x^2)`` (see ``_TANH_P``), exactly +-1 for ``|x| >= 9`` (float32 tanh
    rounds to +-1 from 9.01 on), NaN for NaN; within 6 ulp of the exact value (5.2 measured,
    mean 0.65), and 1.8x faster than the exp form below, which the float32 loops spent on the
    division and the range reduction (benchmarks/tanh_fit.py). Horner steps are fused multiply-adds.

    float64: ``sign(x) m / (m + 2)``, ``m = exp(2|x|) - 1``, within 8 ulp (6 measured; the float64
    kernels match torch to 1e-10). Both: tests/test_numba_tanh.py."""
    if x == types.float32:

        def impl32(x):
            c = max(min(x, _f32(9.0)), _f32(-9.0))
            s = c * c
            num = _fmuladd(_fmuladd(_fmuladd(_fmuladd(_TP4, s, _TP3), s, _TP2), s, _TP1), s, _TP0)
            den = _fmuladd(_fmuladd(_fmuladd(_fmuladd(_TQ4, s, _TQ3), s, _TQ2), s, _TQ1), s,
                           _f32(1.0))  # fmt: skip
            t = c * num / den
            return np.copysign(_f32(1.0), x) if abs(x) >= _f32(9.0) else t

        return impl32

    def impl64(x):
        m = _expm1_pos64(2.0 * min(abs(x), 20.0))
        return np.copysign(m / (m + 2.0), x)

    return impl64


def _sigmoid(x):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_sigmoid, inline="always")
def _sigmoid_impl(x):
    """1 / (1 + exp(-x)) = e / (1 + e) for x >= 0 and 1 / (1 + e) for x < 0, e = exp(|x|)."""
    if x == types.float32:

        def impl32(x):
            e = _expm1_pos32(min(abs(x), _f32(18.0))) + _f32(1.0)
            return e / (_f32(1.0) + e) if x >= 0 else _f32(1.0) / (_f32(1.0) + e)

        return impl32

    def impl64(x):
        e = _expm1_pos64(min(abs(x), 40.0)) + 1.0
        return e / (1.0 + e) if x >= 0 else 1.0 / (1.0 + e)

    return impl64


def _exp_nonpos(y):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_exp_nonpos, inline="always")
def _exp_nonpos_impl(y):
    """exp(y) for y <= 0 as 1 / (1 + expm1(-y)), vectorisable, in the precision of y (below
    -40, or -18 in float32, it returns exp(-40) / exp(-18): negligible beside 1 in a softmax)."""
    if y == types.float32:

        def impl32(y):
            return _f32(1.0) / (_expm1_pos32(min(-y, _f32(18.0))) + _f32(1.0))

        return impl32

    def impl64(y):
        return 1.0 / (_expm1_pos64(min(-y, 40.0)) + 1.0)

    return impl64


_GELU_C = 0.7978845608028654  # sqrt(2/pi)
_GELU_A = 0.044715


ACT_SOFTMAX = 8  # neuropc.model.activations: the one activation that is not elementwise
ACT_TANH = 1  # the usual hidden activation, which act_block runs through a loop of its own


@nb.njit(**_JIT)
def act_block(code, param, X, FX, DFX, o, n):
    """FX = f(X), DFX = f'(X) on the column block [o, o+n) of every row (see :func:`_act_row`).
    tanh, the common case, has a loop nest of its own: dispatched per row on a code known only at
    run time, the same loop ran 1.2-1.4x slower (measured)."""
    prefer_512()
    if code == ACT_TANH:
        _tanh_rows(X, FX, DFX, o, n)
        return
    for b in range(X.shape[0]):
        _act_row(code, param, X[b, o : o + n], FX[b, o : o + n], DFX[b, o : o + n], n)


@nb.njit(**_JIT)
def _tanh_rows(X, FX, DFX, o, n):
    """FX = tanh(X), DFX = 1 - tanh(X)^2 on the column block [o, o+n) (as in :func:`_act_row`)."""
    prefer_512()
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        f_ = FX[b, o : o + n]
        d_ = DFX[b, o : o + n]
        for j in range(n):
            t = _tanh(x_[j])
            f_[j] = t
            d_[j] = 1.0 - t * t


@nb.njit(**_JIT)
def _act_row(code, param, x_, f_, d_, n):
    """f_ = f(x_), d_ = f'(x_) on one row block (``n`` units; a softmax normalises over them).

    Loops run over 1-D row views with indices from 0: numba's negative-index wraparound on
    ``X[b, o + j]`` would otherwise stop LLVM from vectorising (measured 5-10x). Compiled without
    fast-math flags: the exp range reduction keeps its exact order of operations."""
    prefer_512()
    if code == 0:  # linear
        for j in range(n):
            f_[j] = x_[j]
            d_[j] = 1.0
    elif code == 1:  # tanh
        for j in range(n):
            t = _tanh(x_[j])
            f_[j] = t
            d_[j] = 1.0 - t * t
    elif code == 2:  # sigmoid
        for j in range(n):
            s = _sigmoid(x_[j])
            f_[j] = s
            d_[j] = s * (1.0 - s)
    elif code == 3:  # relu
        for j in range(n):
            x = x_[j]
            f_[j] = x if x > 0 else 0.0
            d_[j] = 1.0 if x > 0 else 0.0
    elif code == 4:  # leaky_relu
        for j in range(n):
            x = x_[j]
            f_[j] = x if x > 0 else param * x
            d_[j] = 1.0 if x > 0 else param
    elif code == 5:  # gelu (tanh approximation)
        for j in range(n):
            x = x_[j]
            t = _tanh(_GELU_C * (x + _GELU_A * x * x * x))
            f_[j] = 0.5 * x * (1.0 + t)
            d_[j] = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (
                1.0 + 3.0 * _GELU_A * x * x
            )
    elif code == 6:  # hard_tanh
        for j in range(n):
            x = x_[j]
            f_[j] = min(max(x, -1.0), 1.0)
            d_[j] = 1.0 if (x > -1.0 and x < 1.0) else 0.0
    elif code == 7:  # square
        for j in range(n):
            x = x_[j]
            f_[j] = x * x
            d_[j] = 2.0 * x
    elif code == ACT_SOFTMAX:  # over the block; its Jacobian acts in _softmax_vjp, so f' = 1
        m = x_[0]
        for j in range(1, n):
            m = max(m, x_[j])
        z = 0.0
        for j in range(n):
            e = _exp_nonpos(x_[j] - m)
            f_[j] = e
            z += e
        for j in range(n):
            f_[j] = f_[j] / z
            d_[j] = 1.0


@nb.njit(**_JIT)
def _softmax_vjp(FX, BP, o, n):
    """BP <- J^T BP for a softmax population, J = diag(s) - s s^T, s = FX: per row
    ``bp_j <- s_j (bp_j - sum_k s_k bp_k)`` (its f' is then 1 in the elementwise updates)."""
    prefer_512()
    for b in range(FX.shape[0]):
        s_ = FX[b, o : o + n]
        bp = BP[b, o : o + n]
        dot = 0.0
        for j in range(n):
            dot += s_[j] * bp[j]
        for j in range(n):
            bp[j] = s_[j] * (bp[j] - dot)


# ---------------------------------------------------------------------------------------------
# fused elementwise pieces of an inference step (row views, see _act_row)
# ---------------------------------------------------------------------------------------------
@nb.njit(**_JIT)
def _errors_block(X, MUC, MUV, EPS, PI, o, eo, n, has_var, write_eps, beta):
    """eps = Pi d, d = beta (x - mu) with mu = MUC (+ MUV) (beta = 1 except for nudged targets);
    returns the batch-mean energy 1/2 d^T Pi d.

    Each case is a function of its own with one straight loop over the rows: as branches of
    one loop nest, with the flags known only at run time, it ran 2.5x slower (measured)."""
    if write_eps and has_var:
        acc = _errors_var(X, MUC, MUV, EPS, PI, o, eo, n, beta)
    elif write_eps:
        acc = _errors_const(X, MUC, EPS, PI, o, eo, n, beta)
    else:  # leaky error neurons keep their own state: only the energy
        acc = _energy_only(X, MUC, MUV, PI, o, eo, n, has_var, beta)
    return 0.5 * acc / X.shape[0]


@nb.njit(**_JIT_REDUCE)
def _errors_var(X, MUC, MUV, EPS, PI, o, eo, n, beta):
    """:func:`_errors_block` with mu = MUC + MUV: writes eps, returns sum d^T Pi d."""
    prefer_512()
    pi = PI[eo : eo + n]
    acc = 0.0
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        mc = MUC[b, eo : eo + n]
        mv = MUV[b, eo : eo + n]
        e_ = EPS[b, eo : eo + n]
        s = 0.0
        for j in range(n):
            d = beta * (x_[j] - (mc[j] + mv[j]))
            e = pi[j] * d
            e_[j] = e
            s += d * e
        acc += s
    return acc


@nb.njit(**_JIT_REDUCE)
def _errors_const(X, MUC, EPS, PI, o, eo, n, beta):
    """:func:`_errors_block` with mu = MUC: writes eps, returns sum d^T Pi d."""
    prefer_512()
    pi = PI[eo : eo + n]
    acc = 0.0
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        mc = MUC[b, eo : eo + n]
        e_ = EPS[b, eo : eo + n]
        s = 0.0
        for j in range(n):
            d = beta * (x_[j] - mc[j])
            e = pi[j] * d
            e_[j] = e
            s += d * e
        acc += s
    return acc


@nb.njit(**_JIT_REDUCE)
def _energy_only(X, MUC, MUV, PI, o, eo, n, has_var, beta):
    """sum d^T Pi d of :func:`_errors_block` without writing eps."""
    prefer_512()
    pi = PI[eo : eo + n]
    acc = 0.0
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        mc = MUC[b, eo : eo + n]
        mv = MUV[b, eo : eo + n]
        s = 0.0
        if has_var:
            for j in range(n):
                d = beta * (x_[j] - (mc[j] + mv[j]))
                s += d * pi[j] * d
        else:
            for j in range(n):
                d = beta * (x_[j] - mc[j])
                s += d * pi[j] * d
        acc += s
    return acc


@nb.njit(inline="always", **_JIT)
def _softplus(a):
    """log(1 + e^a), without overflow."""
    return max(a, 0.0) + np.log1p(np.exp(-abs(a)))


@nb.njit(inline="always", **_JIT)
def _xlogx(a):
    return a * np.log(a) if a > 0.0 else 0.0


@nb.njit(**_JIT)
def _exp_shifted(src, dst, shift):
    """dst[j] = exp(src[j] - shift) for src <= shift, vectorised; compiled without fast-math
    flags, so the exp's range reduction keeps its exact order of operations."""
    prefer_512()
    for j in range(src.shape[0]):
        dst[j] = _exp_nonpos(src[j] - shift)


@nb.njit(**_JIT)
def _categorical_f(X, MUC, MUV, EPS, OWN, o, eo, n, has_var, clamped):
    """:func:`_dist_block` for a Categorical under ``F`` (or under KL on data, which adds the
    constant ``x log x``): per row, ``mu``, its max, ``sum x``, ``x . mu``,
    ``exp(mu - max)`` and its sum ``z``, then ``eps = x - (sum x / z) exp(mu - max)`` and, free,
    ``dF/dx = lse - mu`` (``lse = max + log z``); returns the sum over rows of
    ``F = sum x lse - x . mu``.

    Transposed: a row has only a few units (ten in the standard task), too few for a vector, so
    the block's ``mu`` and ``x`` are first copied column-major into a scratch and every pass runs
    over the rows, as whole vectors. Each row's sums still add its units in order (float64
    accumulators): against a loop per row the results are bit for bit the same in float32 and
    within an ulp in float64 (compared), and the loop per row took 4.8 against 2.1 us per
    64 x 10 float32 block (measured). Compiled without fast-math (the exp's range reduction
    keeps its order)."""
    prefer_512()
    nb_ = X.shape[0]
    T = np.empty((3 * n + 1, nb_), X.dtype)  # mu, x, exp(mu - max), max: one row per unit
    A = np.zeros((3, nb_))  # per row: sum x, x . mu, z
    M, XT, E, mmax = T[:n], T[n : 2 * n], T[2 * n : 3 * n], T[3 * n]
    sx, xmu, z = A[0], A[1], A[2]
    for b in range(nb_):  # the block's rows become columns
        x_ = X[b, o : o + n]
        mc = MUC[b, eo : eo + n]
        mv = MUV[b, eo : eo + n]
        for j in range(n):
            M[j, b] = mc[j] + mv[j] if has_var else mc[j]
            XT[j, b] = x_[j]
    for b in range(nb_):  # (in X's precision: a float64 max made every exp a float64 one)
        mmax[b] = _like(X, -np.inf)
    for j in range(n):  # unit by unit, each a vector over the rows
        mj = M[j]
        xj = XT[j]
        for b in range(nb_):
            sx[b] += xj[b]
            xmu[b] += xj[b] * mj[b]
            mmax[b] = max(mmax[b], mj[b])
    for j in range(n):
        mj = M[j]
        ej = E[j]
        for b in range(nb_):
            e = _exp_nonpos(mj[b] - mmax[b])
            ej[b] = e
            z[b] += e
    acc = 0.0
    for b in range(nb_):  # back to rows: the errors, the own terms, the energy
        lse = mmax[b] + np.log(z[b])
        sz = sx[b] / z[b]
        x_ = X[b, o : o + n]
        e_ = EPS[b, eo : eo + n]
        w_ = OWN[b, eo : eo + n]
        for j in range(n):
            e_[j] = x_[j] - sz * E[j, b]
        if not clamped:  # -log softmax(mu): the own term of a free F population
            for j in range(n):
                w_[j] = lse - M[j, b]
        acc += sx[b] * lse - xmu[b]
    return acc


@nb.njit(**_JIT_REDUCE)  # reassociated sums and maxima vectorise; the exp is in _exp_shifted
def _dist_block(X, MUC, MUV, EPS, OWN, code, o, eo, n, has_var, clamped):
    """A Bernoulli or Categorical population (codes of neuropc.model.distributions): the errors
    ``eps = -dF/dmu`` into EPS, the own terms ``dF/dx`` into OWN (free populations) and the
    batch-mean energy, from ``mu = MUC (+ MUV)`` (logits). Formulas in the distributions module's
    docstring; a clamped value holds probabilities, a free one under KL holds logits."""
    prefer_512()
    nb_ = X.shape[0]
    if code == 3 or (code == 4 and clamped):  # Categorical F, or KL on data: F plus x log x
        acc = _categorical_f(X, MUC, MUV, EPS, OWN, o, eo, n, has_var, clamped)
        if code == 4:
            for b in range(nb_):
                x_ = X[b, o : o + n]
                for j in range(n):
                    acc += _xlogx(float(x_[j]))
        return acc / nb_
    acc = 0.0
    plain = code == 1 or clamped  # Bernoulli F, or a clamped Bernoulli KL (data)
    for b in range(nb_):
        x_ = X[b, o : o + n]
        mc = MUC[b, eo : eo + n]
        mv = MUV[b, eo : eo + n]
        e_ = EPS[b, eo : eo + n]
        w_ = OWN[b, eo : eo + n]
        if code <= 2:  # Bernoulli
            for j in range(n):
                mu = float(mc[j]) + (float(mv[j]) if has_var else 0.0)
                x = float(x_[j])
                q = 1.0 / (1.0 + np.exp(-mu))
                # below the smallest normal float32 the error would be stored as a subnormal,
                # and gemms on subnormals run tens of times slower (a saturated logit < -87)
                q = q if q > _TINY else 0.0
                if plain:
                    e_[j] = x - q
                    w_[j] = -mu
                    f = _softplus(mu) - x * mu
                    if code == 2:
                        f += _xlogx(x) + _xlogx(1.0 - x)
                else:
                    p = 1.0 / (1.0 + np.exp(-x))
                    e_[j] = p - q
                    w_[j] = p * (1.0 - p) * (x - mu)
                    f = p * (_softplus(-mu) - _softplus(-x)) + (1.0 - p) * (
                        _softplus(mu) - _softplus(x)
                    )
                acc += f
        else:  # a free Categorical under KL (F and data go to _categorical_f): softmax rows
            # in the buffers' dtype (float32 math for float32 runs: the errors are stored in it
            # anyway), accumulating the energy in float64
            # pass 1: mu (kept in the OWN row) and its max
            for j in range(n):
                w_[j] = mc[j] + mv[j] if has_var else mc[j]
            mmax = w_[0]
            for j in range(1, n):
                mmax = max(mmax, w_[j])
            # pass 2: exp(mu - max) (kept in the EPS row) and its sum: one exp per unit
            _exp_shifted(w_, e_, mmax)
            z = 0.0
            for j in range(n):
                z += e_[j]
            lse = mmax + np.log(z)
            xmax = -np.inf
            for j in range(n):
                xmax = max(xmax, float(x_[j]))
            zx = 0.0
            for j in range(n):
                zx += np.exp(float(x_[j]) - xmax)
            lsex = xmax + np.log(zx)
            f = 0.0  # sum p ell, ell = log p - log q
            for j in range(n):
                lp = float(x_[j]) - lsex
                f += np.exp(lp) * (lp - (float(w_[j]) - lse))
            for j in range(n):
                lp = float(x_[j]) - lsex
                p = np.exp(lp)
                e_[j] = p - float(e_[j]) / z
                w_[j] = p * ((lp - (float(w_[j]) - lse)) - f)
            acc += f
    return acc / nb_


@nb.njit(**_JIT_REDUCE)
def _update_block(X, DFX, BP, EPS, o, eo, n, has_err, has_bp, rate, rown):
    """Deterministic value step x <- x - rate (eps - f'(x) * bp); adds |dx|^2 per row to rown."""
    prefer_512()
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, max(eo, 0) : max(eo, 0) + n]
        s = 0.0
        if has_err and has_bp:
            for j in range(n):
                dx = -rate * (e_[j] - d_[j] * bp[j])
                x_[j] += dx
                s += dx * dx
        elif has_err:
            for j in range(n):
                dx = -rate * e_[j]
                x_[j] += dx
                s += dx * dx
        elif has_bp:
            for j in range(n):
                dx = rate * d_[j] * bp[j]
                x_[j] += dx
                s += dx * dx
        rown[b] += s


@nb.njit(**_JIT)
def _value_step(X, FX, DFX, BP, EPS, o, eo, n, has_err, has_bp, rate, tanh):
    """The value step of :func:`_update_block` without the update norms (when there is no early
    stop)::

        x <- x - rate (eps - f'(x) * bp)

    Compiled without fast-math, yet bit for bit the values of :func:`_update_block`: there LLVM
    contracts ``eps - f' bp`` into one FMA (and nothing else, the step also feeding the norm),
    which ``_fmuladd`` does here; without the norm, contract would also fuse ``x + dx``. One
    function per case, as in :func:`_errors_block` (measured 1.6x faster than branches).

    ``tanh``: the population's activation is tanh and refreshed after the step. A hidden
    population (errors and a back-projection) then takes the step and ``FX, DFX = tanh(x),
    1 - tanh(x)^2`` in one pass (:func:`_step_err_bp`). Returns whether it did."""
    e0 = max(eo, 0)
    if has_err and has_bp:
        _step_err_bp(X, FX, DFX, BP, EPS, o, e0, n, rate, tanh)
        return tanh
    elif has_err:
        _step_err(X, EPS, o, e0, n, rate)
    elif has_bp:
        _step_bp(X, DFX, BP, o, n, rate)
    return False


@nb.njit(**_JIT)
def _step_err_bp(X, FX, DFX, BP, EPS, o, e0, n, rate, tanh):
    """x <- x - rate (eps - f'(x) * bp); with ``tanh``, then ``FX, DFX = tanh(x), 1 - tanh(x)^2``
    of the new values in the same loop: bit for bit the two passes, without the second pass over
    the values (a 64 x 128 float32 block: 3.8 -> 3.1 us, measured). The flag is the same for the
    whole loop, so LLVM compiles a loop for each value (as fast as two functions, measured)."""
    prefer_512()
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        f_ = FX[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        for j in range(n):
            x_[j] += -rate * _fmuladd(-d_[j], bp[j], e_[j])
            if tanh:  # (the stored value: the step is in float64 for a float32 x)
                t = _tanh(x_[j])
                f_[j] = t
                d_[j] = 1.0 - t * t


@nb.njit(**_JIT)
def _step_err(X, EPS, o, e0, n, rate):
    """x <- x - rate eps."""
    prefer_512()
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        for j in range(n):
            x_[j] += -rate * e_[j]


@nb.njit(**_JIT)
def _step_bp(X, DFX, BP, o, n, rate):
    """x <- x + rate f'(x) * bp."""
    prefer_512()
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        for j in range(n):
            x_[j] += rate * d_[j] * bp[j]


@nb.njit(**_JIT)
def _update_block_general(
    X, DFX, BP, EPS, MUC, MUV, PI, o, eo, n, has_err, has_bp, has_var, free, leaky, rate,
    err_rate, noise_sd, Z, rown, NZ, keep_noise, V, precond, beta2, peps, bc,
):  # fmt: skip
    """General value step, for populations with leaky error neurons (Bogacz 2017 eqs 12-14):
    eps <- eps + err_rate ((x - mu) - eps / Pi) from the old state and, when free, the value step
    of :func:`_update_block_free` (Langevin noise ``Z[b n + j]``, drawn as noise_sd N(0, 1), the
    preconditioner ``v <- beta2 v + (1 - beta2) g^2`` in ``V``, ``M = 1 / (peps + sqrt(v bc))``,
    ``dx = -rate M g + sqrt(M) noise``). With ``keep_noise`` the noise added is also written to
    ``NZ`` (recording)."""
    e0 = max(eo, 0)
    pi = PI[e0 : e0 + n]
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        mc = MUC[b, e0 : e0 + n]
        mv = MUV[b, e0 : e0 + n]
        z_ = Z[b * n : b * n + n]
        s = 0.0
        for j in range(n):
            x = x_[j]
            g = 0.0
            if has_err:
                g = e_[j]
            if has_bp:
                g -= d_[j] * bp[j]
            if leaky and has_err:
                mu = mc[j]
                if has_var:
                    mu += mv[j]
                e = e_[j]
                e_[j] = e + err_rate * ((x - mu) - e / pi[j])
            if free:
                m = 1.0
                if precond:
                    v = beta2 * V[b, o + j] + (1.0 - beta2) * g * g
                    V[b, o + j] = v
                    m = 1.0 / (peps + np.sqrt(v * bc))
                dx = -rate * m * g
                s += dx * dx
                if noise_sd > 0.0:
                    xi = np.sqrt(m) * z_[j]  # Z holds noise_sd N(0, 1)
                    dx += xi
                    if keep_noise:
                        NZ[b, o + j] = xi
                x_[j] = x + dx
        rown[b] += s


def _like(A, v):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_like)
def _like_impl(A, v):
    """``v`` as a scalar of ``A``'s dtype (float32 arithmetic runs at twice the SIMD width)."""
    if A.dtype == types.float32:
        return lambda A, v: np.float32(v)
    return lambda A, v: np.float64(v)


@intrinsic
def _fmuladd(typingctx, a, b, c):
    """``a * b + c`` as LLVM's ``llvm.fmuladd``: fused into one FMA where the target has one,
    exactly what the ``contract`` fast-math flag lets LLVM do with ``c + a * b``. Kernels compiled
    without fast-math use it to reproduce, bit for bit, the contraction of a ``_JIT_REDUCE``
    kernel while keeping every other operation uncontracted."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fmuladd.{ty.intrinsic_name}"
        )
        return builder.call(fn, args)

    return a(a, b, c), codegen


@nb.njit(**_JIT)
def _update_block_free(X, FX, DFX, BP, EPS, o, eo, n, has_err, has_bp, rate, noise_sd, Z, G, rown,
                       NZ, keep_noise, V, precond, beta2, peps, bc, norms, tanh):  # fmt: skip
    """Value step of a free population without leaky errors, with Langevin noise and/or the
    diagonal preconditioner, in the buffers' precision::

        g = eps - f'(x) * bp,   v <- beta2 v + (1 - beta2) g^2 (in V),   M = 1 / (peps + sqrt(v bc))
        x <- x - rate M g + xi,   xi = sqrt(M) Z[b n + j]

    with ``Z`` drawn as noise_sd N(0, 1) (M = 1 without the preconditioner, no noise when
    ``noise_sd == 0``); adds |rate M g|^2 per row to ``rown`` (with ``norms``: tol's early stop;
    the plain Langevin step skips them otherwise, :func:`_noise_step`). The noise added is (or, scaled by
    sqrt(M), goes back into) ``Z``, and with ``keep_noise`` is copied from there to ``NZ``, so
    recording runs the very same loops (same rounding) as not recording.

    Each case is a function of its own with one straight-line loop over the rows (``g`` first
    into the scratch ``G``, B n values, unless the error and the back-projection both exist):
    measured in compiled code, the same loops as branches of one function ran 1.5-2x slower.

    ``tanh`` as in :func:`_value_step`: the plain Langevin step of a hidden tanh population then
    refreshes ``FX, DFX`` in the same pass (:func:`_noise_step`). Returns whether it did."""
    prefer_512()
    e0 = max(eo, 0)
    done = False
    if has_err and has_bp and not precond and not norms:
        _noise_step(X, FX, DFX, BP, EPS, o, e0, n, rate, Z, tanh)
        done = tanh
    elif has_err and has_bp and precond and not norms:
        _precond_step(X, DFX, BP, EPS, o, e0, n, rate, Z, V, beta2, peps, bc, noise_sd > 0.0)
    elif has_err and has_bp and not precond:
        _noise_rows(X, DFX, BP, EPS, o, e0, n, rate, Z, rown)
    else:
        _grad_rows(DFX, BP, EPS, o, e0, n, has_err, has_bp, G)
        if not precond:
            _noise_rows_g(X, o, n, rate, G, Z, rown)
        elif noise_sd > 0.0:
            _precond_noise_rows(X, o, n, rate, G, Z, V, beta2, peps, bc, rown)
        else:
            _precond_rows(X, o, n, rate, G, V, beta2, peps, bc, rown)
    if keep_noise:
        for b in range(X.shape[0]):
            NZ[b, o : o + n] = Z[b * n : b * n + n]
    return done


@nb.njit(**_JIT_REDUCE)
def _noise_rows(X, DFX, BP, EPS, o, e0, n, rate, Z, rown):
    """x <- x - rate (eps - f'(x) * bp) + z (Langevin step with the error and back-projection)."""
    prefer_512()
    rate_ = _like(X, rate)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        z_ = Z[b * n : b * n + n]
        s = 0.0
        for j in range(n):
            dx = -rate_ * (e_[j] - d_[j] * bp[j])
            x_[j] += dx + z_[j]
            s += np.float64(dx) * np.float64(dx)
        rown[b] += s


@nb.njit(**_JIT)
def _noise_step(X, FX, DFX, BP, EPS, o, e0, n, rate, Z, tanh):
    """:func:`_noise_rows` without the update norms (no early stop), bit for bit its values:
    compiled without fast-math, with the one contraction LLVM makes there (``eps - f' bp`` into
    an FMA, :func:`_fmuladd`), as :func:`_value_step` does for the noiseless step. With
    ``tanh``, ``FX, DFX`` of the new values in the same loop (as :func:`_step_err_bp`)."""
    prefer_512()
    rate_ = _like(X, rate)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        f_ = FX[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        z_ = Z[b * n : b * n + n]
        for j in range(n):
            dx = -rate_ * _fmuladd(-d_[j], bp[j], e_[j])
            x_[j] += dx + z_[j]
            if tanh:
                t = _tanh(x_[j])
                f_[j] = t
                d_[j] = 1.0 - t * t


@nb.njit(**_JIT)
def _precond_step(X, DFX, BP, EPS, o, e0, n, rate, Z, V, beta2, peps, bc, noisy):
    """The preconditioned (Langevin) step of a population with errors and back-projections
    without tol's update norms: :func:`_precond_rows` (with ``noisy``,
    :func:`_precond_noise_rows`) in one pass per row, ``g = eps - f'(x) bp`` computed in place
    rather than through the scratch ``G``. The per-pass set-up and the scratch's traffic were
    most of the preconditioner's cost once the plain step got fast."""
    if noisy:
        _precond_noise_pass(X, DFX, BP, EPS, o, e0, n, rate, Z, V, beta2, peps, bc)
    else:
        _precond_pass(X, DFX, BP, EPS, o, e0, n, rate, V, beta2, peps, bc)


@nb.njit(**_JIT)
def _precond_pass(X, DFX, BP, EPS, o, e0, n, rate, V, beta2, peps, bc):
    """v <- beta2 v + (1 - beta2) g^2,  x <- x - rate g / (peps + sqrt(v bc))."""
    prefer_512()
    rate_, b2, c2 = _like(X, rate), _like(X, beta2), _like(X, 1.0 - beta2)
    pe, bc_, one = _like(X, peps), _like(X, bc), _like(X, 1.0)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        v_ = V[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        for j in range(n):
            g = e_[j] - d_[j] * bp[j]
            v = b2 * v_[j] + c2 * g * g
            v_[j] = v
            x_[j] += -rate_ * (one / (pe + np.sqrt(v * bc_))) * g


@nb.njit(**_JIT)
def _precond_noise_pass(X, DFX, BP, EPS, o, e0, n, rate, Z, V, beta2, peps, bc):
    """:func:`_precond_pass` plus the noise sqrt(M) z, written back into Z (the noise added)."""
    prefer_512()
    rate_, b2, c2 = _like(X, rate), _like(X, beta2), _like(X, 1.0 - beta2)
    pe, bc_, one = _like(X, peps), _like(X, bc), _like(X, 1.0)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        v_ = V[b, o : o + n]
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        z_ = Z[b * n : b * n + n]
        for j in range(n):
            g = e_[j] - d_[j] * bp[j]
            v = b2 * v_[j] + c2 * g * g
            v_[j] = v
            m = one / (pe + np.sqrt(v * bc_))
            xi = np.sqrt(m) * z_[j]
            z_[j] = xi
            x_[j] += -rate_ * m * g + xi


@nb.njit(**_JIT)
def _grad_rows(DFX, BP, EPS, o, e0, n, has_err, has_bp, G):
    """G[b n + j] = dF/dx = eps - f'(x) * bp (each term when the population has it)."""
    prefer_512()
    for b in range(DFX.shape[0]):
        d_ = DFX[b, o : o + n]
        bp = BP[b, o : o + n]
        e_ = EPS[b, e0 : e0 + n]
        g_ = G[b * n : b * n + n]
        if has_err and has_bp:
            for j in range(n):
                g_[j] = e_[j] - d_[j] * bp[j]
        elif has_err:
            for j in range(n):
                g_[j] = e_[j]
        elif has_bp:
            for j in range(n):
                g_[j] = -(d_[j] * bp[j])
        else:
            for j in range(n):
                g_[j] = 0.0


@nb.njit(**_JIT_REDUCE)
def _noise_rows_g(X, o, n, rate, G, Z, rown):
    """x <- x - rate g + z."""
    prefer_512()
    rate_ = _like(X, rate)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        g_ = G[b * n : b * n + n]
        z_ = Z[b * n : b * n + n]
        s = 0.0
        for j in range(n):
            dx = -rate_ * g_[j]
            x_[j] += dx + z_[j]
            s += np.float64(dx) * np.float64(dx)
        rown[b] += s


@nb.njit(**_JIT_REDUCE)
def _precond_rows(X, o, n, rate, G, V, beta2, peps, bc, rown):
    """v <- beta2 v + (1 - beta2) g^2,  x <- x - rate g / (peps + sqrt(v bc))."""
    prefer_512()
    rate_, b2, c2 = _like(X, rate), _like(X, beta2), _like(X, 1.0 - beta2)
    pe, bc_, one = _like(X, peps), _like(X, bc), _like(X, 1.0)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        v_ = V[b, o : o + n]
        g_ = G[b * n : b * n + n]
        s = 0.0
        for j in range(n):
            g = g_[j]
            v = b2 * v_[j] + c2 * g * g
            v_[j] = v
            dx = -rate_ * (one / (pe + np.sqrt(v * bc_))) * g
            x_[j] += dx
            s += np.float64(dx) * np.float64(dx)
        rown[b] += s


@nb.njit(**_JIT_REDUCE)
def _precond_noise_rows(X, o, n, rate, G, Z, V, beta2, peps, bc, rown):
    """:func:`_precond_rows` plus the noise sqrt(M) z, written back into Z (the noise added)."""
    prefer_512()
    rate_, b2, c2 = _like(X, rate), _like(X, beta2), _like(X, 1.0 - beta2)
    pe, bc_, one = _like(X, peps), _like(X, bc), _like(X, 1.0)
    for b in range(X.shape[0]):
        x_ = X[b, o : o + n]
        v_ = V[b, o : o + n]
        g_ = G[b * n : b * n + n]
        z_ = Z[b * n : b * n + n]
        s = 0.0
        for j in range(n):
            g = g_[j]
            v = b2 * v_[j] + c2 * g * g
            v_[j] = v
            m = one / (pe + np.sqrt(v * bc_))
            dx = -rate_ * m * g
            xi = np.sqrt(m) * z_[j]
            z_[j] = xi
            x_[j] += dx + xi
            s += np.float64(dx) * np.float64(dx)
        rown[b] += s


@nb.njit(**_JIT)
def _gather(SRC, rows, cols, OUT, s):
    """OUT[r, s, k] = SRC[rows[r], cols[k]]: one recorded step, trial-major."""
    prefer_512()
    for r in range(rows.shape[0]):
        src = SRC[rows[r]]
        o = OUT[r, s]
        for k in range(cols.shape[0]):
            o[k] = src[cols[k]]


@nb.njit(**_JIT)
def _gather_nudged(X, MUC, MUV, has_var, rows, cols, OUT, s, voff, eoff, sizes, nudged, beta):
    """Recorded columns of nudged targets hold what :class:`State` reports for them,
    ``mu + beta (y - mu)`` of the current prediction, not the label ``y`` kept in ``X``."""
    prefer_512()
    for k in range(cols.shape[0]):
        c = cols[k]
        for p in range(sizes.shape[0]):
            if nudged[p] and voff[p] <= c < voff[p] + sizes[p]:
                ec = eoff[p] + c - voff[p]
                for r in range(rows.shape[0]):
                    b = rows[r]
                    mu = MUC[b, ec] + (MUV[b, ec] if has_var[p] else 0.0)
                    OUT[r, s, k] = mu + beta * (X[b, c] - mu)


# ---------------------------------------------------------------------------------------------
# the whole inference loop of a batch
# ---------------------------------------------------------------------------------------------


_rule_step = nb.njit(inline="always", **_JIT)(_precision.rule_step)
_rule_start = nb.njit(inline="always", **_JIT)(_precision.rule_start)


@nb.njit(**_JIT)
def _fast_precision(EPS, PI, SF, eo, n, rule, hp):
    """One step of a fast precision's rule (neuropc.dynamics.precision.rule_step) on the errors
    of the current state: ``<d^2>`` per unit with ``d = eps / Pi`` (its mean over units when
    ``hp[5] > 1``, a scalar precision), then ``Pi`` (and the EMA's ``S``) in place."""
    prefer_512()
    nb_ = EPS.shape[0]
    pi = PI[eo : eo + n].astype(np.float64)
    second = np.zeros(n)
    for b in range(nb_):
        for j in range(n):
            d = EPS[b, eo + j] / pi[j]
            second[j] += d * d
    second /= nb_
    if hp[5] > 1.0:
        second[:] = np.mean(second)
    new, cov = _rule_step(pi, SF[eo : eo + n], second, rule == 2, hp[0], hp[1], hp[2], hp[3],
                          hp[4], hp[5])  # fmt: skip
    PI[eo : eo + n] = new
    SF[eo : eo + n] = cov


INIT_ZERO, INIT_FORWARD = _sched.ZERO, _sched.FORWARD
GRAD_END, GRAD_EVERY, GRAD_COLLECTED = _sched.END, _sched.EVERY, _sched.COLLECTED
OPT_NEVER, OPT_END, OPT_EVERY = _sched.NEVER, _sched.AT_END, _sched.EACH_STEP


@nb.njit(**_JIT)
def _const_prediction(p, FX, MUC, P, sizes, voff, eoff, clamped, cpre, cpost, cwoff, boff):
    """MUC_p = b_p + sum over connections from clamped populations of f(x_pre) W^T."""
    prefer_512()
    nb_ = FX.shape[0]
    eo = eoff[p]
    bo = boff[p]
    n = sizes[p]
    for b in range(nb_):
        m = MUC[b, eo : eo + n]
        for j in range(n):
            m[j] = P[bo + j] if bo >= 0 else 0.0
    for c in range(cpre.shape[0]):
        if cpost[c] == p and clamped[cpre[c]]:
            q = cpre[c]
            gemm(False, True, nb_, n, sizes[q], 1.0, FX[0:, voff[q]:], FX.shape[1],
                 P[cwoff[c]:], sizes[q], 1.0, MUC[0:, eo:], MUC.shape[1])  # fmt: skip


@nb.njit(**_JIT)
def _var_prediction(p, FX, OUT, o_out, P, sizes, voff, clamped, cpre, cpost, cwoff, beta, PK, PO):
    """OUT[:, o_out:] = beta OUT + sum over connections from free populations of f(x_pre) W^T
    (through a weight matrix packed by :func:`_pack_weights` where ``PO`` has one)."""
    prefer_512()
    for c in range(cpre.shape[0]):
        if cpost[c] == p and not clamped[cpre[c]]:
            q = cpre[c]
            if PO[c, 0] >= 0:
                _gemm_packed(FX.shape[0], sizes[p], sizes[q], PK[PO[c, 0]:], FX[0:, voff[q]:],
                             FX.shape[1], beta, OUT[0:, o_out:], OUT.shape[1])  # fmt: skip
            else:
                gemm(False, True, FX.shape[0], sizes[p], sizes[q], 1.0, FX[0:, voff[q]:],
                     FX.shape[1], P[cwoff[c]:], sizes[q], beta, OUT[0:, o_out:],
                     OUT.shape[1])  # fmt: skip
            beta = 1.0


@nb.njit(**_JIT)
def _add_moments(X, MOM, clamped, voff, sizes, w):
    prefer_512()
    for p in range(sizes.shape[0]):
        if not clamped[p]:
            for b in range(X.shape[0]):
                for j in range(voff[p], voff[p] + sizes[p]):
                    x = X[b, j]
                    MOM[0, b, j] += w * x
                    MOM[1, b, j] += w * x * x


@nb.njit(nogil=True, **_JIT)  # without the GIL: row blocks of a batch run on threads
def infer(
    X, FX, DFX, BP, MUC, MUV, EPS, OWN, P, PI, G, S1, S2, BK,
    sizes, voff, eoff, has_err, act_code, act_param, cpre, cpost, cwoff, boff, trainable, dist,
    clamped, init, frozen, var_pred, is_pre, refresh_act, leaks, backproj, first_bp, receives_bp,
    grad_at, T, rate, noise_sd, tol, err_rate, seed, row0, rows, energies, want_grads, zero_grads, opt_when,
    nudge, nudged, grad_scale, fast_rule, fast_hp, SF, collect, collect_weight, MOM, moments,
    packed, V, precond, beta2, peps, bias_correction, opt_kind, hp, opt_t,
    rec_every, rec_rows, rec_vcols, rec_ecols, rec_ncols, VT, ET, NT, NZ,
):  # fmt: skip
    """Execute one run's schedule (:mod:`neuropc.dynamics.schedule`, whose docstring gives the
    skeleton this loop walks) on one batch, in place. Returns ``(steps_done, bad_step, bad_pop,
    optimiser_steps, bad_param)``; ``bad_param >= 0`` is the first parameter an optimiser step
    would have made non-finite (that step was not applied, and the run stopped there).

    Dynamics (overdamped Langevin on the total energy F; noise_sd = 0 is plain PC)::

        x <- x - rate * dF/dx + noise_sd xi,
        dF/dx_p = eps_p - f'(x_p) * sum_{c: p -> q} eps_q W_c          (free populations only)

    Predictions from clamped populations (and biases), and frozen ones, live in ``MUC``; the part
    from free populations is recomputed into ``MUV`` every step where ``var_pred``. Energies
    (batch mean, per population) of the state before step t go to ``energies[t]``, t = 0..T;
    ``EPS`` holds the errors of the final state. Early stop when the largest per-sample update
    norm ``|dx|_2`` falls below ``tol`` (tol > 0). ``bad_step = -1`` unless an energy became
    non-finite, in which case nothing was learned. A ``nudged`` target holds mu + beta (y - mu)
    (its error is Pi beta (y - mu)); gradients are scaled by ``grad_scale``.

    Recording (``rec_every > 0``): at every step t with t % rec_every == 0 the values ``X`` and
    errors ``EPS`` of state t (rows ``rec_rows``, columns ``rec_vcols`` / ``rec_ecols``) are
    gathered into ``VT[:, t // rec_every]`` / ``ET[...]``, and the noise added by update t into
    ``NT`` (through ``NZ``); rows after an early stop repeat the final state (noise 0).

    Row blocks: the arrays may hold rows ``row0 .. row0 + B`` of a batch of ``rows`` (see
    :mod:`neuropc.backends.row_blocks`). A row's noise depends on its index in the batch only
    (:func:`fill_normal_rows`), so a batch run in blocks draws the normals it draws whole.
    """
    prefer_512()
    nb_ = X.shape[0]
    NV = X.shape[1]
    NE = EPS.shape[1]
    npop = sizes.shape[0]
    nconn = cpre.shape[0]
    # the Langevin noise: one counter-based stream per run (the seed's key), drawn per free
    # population, step and row into the scratch Z (neuropc.backends._normal)
    key = key_from_seed(seed)
    ctr = np.uint64(0)
    # scratch of one updated population (sized for the widest: the whole row of values, the
    # clamped input's 784 included, cost a fresh mmap and its page faults per run, measured)
    wide = 0
    for p in range(npop):
        if not clamped[p] or leaks[p]:
            wide = max(wide, sizes[p])
    Z = np.empty(nb_ * wide if noise_sd > 0.0 else 0, X.dtype)
    GR = np.empty(nb_ * wide if noise_sd > 0.0 or precond else 0, X.dtype)  # dF/dx (_grad_rows)
    # ``packed``: the weights the steps multiply by, packed once for MKL (:func:`_pack_weights`;
    # float32, and never where an optimiser step changes them during inference)
    PO = np.full((nconn, 2), -1, np.int64)
    PK = np.empty(0, np.float32)
    if packed and X.itemsize == 4 and not (opt_kind != OPT_NONE and opt_when == OPT_EVERY):
        PK = _pack_weights(P, sizes, cpre, cpost, cwoff, var_pred, backproj, clamped, nb_, PO)
    if precond:  # the preconditioner's statistics start at 0 in every run
        for b in range(nb_):
            for j in range(NV):
                V[b, j] = 0.0
    for p in range(npop):  # a fast precision's rule starts from the slow value
        if fast_rule[p] == 2:
            eo = eoff[p]
            SF[eo : eo + sizes[p]] = _rule_start(PI[eo : eo + sizes[p]], fast_hp[p, 2])

    # ---- initialisation, in topological order -------------------------------------------
    for p in range(npop):
        o = voff[p]
        n = sizes[p]
        if init[p] == INIT_ZERO:
            for b in range(nb_):
                for j in range(o, o + n):
                    X[b, j] = 0.0
        if has_err[p]:
            eo = eoff[p]
            _const_prediction(p, FX, MUC, P, sizes, voff, eoff, clamped, cpre, cpost, cwoff, boff)
            if frozen[p]:  # the whole prediction, once (FPA)
                _var_prediction(p, FX, MUC, eo, P, sizes, voff, clamped, cpre, cpost, cwoff, 1.0,
                                PK, PO)  # fmt: skip
            if init[p] == INIT_FORWARD:
                for b in range(nb_):
                    for j in range(n):
                        X[b, o + j] = MUC[b, eo + j]
                if var_pred[p]:
                    _var_prediction(p, FX, X, o, P, sizes, voff, clamped, cpre, cpost, cwoff,
                                    1.0, PK, PO)  # fmt: skip
        if is_pre[p]:
            act_block(act_code[p], act_param[p], X, FX, DFX, o, n)
    for p in range(npop):
        if leaks[p]:
            for b in range(nb_):
                for j in range(eoff[p], eoff[p] + sizes[p]):
                    EPS[b, j] = 0.0
    if zero_grads:
        for i in range(G.shape[0]):
            G[i] = 0.0
    if moments:
        MOM[:] = 0.0
    learn = opt_kind != OPT_NONE and opt_when != OPT_NEVER
    keep_noise = rec_every > 0 and rec_ncols.shape[0] > 0 and noise_sd > 0.0
    any_step_grads = False
    every_grads = False
    end_grads = False
    for p in range(npop):
        any_step_grads = any_step_grads or grad_at[p] >= 0
        every_grads = every_grads or grad_at[p] == GRAD_EVERY
        end_grads = end_grads or grad_at[p] == GRAD_END
    any_step_grads = any_step_grads and want_grads
    every_grads = every_grads and want_grads
    collecting = want_grads and collect.shape[0] > 0 and np.any(collect)
    steps_taken = 0

    rown = np.zeros(nb_)
    done = T
    stop_next = False
    for t in range(T + 1):
        # predictions from free populations
        for p in range(npop):
            if var_pred[p]:
                _var_prediction(
                    p, FX, MUV, eoff[p], P, sizes, voff, clamped, cpre, cpost, cwoff, 0.0, PK, PO
                )
        # errors and energies
        for p in range(npop):
            if has_err[p]:
                if dist[p] != 0:  # Bernoulli / Categorical: errors, own terms, energy
                    e = _dist_block(X, MUC, MUV, EPS, OWN, dist[p], voff[p], eoff[p], sizes[p],
                                    var_pred[p], clamped[p])  # fmt: skip
                else:
                    beta = nudge if nudged[p] else 1.0
                    e = _errors_block(X, MUC, MUV, EPS, PI, voff[p], eoff[p], sizes[p],
                                      var_pred[p], not leaks[p], beta)  # fmt: skip
                if fast_rule[p] != 0:  # the normaliser of a precision that changes per step
                    e -= 0.5 * np.sum(np.log(PI[eoff[p] : eoff[p] + sizes[p]]))
                energies[t, p] = e
                if not np.isfinite(e):
                    return t, t, p, steps_taken, -1
        if any_step_grads:  # the connections into populations scheduled at step t learn now
            weight_grads(FX, EPS, G, sizes, voff, eoff, cpre, cpost, cwoff, boff, trainable,
                         grad_at, t, grad_scale, False, rows)  # fmt: skip
        if collecting and collect[t]:  # a collected sample: its gradient joins the average
            weight_grads(FX, EPS, G, sizes, voff, eoff, cpre, cpost, cwoff, boff, trainable,
                         grad_at, GRAD_COLLECTED, grad_scale * collect_weight, True, rows)  # fmt: skip
        if moments and collect[t]:  # the free values' mean and mean square over the samples
            _add_moments(X, MOM, clamped, voff, sizes, collect_weight)
        if rec_every > 0 and t % rec_every == 0:
            _gather(X, rec_rows, rec_vcols, VT, t // rec_every)
            _gather(EPS, rec_rows, rec_ecols, ET, t // rec_every)
            if nudge != 0.0:
                _gather_nudged(X, MUC, MUV, var_pred, rec_rows, rec_vcols, VT, t // rec_every,
                               voff, eoff, sizes, nudged, nudge)  # fmt: skip
        if t == T or stop_next:
            done = t
            break
        for p in range(npop):
            if fast_rule[p] != 0:
                _fast_precision(EPS, PI, SF, eoff[p], sizes[p], fast_rule[p], fast_hp[p])
        # back-projections of the errors to free presynaptic populations
        for c in range(nconn):
            if backproj[c]:
                q = cpre[c]
                p = cpost[c]
                beta = 0.0 if first_bp[c] else 1.0
                if PO[c, 1] >= 0:
                    _gemm_packed(nb_, sizes[q], sizes[p], PK[PO[c, 1]:], EPS[0:, eoff[p]:], NE,
                                 beta, BP[0:, voff[q]:], NV)  # fmt: skip
                else:
                    gemm(False, False, nb_, sizes[q], sizes[p], 1.0, EPS[0:, eoff[p]:], NE,
                         P[cwoff[c]:], sizes[q], beta, BP[0:, voff[q]:], NV)  # fmt: skip
        for p in range(npop):  # a softmax's Jacobian is not diagonal: apply it to the sum
            if receives_bp[p] and act_code[p] == ACT_SOFTMAX:
                _softmax_vjp(FX, BP, voff[p], sizes[p])
        if every_grads:  # gradients from the same state as the value step
            weight_grads(FX, EPS, G, sizes, voff, eoff, cpre, cpost, cwoff, boff, trainable,
                         grad_at, GRAD_EVERY, grad_scale, False, rows)  # fmt: skip
        # value (and leaky error) updates
        for b in range(nb_):
            rown[b] = 0.0
        for p in range(npop):
            free = not clamped[p]
            if not free and not leaks[p]:
                continue
            # the own term dF/dx: the error itself for a Gaussian, else computed with the errors
            own = EPS if dist[p] == 0 else OWN
            bc = 1.0 / (1.0 - beta2 ** (t + 1)) if bias_correction else 1.0
            zp = Z[: nb_ * sizes[p]]
            if free and noise_sd > 0.0:  # noise_sd N(0, 1) per unit
                fill_normal_rows(zp, sizes[p], row0, key, ctr, noise_sd)
                ctr += np.uint64(rows * ((sizes[p] + 1) // 2))
            # a hidden tanh population's plain or Langevin step refreshes f(x) in the same pass
            tanh = refresh_act[p] and act_code[p] == ACT_TANH
            fused = False
            if leaks[p]:
                _update_block_general(X, DFX, BP, own, MUC, MUV, PI, voff[p], eoff[p], sizes[p],
                                      has_err[p], receives_bp[p], var_pred[p], free, leaks[p],
                                      rate, err_rate, noise_sd, zp, rown, NZ, keep_noise, V,
                                      precond, beta2, peps, bc)  # fmt: skip
            elif noise_sd > 0.0 or precond:
                fused = _update_block_free(X, FX, DFX, BP, own, voff[p], eoff[p], sizes[p],
                                           has_err[p], receives_bp[p], rate, noise_sd, zp, GR,
                                           rown, NZ, keep_noise, V, precond, beta2, peps, bc,
                                           tol > 0.0, tanh)  # fmt: skip
            elif tol > 0.0:  # the update norms (rown) serve only the early stop
                _update_block(X, DFX, BP, own, voff[p], eoff[p], sizes[p], has_err[p],
                              receives_bp[p], rate, rown)  # fmt: skip
            else:
                fused = _value_step(X, FX, DFX, BP, own, voff[p], eoff[p], sizes[p], has_err[p],
                                    receives_bp[p], rate, tanh)  # fmt: skip
            if refresh_act[p] and not fused:
                act_block(act_code[p], act_param[p], X, FX, DFX, voff[p], sizes[p])
        if keep_noise and t % rec_every == 0:
            _gather(NZ, rec_rows, rec_ncols, NT, t // rec_every)
        if learn and opt_when == OPT_EVERY:
            bad_i = optimizer_step(
                opt_kind, P, G, S1, S2, hp, opt_t + steps_taken + 1, trainable, BK
            )
            if bad_i >= 0:  # the step would make a parameter non-finite: nothing was written
                return t, -1, -1, steps_taken, bad_i
            steps_taken += 1
            for p in range(npop):  # the weights changed: so did the constant predictions
                if has_err[p]:
                    _const_prediction(p, FX, MUC, P, sizes, voff, eoff, clamped, cpre, cpost,
                                      cwoff, boff)  # fmt: skip
        if tol > 0.0:
            m = 0.0
            for b in range(nb_):
                m = max(m, rown[b])
            if np.sqrt(m) < tol:
                stop_next = True
    if rec_every > 0:  # after an early stop the remaining rows hold the settled state
        for s in range(done // rec_every + 1, VT.shape[1]):
            _gather(X, rec_rows, rec_vcols, VT, s)
            _gather(EPS, rec_rows, rec_ecols, ET, s)
            if nudge != 0.0:
                _gather_nudged(X, MUC, MUV, var_pred, rec_rows, rec_vcols, VT, s, voff, eoff,
                               sizes, nudged, nudge)  # fmt: skip
    if nudge != 0.0:  # report what a nudged target holds: x = mu + beta (y - mu), final mu
        for p in range(npop):
            if nudged[p]:
                o, eo = voff[p], eoff[p]
                for b in range(nb_):
                    for j in range(sizes[p]):
                        mu = MUC[b, eo + j] + (MUV[b, eo + j] if var_pred[p] else 0.0)
                        X[b, o + j] = mu + nudge * (X[b, o + j] - mu)
    if want_grads and end_grads:
        weight_grads(FX, EPS, G, sizes, voff, eoff, cpre, cpost, cwoff, boff, trainable, grad_at,
                     GRAD_END, grad_scale, False, rows)  # fmt: skip
    if learn and opt_when == OPT_END:
        bad_i = optimizer_step(opt_kind, P, G, S1, S2, hp, opt_t + steps_taken + 1, trainable, BK)
        if bad_i >= 0:
            return done, -1, -1, steps_taken, bad_i
        steps_taken += 1
    return done, -1, -1, steps_taken, -1


# ---------------------------------------------------------------------------------------------
# local learning
# ---------------------------------------------------------------------------------------------
@nb.njit(**_JIT_REDUCE)
def weight_grads(FX, EPS, G, sizes, voff, eoff, cpre, cpost, cwoff, boff, trainable, grad_at, sel,
                 scale, acc, B):  # fmt: skip
    """Gradient of the batch-mean energy w.r.t. the parameters (local, Hebbian form)::

        dF/dW_c = -1/B sum_b eps_post f(x_pre)^T,    dF/db_p = -1/B sum_b eps_p

    over the rows of ``FX`` and ``EPS`` (a row block's part of a batch of ``B``), so a descent step ``W -= lr * G`` is the Hebbian update ``dW ∝ eps_post f(x_pre)^T``. Times
    ``scale`` (1/beta when nudging). Only the connections into, and the biases of, populations
    with ``grad_at == sel`` are computed (the schedule's timing); with ``acc`` they are added to
    ``G`` (a collected sample of Langevin learning) instead of replacing it. Frozen entries are
    zeroed.
    """
    prefer_512()
    nb_ = FX.shape[0]
    NV = FX.shape[1]
    NE = EPS.shape[1]
    for c in range(cpre.shape[0]):
        q = cpre[c]
        p = cpost[c]
        if grad_at[p] != sel:
            continue
        gemm(True, False, sizes[p], sizes[q], nb_, -scale / B, EPS[0:, eoff[p]:], NE,
             FX[0:, voff[q]:], NV, 1.0 if acc else 0.0, G[cwoff[c]:], sizes[q])  # fmt: skip
    for p in range(sizes.shape[0]):
        bo = boff[p]
        if bo >= 0 and grad_at[p] == sel:
            eo = eoff[p]
            n = sizes[p]
            g_ = G[bo : bo + n]
            old = g_.copy() if acc else g_[:0]
            for j in range(n):
                g_[j] = 0.0
            for b in range(nb_):
                e_ = EPS[b, eo : eo + n]
                for j in range(n):
                    g_[j] -= e_[j]
            for j in range(n):
                g_[j] *= scale / B
            if acc:  # a collected sample: add to the average so far
                for j in range(n):
                    g_[j] += old[j]
    for i in range(G.shape[0]):
        G[i] *= trainable[i]


@nb.njit(**_JIT)
def optimizer_step(kind, P, G, S1, S2, hp, t, trainable, BK):
    """One optimiser step on the flat parameters, in place (``t`` counts steps from 1), kept only
    if every new parameter and state entry is finite: returns -1 when kept, else the index of the
    first parameter that became non-finite, with parameters and state put back as they were.

    SGD (kind 1), hp = (lr, momentum, weight_decay, nesterov, dampening):
        g = G + wd P;  v = momentum v + (1 - dampening) g;  P -= lr (g + momentum v if nesterov else v)
    Adam (kind 2), hp = (lr, beta1, beta2, eps, weight_decay, decoupled):
        g = G (+ wd P unless decoupled);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
        P -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)  (+ lr wd P if decoupled, i.e. AdamW)
    Both follow torch.optim's definitions (S1, S2 are the state buffers). ``BK`` (3, n) receives
    the old parameters and state in the same pass (no slower than the step alone: it is bound by
    the arithmetic), so a bad step is undone without a second pass over the common case.
    """
    prefer_512()
    if _optimizer_pass(kind, P, G, S1, S2, hp, t, trainable, BK[0], BK[1], BK[2], G[:0], G) == 0:
        return -1
    return undo_optimizer_step(kind, P, S1, S2, hp, BK)


@nb.njit(nogil=True, **_JIT)
def reduce_step(kind, P, G, GB, S1, S2, hp, t, trainable, BK, a, b):
    """Entries ``a .. b`` of the parameters, for a batch run in row blocks: the gradient
    ``G = GB[0] + GB[1] + ...`` of the blocks' ``GB`` (each computed from zero, so ``G`` is
    rewritten), in block order; then, unless ``kind`` is ``OPT_NONE``, :func:`optimizer_step`'s
    update of these entries, the old values kept in ``BK``. Returns how many entries became
    non-finite: if any did over all ranges, :func:`undo_optimizer_step` names the first and
    restores the step."""
    prefer_512()
    g = G[a:b]
    if kind == OPT_ADAM and GB.shape[0] == 2:  # (two blocks: the sum in the step's own pass)
        return _optimizer_pass(kind, P[a:b], GB[0, a:b], S1[a:b], S2[a:b], hp, t,
                               trainable[a:b], BK[0, a:b], BK[1, a:b], BK[2, a:b], GB[1, a:b],
                               g)  # fmt: skip
    g[:] = GB[0, a:b]
    for k in range(1, GB.shape[0]):  # one straight (vectorised) pass per block
        _add_into(g, GB[k, a:b])
    if kind == OPT_NONE:
        return 0
    return _optimizer_pass(kind, P[a:b], g, S1[a:b], S2[a:b], hp, t, trainable[a:b],
                           BK[0, a:b], BK[1, a:b], BK[2, a:b], g[:0], g)  # fmt: skip


@nb.njit(inline="always", **_JIT)
def _add_into(y, x):
    for i in range(y.shape[0]):
        y[i] += x[i]


# ---------------------------------------------------------------------------------------------
# row blocks: one thread's share of a batch, and the team that runs them
# ---------------------------------------------------------------------------------------------
def _slot(context, builder, sig, args):
    """The address of entry ``args[1]`` of the 1-d int64 array ``args[0]``."""
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])


@intrinsic
def _atomic_add(typingctx, a, i, v):
    """``a[i] += v`` atomically (sequentially consistent); returns the old value."""

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), args[2], "seq_cst")

    return types.int64(a, types.intp, types.int64), codegen


@intrinsic
def _atomic_load(typingctx, a, i):
    """``a[i]``, read atomically (sequentially consistent: never hoisted out of a wait loop)."""

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "seq_cst", 8)

    return types.int64(a, types.intp), codegen


@intrinsic
def _pause(typingctx):
    """The x86 ``pause`` of a spin-wait loop (the row blocks run only with the x86 MKL)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")  # fmt: skip
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@nb.njit(inline="always", nogil=True, **_JIT)
def _wait_until(a, i, n):
    """Spin until ``a[i] >= n``, yielding the core every 64 turns (so that waiting threads
    never starve the ones they wait for when there are more threads than cores)."""
    turns = 0
    while _atomic_load(a, i) < n:
        _pause()
        turns += 1
        if turns == 64:
            _yield()
            turns = 0


@nb.njit(nogil=True, **_JIT)
def block_run(job):
    """One thread's share of a batch run in row blocks (:mod:`.row_blocks`). ``job`` is
    ``(sync, summary, res, blocks, parts, share, energies, P, G, GB, S1, S2, hp, t, trainable, BK,
    cuts, opt, grads)``: ``blocks`` holds :func:`infer`'s arguments for each block of rows (its
    energies into ``parts[i]``, its gradient from zero into ``GB[i]``); ``sync`` and ``summary``
    are zeroed counters.

    Every thread that runs this, however many there are, claims blocks until none is left and runs
    :func:`infer` on each (its result into ``res[i, :3]``; ``res[i, 3] = 1`` if it raised), waits
    until every block is done, then claims parameter ranges ``cuts[j] .. cuts[j + 1]`` and runs
    :func:`reduce_step` on each (adding its count of non-finite entries to ``summary[4]``), unless
    a block failed or diverged or ``grads`` is off. Whoever claims range 0 also sums the energies
    (:func:`_summarise`). Its gemms run on one MKL thread."""
    prefer_512()
    sync, summary, res, blocks, parts, share, energies = job[:7]
    P, G, GB, S1, S2, hp, t, trainable, BK, cuts, opt, grads = job[7:]
    n = len(blocks)
    prev = _mkl_local(1)
    while True:
        i = _atomic_add(sync, 0, 1)
        if i >= n:
            break
        try:
            r = infer(*blocks[i])
            res[i, 0], res[i, 1], res[i, 2] = r[0], r[1], r[2]
        except Exception:  # (out of memory): counted as done, or the others would wait forever
            res[i, 3] = 1
        _atomic_add(sync, 1, 1)
    _wait_until(sync, 1, n)
    ok = grads
    for k in range(n):
        ok = ok and res[k, 1] < 0 and res[k, 3] == 0
    while True:
        j = _atomic_add(sync, 2, 1)
        if j >= n:
            break
        if j == 0:
            _summarise(res, parts, share, energies, summary)
        if ok:
            bad = reduce_step(opt, P, G, GB, S1, S2, hp, t, trainable, BK, cuts[j], cuts[j + 1])
            _atomic_add(summary, 4, bad)
    _mkl_local(prev)


@nb.njit(nogil=True, **_JIT)
def _summarise(res, parts, share, energies, summary):
    """The batch's energies ``sum_i share[i] parts[i]`` (each block's batch mean weighted by its
    share of the rows), and into ``summary``: ``[0]`` whether a block failed, ``[1]``, ``[2]`` the
    earliest divergence (step, population; the lowest population on a tie; -1 if none) among the
    blocks, else the first non-finite entry of the summed energies, with ``[5] = 1``, ``[3]``
    the steps done (every block runs the same steps)."""
    prefer_512()
    best_t, best_p = -1, -1
    for k in range(res.shape[0]):
        summary[0] = max(summary[0], res[k, 3])
        tk, pk = res[k, 1], res[k, 2]
        if tk >= 0 and (best_t < 0 or tk < best_t or (tk == best_t and pk < best_p)):
            best_t, best_p = tk, pk
    energies[:] = 0.0
    for k in range(parts.shape[0]):
        energies += share[k] * parts[k]
    if best_t < 0:
        for a in range(energies.shape[0]):
            for b in range(energies.shape[1]):
                if best_t < 0 and not np.isfinite(energies[a, b]):
                    best_t, best_p = a, b
                    summary[5] = 1
    summary[1], summary[2], summary[3] = best_t, best_p, res[0, 0]


@intrinsic
def _team_call(typingctx, job, n):
    """``GOMP_parallel(task, &job, n, 0)`` of torch's libgomp: ``n`` threads of torch's own
    OpenMP team (the caller among them) each run ``task(&job)``, a C function generated here for
    ``job``'s type that reads ``job`` back and runs :func:`block_run` on it. No thread touches
    Python (the GIL handovers of a Python callback cost 0.1-0.2 ms a batch, measured)."""

    def codegen(context, builder, sig, args):
        value, nthreads = args
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        task_ty = ir.FunctionType(ir.VoidType(), [i8p])
        task = ir.Function(builder.module, task_ty, name="neuropc_block_task")
        task.linkage = "internal"
        tb = ir.IRBuilder(task.append_basic_block("entry"))
        job_ty = sig.args[0]
        loaded = tb.load(tb.bitcast(task.args[0], context.get_value_type(job_ty).as_pointer()))
        task_sig = types.none(job_ty)
        # block_run's body compiled into this function (not a call of its dispatcher, which
        # would optimise infer's linked code once more: 10 s of the first compile, measured)
        cres = context.compile_subroutine(tb, block_run.py_func, task_sig)
        # block_run raises nothing (a failed block is reported in res): no status to pass on
        context.call_internal_no_propagate(tb, cres.fndesc, task_sig, [loaded])
        tb.ret_void()
        gomp = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [task_ty.as_pointer(), i8p, i32, i32]),
            "neuropc_gomp_parallel",
        )  # fmt: skip
        slot = cgutils.alloca_once_value(builder, value)
        builder.call(gomp, [task, builder.bitcast(slot, i8p), builder.trunc(nthreads, i32),
                            ir.Constant(i32, 0)])  # fmt: skip
        return context.get_dummy_value()

    return types.none(job, types.intp), codegen


@nb.njit(nogil=True, **_JIT)
def team_run(job, n):
    """:func:`block_run` on ``n`` threads of torch's OpenMP team, started and joined in compiled
    code. (Where torch's team has fewer free threads, fewer run it: still correct.)"""
    _team_call(job, n)


@nb.njit(**_JIT)
def changed_state(kind, hp):
    """How many optimiser state buffers a step of rule ``kind`` changes (Adam 2, SGD with
    momentum 1, plain SGD 0): what an undone step restores besides the parameters."""
    return 2 if kind == 2 else (1 if kind == 1 and hp[1] != 0.0 else 0)


@nb.njit(**_JIT)
def undo_optimizer_step(kind, P, S1, S2, hp, BK):
    """After a step that made some entry non-finite: the index of the first such parameter, with
    parameters and state put back from ``BK``."""
    prefer_512()
    bad = 0
    for i in range(P.shape[0]):  # rare: name the first bad entry, then undo the whole step
        if not (np.isfinite(P[i]) and np.isfinite(S1[i]) and np.isfinite(S2[i])):
            bad = i
            break
    state = changed_state(kind, hp)
    for i in range(P.shape[0]):
        P[i] = BK[0, i]
        if state >= 1:
            S1[i] = BK[1, i]
        if state == 2:
            S2[i] = BK[2, i]
    return bad


@nb.njit(**_JIT)
def _optimizer_pass(kind, P, G, S1, S2, hp, t, trainable, B0, B1, B2, G2, GS):
    """The update of :func:`optimizer_step`, one fused loop per rule, keeping the old values in
    ``B0``, ``B1``, ``B2`` (parameters and state); returns how many entries got a non-finite
    parameter or state (an integer count, so the loop still vectorises).

    ``G2``: empty, or (Adam) a second gradient: the step then takes ``G + G2`` and writes that sum
    into ``GS``, in its own pass (two row blocks' gradients: one pass over memory fewer, for the
    memory-bound step, than summing them first; the same sum, bit for bit)."""
    prefer_512()
    n = P.shape[0]
    nbad = 0
    if kind == 1:
        lr, mom, wd, nest, damp = hp[0], hp[1], hp[2], hp[3], hp[4]
        first = t == 1
        for i in range(n):  # SGD is bound by memory traffic: keep only what it changes
            p0, s0 = P[i], S1[i]
            B0[i] = p0
            p, s1 = _sgd(p0, G[i], s0, trainable[i], lr, mom, wd, nest, damp, first)
            P[i] = p
            if mom != 0.0:
                B1[i] = s0
                S1[i] = s1
            nbad += not (np.isfinite(p) and np.isfinite(s1))
    elif kind == 2:
        # the step's constants once, in the parameters' dtype: float32 runs then step in
        # float32 (as torch.optim does), twice the vector width of float64 and one division
        # per entry instead of two (the bias corrections become factors)
        lr, b1, b2, eps, wd, dec = hp[0], hp[1], hp[2], hp[3], hp[4], hp[5]
        c1 = lr / (1.0 - b1**t)
        c2 = 1.0 / np.sqrt(1.0 - b2**t)
        b1_, b2_, a1, a2 = _like(P, b1), _like(P, b2), _like(P, 1.0 - b1), _like(P, 1.0 - b2)
        c1_, c2_, eps_, wd_, lwd = _like(P, c1), _like(P, c2), _like(P, eps), _like(P, wd), \
            _like(P, lr * wd)  # fmt: skip
        # two loops, not one with the flag inside: there LLVM kept a scalar loop for the single
        # gradient (a 5.8M-parameter step took 107 against 13 ms, measured)
        if G2.shape[0] == n:
            for i in range(n):
                g = G[i] + G2[i]
                GS[i] = g
                nbad += _adam_at(i, g, P, S1, S2, B0, B1, B2, trainable, b1_, b2_, a1, a2, eps_,
                                 wd_, lwd, dec, c1_, c2_)  # fmt: skip
        else:
            for i in range(n):
                nbad += _adam_at(i, G[i], P, S1, S2, B0, B1, B2, trainable, b1_, b2_, a1, a2,
                                 eps_, wd_, lwd, dec, c1_, c2_)  # fmt: skip
    return nbad


@nb.njit(inline="always", **_JIT)
def _sgd(p, g, s1, tr, lr, mom, wd, nest, damp, first):
    """One entry of SGD: the new parameter and momentum buffer."""
    g = g + wd * p
    v = 0.0
    if mom != 0.0:
        v = g if first else mom * s1 + (1.0 - damp) * g
        g = g + mom * v if nest != 0.0 else v
    return p - lr * g * tr, v


@nb.njit(inline="always", **_JIT)
def _adam_at(i, g, P, S1, S2, B0, B1, B2, trainable, b1, b2, a1, a2, eps, wd, lwd, dec, c1, c2):
    """Entry ``i`` of an Adam step with gradient ``g`` (:func:`_adam`), the old values kept in
    ``B0``, ``B1``, ``B2``; 1 if an entry became non-finite, else 0."""
    p0, m0, v0 = P[i], S1[i], S2[i]
    B0[i], B1[i], B2[i] = p0, m0, v0
    p, m, v = _adam(p0, g, m0, v0, trainable[i], b1, b2, a1, a2, eps, wd, lwd, dec, c1, c2)
    P[i], S1[i], S2[i] = p, m, v
    return not (np.isfinite(p) and np.isfinite(m) and np.isfinite(v))


@nb.njit(inline="always", **_JIT)
def _adam(p, g, m, v, tr, b1, b2, a1, a2, eps, wd, lwd, dec, c1, c2):
    """One entry of Adam / AdamW: the new parameter, first and second moment, with
    ``a = 1 - b``, ``c1 = lr / (1 - b1^t)``, ``c2 = 1 / sqrt(1 - b2^t)``, ``lwd = lr wd``::

        m = b1 m + a1 g,  v = b2 v + a2 g^2,  p -= c1 m / (sqrt(v) c2 + eps) (+ lwd p, AdamW)"""
    if dec == 0.0:
        g += wd * p
    m = b1 * m + a1 * g
    v = b2 * v + a2 * g * g
    step = c1 * m / (np.sqrt(v) * c2 + eps)
    if dec != 0.0:
        step += lwd * p
    return p - step * tr, m, v


@nb.njit(**_JIT)
def gemm_sequence(shapes, A, B, C, repeats):
    """Run the gemm calls listed in ``shapes`` (rows ``ta, tb, M, N, K, count``) ``repeats`` times on
    scratch buffers: the BLAS-only cost of a batch, used as the matmul ceiling by the benchmark."""
    for _ in range(repeats):
        for i in range(shapes.shape[0]):
            ta, tb, M, N, K, cnt = (
                shapes[i, 0],
                shapes[i, 1],
                shapes[i, 2],
                shapes[i, 3],
                shapes[i, 4],
                shapes[i, 5],
            )
            lda = M if ta else K
            ldb = K if tb else N
            for _c in range(cnt):
                gemm(ta != 0, tb != 0, M, N, K, 1.0, A, lda, B, ldb, 0.0, C, N)
