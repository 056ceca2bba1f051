"""Offline datasets: an embedded 10,000-image MNIST subset and the Debian Fashion-MNIST package.

The MNIST subset lives in ``data/`` at the repository root (see ``data/README.md`` for its
provenance, licence and split rule). Files are read with a small, strict IDX parser: no pickle,
no code execution, every header field validated against the file's actual size.

Public API: :func:`load_idx`, :func:`mnist`, :func:`fashion_mnist`, :func:`one_hot` and
:data:`CLASS_COUNTS_MNIST10K`.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "CLASS_COUNTS_MNIST10K",
    "FASHION_MNIST_CLASSES",
    "fashion_mnist",
    "load_idx",
    "mnist",
    "one_hot",
]

#: Images per digit 0..9 in the embedded MNIST subset (10,000 in total).
CLASS_COUNTS_MNIST10K: tuple[int, ...] = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)

#: Fashion-MNIST label names, index = label.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_MNIST10K_IMAGES = "mnist10k-images-idx3-ubyte.gz"
_MNIST10K_LABELS = "mnist10k-labels-idx1-ubyte.gz"
_MNIST10K_N_TRAIN = 8000
_MNIST10K_N_TOTAL = 10000

_FASHION_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FASHION_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"

_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_DEFAULT_MAX_BYTES = 1 << 32  # refuse to allocate more than 4 GiB for one IDX payload
_READ_CHUNK = 1 << 24

# Decoded, read-only uint8 arrays keyed by resolved path; value = (stat signature, array).
_CACHE: dict[str, tuple[tuple[int, int], np.ndarray]] = {}


# --------------------------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------------------------


def _read_exact(fh: Any, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(
            f"{path}: truncated IDX file (expected {n} bytes of {what}, got {len(data)})"
        )
    return data


def load_idx(path: str | os.PathLike[str], *, max_bytes: int = _DEFAULT_MAX_BYTES) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzip-compressed) into a uint8 array.

    The IDX header is a 4-byte magic ``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim``
    big-endian uint32 dimensions. Only dtype code ``0x08`` (unsigned byte) is accepted.
    Compression is detected from the gzip magic bytes, not from the file name.

    Args:
        path: File to read.
        max_bytes: Refuse payloads larger than this (guards against absurd headers).

    Returns:
        A new, writable ``np.uint8`` array with the shape given by the header.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic, unsupported dtype code, zero dimensions, payload size not equal
            to the product of the dimensions (truncated or trailing data), or a corrupt gzip
            stream. The message names the file.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        fh: Any = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        try:
            return _parse_idx(fh, path, max_bytes)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
        finally:
            if is_gzip:
                fh.close()


def _parse_idx(fh: Any, path: Path, max_bytes: int) -> np.ndarray:
    magic = _read_exact(fh, 4, path, "header")
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0:
        raise ValueError(f"{path}: not an IDX file (magic bytes {magic.hex()})")
    if code != _IDX_UBYTE:
        raise ValueError(
            f"{path}: unsupported IDX dtype code 0x{code:02x} (only 0x08 unsigned byte is supported)"
        )
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions")
    dims = struct.unpack(f">{ndim}I", _read_exact(fh, 4 * ndim, path, "dimensions"))
    n = 1
    for d in dims:
        n *= d
    if n > max_bytes:
        raise ValueError(f"{path}: IDX dims {dims} need {n} bytes, more than max_bytes={max_bytes}")
    # Read in bounded chunks so a header that overstates the size cannot make us allocate
    # the declared amount up front; memory only grows with data that is actually present.
    payload = bytearray()
    while len(payload) < n:
        chunk = fh.read(min(_READ_CHUNK, n - len(payload)))
        if not chunk:
            break
        payload += chunk
    if len(payload) != n:
        raise ValueError(
            f"{path}: truncated IDX file (dims {dims} need {n} data bytes, found {len(payload)})"
        )
    if fh.read(1):
        raise ValueError(f"{path}: trailing bytes after the {n} data bytes declared by dims {dims}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)  # writable, no extra copy


def _load_cached(path: Path) -> np.ndarray:
    """``load_idx`` with a module-level cache; the returned array is read-only."""
    resolved = str(path.resolve())
    st = os.stat(resolved)
    sig = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(resolved)
    if hit is not None and hit[0] == sig:
        return hit[1]
    arr = load_idx(resolved)
    arr.setflags(write=False)
    _CACHE[resolved] = (sig, arr)
    return arr


# --------------------------------------------------------------------------------------------
# Conversion helpers
# --------------------------------------------------------------------------------------------


def _convert(
    images: np.ndarray, labels: np.ndarray, *, flatten: bool, dtype: DTypeLike, as_uint8: bool
) -> tuple[np.ndarray, np.ndarray]:
    if as_uint8:
        x = images.copy()
    else:
        dt = np.dtype(dtype)
        if not np.issubdtype(dt, np.floating):
            raise ValueError(
                f"dtype must be a floating type (got {dt}); use as_uint8=True for bytes"
            )
        x = images.astype(dt)
        x /= dt.type(255)  # IEEE division: k/255 correctly rounded in dtype
    if flatten:
        x = x.reshape(len(x), -1)
    return x, labels.astype(np.int64)


def _check_split(split: str, valid: Sequence[str]) -> None:
    if split not in valid:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(map(repr, valid))}")


# --------------------------------------------------------------------------------------------
# Embedded MNIST subset
# --------------------------------------------------------------------------------------------


def _mnist_dir() -> Path:
    """Find the directory holding the embedded MNIST files.

    ``$NEUROPC_DATA`` wins when set (and is then the only place looked at, so a wrong
    setting is reported rather than silently ignored); otherwise ``<repo>/data`` next to the
    package directory, then ``neuropc/_data`` inside the package.
    """
    env = os.environ.get("NEUROPC_DATA")
    pkg = Path(__file__).resolve().parent
    candidates = [Path(env)] if env else [pkg.parent / "data", pkg / "_data"]
    for cand in candidates:
        if (cand / _MNIST10K_IMAGES).is_file() and (cand / _MNIST10K_LABELS).is_file():
            return cand
    looked = ", ".join(str(c) for c in candidates)
    how = "$NEUROPC_DATA" if env else "the repository's data/ or the package's _data/"
    raise FileNotFoundError(
        f"embedded MNIST files {_MNIST10K_IMAGES} and {_MNIST10K_LABELS} not found in {how}; "
        f"looked in: {looked}"
    )


def mnist(
    split: str = "train",
    *,
    flatten: bool = True,
    dtype: DTypeLike = np.float32,
    as_uint8: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load the embedded 10,000-image MNIST subset.

    The files hold a stratified split (see ``data/README.md``): the first 8,000 images are the
    training split and the last 2,000 the test split (exactly 20% of each digit).

    Args:
        split: ``"train"`` (8,000 images), ``"test"`` (2,000) or ``"all"`` (10,000, train then
            test).
        flatten: Return images as ``(N, 784)`` rows; otherwise ``(N, 28, 28)``.
        dtype: Floating dtype of the scaled images; pixel value ``k`` becomes ``k / 255``
            computed in ``dtype`` (for float32/float64 the correctly rounded value), so values
            lie in ``[0, 1]``.
        as_uint8: Return the raw ``uint8`` pixels (0..255) instead; ``dtype`` is ignored.

    Returns:
        ``(X, y)``: images and ``int64`` labels 0..9. Both are fresh, writable arrays.

    Raises:
        ValueError: unknown ``split`` or non-floating ``dtype``.
        FileNotFoundError: the data files cannot be located.
    """
    _check_split(split, ("train", "test", "all"))
    root = _mnist_dir()
    images = _load_cached(root / _MNIST10K_IMAGES)
    labels = _load_cached(root / _MNIST10K_LABELS)
    if images.shape != (_MNIST10K_N_TOTAL, 28, 28) or labels.shape != (_MNIST10K_N_TOTAL,):
        raise ValueError(
            f"{root}: unexpected MNIST subset shapes {images.shape} / {labels.shape}, "
            f"expected ({_MNIST10K_N_TOTAL}, 28, 28) / ({_MNIST10K_N_TOTAL},)"
        )
    sl = {
        "train": slice(0, _MNIST10K_N_TRAIN),
        "test": slice(_MNIST10K_N_TRAIN, _MNIST10K_N_TOTAL),
        "all": slice(0, _MNIST10K_N_TOTAL),
    }[split]
    return _convert(images[sl], labels[sl], flatten=flatten, dtype=dtype, as_uint8=as_uint8)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package
# --------------------------------------------------------------------------------------------


def fashion_mnist(
    split: str = "train",
    *,
    flatten: bool = True,
    dtype: DTypeLike = np.float32,
    as_uint8: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load the full Fashion-MNIST as installed by the Debian package ``dataset-fashion-mnist``.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        flatten: Return images as ``(N, 784)`` rows; otherwise ``(N, 28, 28)``.
        dtype: Floating dtype of the images scaled to ``k / 255``.
        as_uint8: Return the raw ``uint8`` pixels instead; ``dtype`` is ignored.
        root: Directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. Defaults to
            ``$NEUROPC_FASHION_MNIST`` if set, else ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``(X, y)``: images and ``int64`` labels 0..9 (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ValueError: unknown ``split`` or non-floating ``dtype``.
        FileNotFoundError: files missing; the message gives the install command.
    """
    _check_split(split, ("train", "test"))
    if root is None:
        root = os.environ.get("NEUROPC_FASHION_MNIST") or _FASHION_DEFAULT_ROOT
    root = Path(root)
    img_name, lbl_name = _FASHION_FILES[split]
    missing = [n for n in (img_name, lbl_name) if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {', '.join(missing)} not found in {root}. Install the Debian "
            f"package with `{_FASHION_INSTALL}` (it puts them in {_FASHION_DEFAULT_ROOT}), "
            "or pass root= / set NEUROPC_FASHION_MNIST to a directory holding them."
        )
    images = _load_cached(root / img_name)
    labels = _load_cached(root / lbl_name)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"{root}: inconsistent Fashion-MNIST shapes {images.shape} / {labels.shape}"
        )
    return _convert(images, labels, flatten=flatten, dtype=dtype, as_uint8=as_uint8)


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def images(which: str = "auto") -> tuple[str, tuple, tuple]:
    """The image data an experiment runs on: ``(name, (x_train, y_train), (x_test, y_test))``,
    images ``(N, 784)`` in [0, 1]. ``which="auto"``: the complete Fashion-MNIST when its Debian
    package is installed (``"fashion_mnist"``), else the embedded MNIST subset
    (``"mnist10k-embedded"``); ``"mnist"`` forces the embedded set."""
    if which not in ("auto", "mnist"):
        raise ValueError(f"data must be 'auto' or 'mnist'; got {which!r}")
    if which == "auto":
        try:
            return "fashion_mnist", fashion_mnist("train"), fashion_mnist("test")
        except FileNotFoundError:
            pass
    return "mnist10k-embedded", mnist("train"), mnist("test")


def one_hot(labels: ArrayLike, n_classes: int = 10, dtype: DTypeLike = np.float32) -> np.ndarray:
    """One-hot encode integer class labels.

    Args:
        labels: Integer labels of any shape, each in ``0 .. n_classes-1``.
        n_classes: Number of classes (positive).
        dtype: Output dtype.

    Returns:
        Array of shape ``labels.shape + (n_classes,)`` with a single 1 per row.

    Raises:
        ValueError: non-integer labels (floats and bools are rejected), labels out of range, or
            ``n_classes <= 0``.
        TypeError: ``n_classes`` is not an integer.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes must be a positive integer, got {n_classes!r}")
    if n_classes <= 0:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes}")
    arr = np.asarray(labels)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # np.asarray([]) is float64; treat an empty list as no labels
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes - 1}], got range [{arr.min()}, {arr.max()}]"
        )
    out = np.zeros(arr.shape + (n_classes,), dtype=dtype)
    np.put_along_axis(out, arr[..., None].astype(np.intp), 1, axis=-1)
    return out
