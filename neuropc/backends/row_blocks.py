"""Row blocks: one batch's inference on several threads of the numba backend.

The samples of a batch relax independently wherever the schedule allows it
(:attr:`neuropc.dynamics.schedule.Schedule.rows_independent`). There the numba backend cuts a
batch into contiguous blocks of at least :data:`MIN_ROWS` rows, one per thread, and every thread
runs the whole compiled inference (``_numba_kernels.infer``) on its block, with its gemms on
one MKL thread. Then, once every block is done, each thread adds up the blocks' gradients over a
range of the parameters, in block order, and takes the optimiser step there; the energies are
the blocks' batch means weighted by their rows. All of it, from the start of the threads to
their end, is one compiled call (``_numba_kernels.block_run``): no thread touches Python.

Why: on the 2-core Xeon of docs/performance.md, with one thread running the elementwise loops
and MKL's two threads the gemms, every step moved half of each gemm's output from the other
core's cache, and the elementwise loops ran on one core; in blocks, each core keeps its rows in
its own cache from the first step to the last (the standard task: 2.98 -> 2.2 ms a batch).

Same seed, same thread count: bit-identical results. Another thread count changes the order of
the sums over the batch, so energies and gradients differ at the rounding level (the Langevin
noise of a row depends on its index alone: :func:`._normal.fill_normal_rows`).

Threads: :func:`set_threads`, else ``NEUROPC_THREADS``, else ``OMP_NUM_THREADS`` (which
``neuropc run --nproc`` sets for each rank), else the cores this process may run on. They are
the members of torch's own OpenMP team (``_numba_kernels.team_run``), so they never compete with
torch's thread pool; a thread pool of our own serves only where torch has no libgomp.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

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
    else ``OMP_NUM_THREADS``, else the cores this process may run on (as they were at the first
    call: set the count explicitly after changing the process's CPU affinity)."""
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
    return _usable_cores()


@functools.cache
def _usable_cores() -> int:
    """The cores this process may run on (looked up once: a system call per batch cost more than
    the rest of this function)."""
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


def launch(job: tuple, n: int) -> None:
    """``_numba_kernels.block_run(job)`` on ``n`` threads: the members of torch's own OpenMP team,
    started from compiled code (``team_run``), else a thread pool of our own. ``block_run`` is
    correct with any number of threads (each claims blocks until none is left), so a team that
    gets fewer threads than asked for still finishes the batch."""
    from . import _numba_kernels as K

    if K.TEAM:
        K.team_run(job, n)
        return
    pool = _workers(n - 1)
    futures = [pool.submit(K.block_run, job) for _ in range(n - 1)]
    K.block_run(job)
    for f in futures:
        f.result()


def _workers(n: int) -> ThreadPoolExecutor:
    """Our own pool (where torch has no libgomp), grown to ``n`` workers where needed. Its
    threads compete with torch's intra-op pool, whose threads keep spinning for a while after
    torch work (measured: a batch right after a torch.mm ran 1.2-1.4x slower)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max(n, 1), thread_name_prefix="neuropc-rows")
            _pool_size = max(n, 1)
        return _pool
