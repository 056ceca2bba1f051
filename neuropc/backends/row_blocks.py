"""Row blocks: one batch's inference on several threads of the numba backend.

The samples of a batch relax independently wherever the schedule allows it
(:attr:`neuropc.dynamics.schedule.Schedule.rows_independent`). There the numba backend cuts a
batch into contiguous blocks of at least :data:`MIN_ROWS` rows, one per thread, and every thread
runs the whole compiled inference (``_numba_kernels.infer``, which holds no GIL) on its block,
with its gemms on one MKL thread. Then, after a barrier, each thread adds up the blocks'
gradients over a range of the parameters, in block order, and takes the optimiser step there;
the energies are the blocks' batch means weighted by their rows.

Why: on the 2-core Xeon of docs/performance.md, with one thread running the elementwise loops
and MKL's two threads the gemms, every step moved half of each gemm's output from the other
core's cache, and the elementwise loops ran on one core; in blocks, each core keeps its rows in
its own cache from the first step to the last (the standard task: 2.98 -> 2.2 ms a batch).

Same seed, same thread count: bit-identical results. Another thread count changes the order of
the sums over the batch, so energies and gradients differ at the rounding level (the Langevin
noise of a row depends on its index alone: :func:`._normal.fill_normal_rows`).

Threads: :func:`set_threads`, else ``NEUROPC_THREADS``, else ``OMP_NUM_THREADS`` (which
``neuropc run --nproc`` sets for each rank), else the cores this process may run on. They are
the members of torch's own OpenMP team (:class:`_Team`), so they never compete with torch's
thread pool; a thread pool of our own serves only where torch has no libgomp.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

MIN_ROWS = 32  # below this a block's gemms lose more than a second core gains (measured)
# Every block's gemm packs the weight matrix anew (MKL packs it per call). A matrix beyond the
# caches is then read from memory by every thread, which at tens of rows per block costs as much
# as the product itself (measured, 784-2048-2048-10 at B = 128: 0.60 of the MKL ceiling in
# blocks of 64 rows against 0.83 whole). Such networks run in blocks only of many rows.
LARGE_WEIGHTS = 4 << 20  # bytes: a weight matrix larger than this counts as beyond the caches
MIN_ROWS_LARGE = 256

_lock = threading.Lock()
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0

R = TypeVar("R")


def set_threads(n: int | None) -> None:
    """Run a numba batch on up to ``n`` threads (row blocks); None restores the default (the
    environment, else the cores this process may use). Results with one thread count are
    bit-identical run to run; another count changes sums over the batch at the rounding level."""
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_threads: expected a positive integer or None; got {n!r}")
    _threads = n


def get_threads() -> int:
    """The threads a numba batch may use: :func:`set_threads`'s value, else ``NEUROPC_THREADS``,
    else ``OMP_NUM_THREADS``, else the cores this process may run on."""
    if _threads is not None:
        return _threads
    for var in ("NEUROPC_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(var)
        if raw:
            try:
                n = int(raw)
            except ValueError:
                n = 0
            if n < 1:
                raise ValueError(f"{var} must be a positive integer; got {raw!r}")
            return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def blocks(batch: int, threads: int | None = None, weight_bytes: int = 0) -> list[tuple[int, int]]:
    """Contiguous row ranges ``[(start, stop), ...]`` covering ``range(batch)``: as many as the
    threads allow with at least :data:`MIN_ROWS` rows each, or :data:`MIN_ROWS_LARGE` where the
    largest weight matrix has more than :data:`LARGE_WEIGHTS` bytes (``weight_bytes``); one
    block: run whole."""
    least = MIN_ROWS_LARGE if weight_bytes > LARGE_WEIGHTS else MIN_ROWS
    n = max(1, min(threads if threads is not None else get_threads(), batch // least))
    return [(i * batch // n, (i + 1) * batch // n) for i in range(n)]


def run(phases: Sequence[Callable[[int], R]], n: int,
        single_thread_blas: Callable[[int], int] | None) -> list[list[R]]:  # fmt: skip
    """``[[phase(0), ..., phase(n - 1)] for phase in phases]`` on ``n`` threads, every thread
    finishing a phase before any starts the next (a barrier), each with its BLAS on one thread
    (``single_thread_blas``, see ``_numba_kernels.blas_single_thread``). A phase reads what the
    earlier ones returned through its closure. An exception in any task skips the later phases
    and is raised here, once every thread is done (none still writes into the caller's
    buffers)."""
    out: list[list] = [[None] * n for _ in phases]
    errors: list[BaseException] = []
    team = _omp_team()
    barrier = team.barrier if team is not None else threading.Barrier(n).wait

    def one(i: int) -> None:
        prev = single_thread_blas(1) if single_thread_blas is not None else 0
        try:
            for k, phase in enumerate(phases):
                if k:
                    barrier()
                    if errors:  # an earlier phase failed somewhere: skip the rest
                        continue  # (every thread still meets every barrier)
                try:
                    out[k][i] = phase(i)
                except BaseException as err:  # re-raised below, once every thread is done
                    errors.append(err)
        finally:
            if single_thread_blas is not None:
                single_thread_blas(prev)

    if team is not None:
        team(one, n)
    else:
        pool = _workers(n - 1)
        futures = [pool.submit(one, i) for i in range(1, n)]
        one(0)
        for f in futures:
            f.result()
    if errors:
        raise errors[0]
    return out


class _Team:
    """The OpenMP team of torch's own libgomp: ``team(fn, n)`` runs ``fn(0) .. fn(n - 1)`` on
    ``n`` threads, ``team.barrier()`` waits inside it for all of them."""

    def __init__(self, lib) -> None:
        import ctypes

        self._proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        lib.GOMP_parallel.argtypes = [self._proto, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        lib.GOMP_barrier.restype = None
        lib.omp_get_thread_num.restype = ctypes.c_int
        self._lib = lib
        self.barrier = lib.GOMP_barrier  # a foreign call: it releases the GIL while it waits

    def __call__(self, fn: Callable[[int], None], n: int) -> None:
        lib = self._lib
        cb = self._proto(lambda _data: fn(lib.omp_get_thread_num()))
        lib.GOMP_parallel(cb, None, n, 0)  # returns when every member has finished


@functools.cache
def _omp_team() -> _Team | None:
    """The team of torch's own libgomp, or None where there is none. Its threads are torch's
    intra-op pool: after torch work they spin for a while waiting for more, and a pool of our own
    would compete with them for the cores (measured: a batch right after a torch.mm ran 1.2-1.4x
    slower); as members of that team the blocks run on those very threads. (A member's Python
    code holds the GIL only to start the compiled kernel, which runs without it.)"""
    try:
        import ctypes

        import torch

        return _Team(ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib",
                                              "libgomp.so.1")))  # fmt: skip
    except (ImportError, OSError, AttributeError):
        return None


def _workers(n: int) -> ThreadPoolExecutor:
    """Our own pool (where torch has no libgomp), grown to ``n`` workers where needed."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max(n, 1), thread_name_prefix="neuropc-rows")
            _pool_size = max(n, 1)
        return _pool
