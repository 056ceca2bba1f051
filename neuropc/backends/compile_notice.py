"""Say so before numba compiles the backend's kernels, and only then.

The numba backend runs every batch through one compiled entry point, ``_numba_kernels.infer``
(it calls every other kernel), jitted with ``cache=True``: the first process on a machine compiles
it (10-35 s; row blocks compile it once more into ``team_run``: 40 s in all for a float32 MLP on
the Xeon of docs/performance.md) and writes it to numba's on-disk cache; later processes load it
in well under a second. :func:`announce` prints :data:`MESSAGE` to stderr when a numba simulator is built and that
compilation is about to happen, once per dtype and process.

Whether it will happen is read from numba's own cache index (numba's developer "Notes on
Caching", ``numba.core.caching``): the index file
``_numba_kernels.infer-<line>.py<ver>.nbi`` in the directory numba's locator picked
(``$NUMBA_CACHE_DIR/...``, else the ``__pycache__`` beside the module, else the user-wide cache)
must be readable by this numba version, match the module's current source (numba stores a hash
of the file) and hold an entry for this CPU (numba's ``magic_tuple``: target triple, CPU name,
features), this bytecode and the simulator's dtype. numba reads the same index the same way when
it looks an overload up, so the two agree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

MESSAGE = "neuropc: compiling kernels (once per machine, up to a minute)"
_announced: set[str] = set()


def _kernel() -> Any:
    """The dispatcher whose compilation :func:`announce` reports: ``_numba_kernels.infer``."""
    from . import _numba_kernels

    return _numba_kernels.infer


def _first_dtype(sig: tuple) -> str:
    """The element type of a signature's first argument (an array of the simulator's dtype)."""
    return str(getattr(sig[0], "dtype", "")) if sig else ""


def kernels_cached(dtype: np.dtype | str) -> bool:
    """Whether the numba backend's kernels for ``dtype`` will run without compiling: already
    compiled in this process, or a valid entry of numba's on-disk cache for this machine (see the
    module docstring). True when numba's JIT is disabled (nothing compiles)."""
    import numba

    if numba.config.DISABLE_JIT:
        return True
    name = np.dtype(dtype).name
    disp = _kernel()
    if any(_first_dtype(sig) == name for sig in disp.overloads):
        return True
    cache = getattr(disp, "_cache", None)
    try:
        codegen = disp.targetctx.codegen()
        machine = codegen.magic_tuple()
        code = cache._index_key((), codegen)[2]  # hashes of the bytecode (and closure)
        index = cache._cache_file._load_index()  # {} when absent, stale or of another version
    except Exception:  # numba's internals moved: fall back on the index file's presence
        return _index_file_exists(cache)
    return any(
        key[1] == machine and key[2] == code and _first_dtype(key[0]) == name for key in index
    )


def _index_file_exists(cache: Any) -> bool:
    """Whether any cache index of the kernel exists where numba looks (the fallback check)."""
    path = getattr(cache, "cache_path", None)
    if not path:
        return True  # no disk cache to inspect: stay quiet
    stem = f"{Path(_kernel().py_func.__code__.co_filename).stem}.infer-"
    return any(Path(path).glob(f"{stem}*.nbi"))


def announce(dtype: np.dtype | str) -> bool:
    """Print :data:`MESSAGE` to stderr when building the numba kernels for ``dtype`` will compile
    them, once per dtype and process; returns whether it printed."""
    name = np.dtype(dtype).name
    if name in _announced or kernels_cached(name):
        return False
    _announced.add(name)
    print(MESSAGE, file=sys.stderr, flush=True)
    return True
