"""Tests for neuropc.data: the embedded MNIST subset, the IDX parser and Fashion-MNIST."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from neuropc import data
from neuropc.data import CLASS_COUNTS_MNIST10K, fashion_mnist, load_idx, mnist, one_hot

EXPECTED_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
REPO_DATA = Path(__file__).resolve().parents[1] / "data"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALLED = all(
    (FASHION_ROOT / f"{p}-{k}-ubyte.gz").is_file()
    for p in ("train", "t10k")
    for k in ("images-idx3", "labels-idx1")
)


def expected_test_counts(counts: list[int], n_test: int = 2000) -> list[int]:
    """The documented rule: 20% per class, largest remainder so the total is exactly n_test."""
    total = sum(counts)
    exact = [c * n_test / total for c in counts]
    base = [int(np.floor(e)) for e in exact]
    frac = [e - b for e, b in zip(exact, base)]
    for c in sorted(range(len(counts)), key=lambda i: (-frac[i], i))[: n_test - sum(base)]:
        base[c] += 1
    return base


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEUROPC_DATA", raising=False)
    monkeypatch.delenv("NEUROPC_FASHION_MNIST", raising=False)


# ------------------------------------------------------------------------------ MNIST subset


@pytest.mark.parametrize("split,n", [("train", 8000), ("test", 2000), ("all", 10000)])
def test_mnist_shapes_dtypes(split: str, n: int) -> None:
    x, y = mnist(split)
    assert x.shape == (n, 784) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    x2, _ = mnist(split, flatten=False, dtype=np.float64)
    assert x2.shape == (n, 28, 28) and x2.dtype == np.float64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_class_counts() -> None:
    _, y = mnist("all")
    assert np.bincount(y, minlength=10).tolist() == EXPECTED_COUNTS
    assert list(CLASS_COUNTS_MNIST10K) == EXPECTED_COUNTS


def test_split_sizes_and_stratification() -> None:
    _, ytr = mnist("train")
    _, yte = mnist("test")
    assert len(ytr) == 8000 and len(yte) == 2000
    test_counts = np.bincount(yte, minlength=10).tolist()
    assert test_counts == expected_test_counts(EXPECTED_COUNTS)
    assert test_counts == [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]
    train_counts = np.bincount(ytr, minlength=10)
    assert (train_counts + test_counts).tolist() == EXPECTED_COUNTS
    # every class within one image of exactly 20%
    assert np.all(np.abs(np.array(test_counts) - 0.2 * np.array(EXPECTED_COUNTS)) < 1)


def test_all_is_train_then_test() -> None:
    xa, ya = mnist("all", as_uint8=True)
    xtr, ytr = mnist("train", as_uint8=True)
    xte, yte = mnist("test", as_uint8=True)
    np.testing.assert_array_equal(xa, np.concatenate([xtr, xte]))
    np.testing.assert_array_equal(ya, np.concatenate([ytr, yte]))


def test_splits_are_shuffled() -> None:
    _, y = mnist("train")
    # not grouped by class: many label changes along the sequence
    assert np.count_nonzero(np.diff(y)) > 0.8 * len(y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_are_k_over_255(dtype: type) -> None:
    x, _ = mnist("all", dtype=dtype)
    xu, _ = mnist("all", as_uint8=True)
    scaled = x.astype(np.float64) * 255.0
    np.testing.assert_allclose(scaled, np.rint(scaled), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.rint(scaled).astype(np.uint8), xu)
    np.testing.assert_array_equal(x, (np.arange(256, dtype=dtype) / dtype(255))[xu])


def test_as_uint8() -> None:
    x, y = mnist("test", as_uint8=True, flatten=False)
    assert x.dtype == np.uint8 and x.shape == (2000, 28, 28)
    assert y.dtype == np.int64
    assert x.max() == 255 and x.min() == 0
    assert len(np.unique(mnist("all", as_uint8=True)[0])) == 256  # all grey levels occur


def test_deterministic_and_not_aliased() -> None:
    x1, y1 = mnist("train")
    x1[:] = -1.0  # mutating a result must not affect the cache
    y1[:] = -1
    x2, y2 = mnist("train")
    x3, y3 = mnist("train")
    np.testing.assert_array_equal(x2, x3)
    np.testing.assert_array_equal(y2, y3)
    assert x2.min() == 0.0 and y2.min() == 0
    xu, _ = mnist("train", as_uint8=True)
    xu[:] = 7
    assert mnist("train", as_uint8=True)[0].max() == 255


def _row_hashes(x: np.ndarray) -> list[str]:
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in x]


def test_train_test_disjoint() -> None:
    # Verified when the files were built: the 10,000 npm images contain no exact duplicates,
    # so every row is unique and no test image also appears in the training split.
    xa, _ = mnist("all", as_uint8=True)
    assert len(set(_row_hashes(xa))) == 10000
    xtr, _ = mnist("train", as_uint8=True)
    xte, _ = mnist("test", as_uint8=True)
    assert not set(_row_hashes(xtr)) & set(_row_hashes(xte))


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        mnist("validation")
    with pytest.raises(ValueError, match="floating"):
        mnist("train", dtype=np.int32)


def test_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUROPC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        mnist()
    for name in ("mnist10k-images-idx3-ubyte.gz", "mnist10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((REPO_DATA / name).read_bytes())
    monkeypatch.setenv("NEUROPC_DATA", str(tmp_path))
    x, _ = mnist("test", as_uint8=True)
    np.testing.assert_array_equal(
        x, load_idx(REPO_DATA / "mnist10k-images-idx3-ubyte.gz")[8000:].reshape(2000, -1)
    )


def test_file_headers() -> None:
    with gzip.open(REPO_DATA / "mnist10k-images-idx3-ubyte.gz", "rb") as f:
        assert struct.unpack(">IIII", f.read(16)) == (0x803, 10000, 28, 28)
    with gzip.open(REPO_DATA / "mnist10k-labels-idx1-ubyte.gz", "rb") as f:
        assert struct.unpack(">II", f.read(8)) == (0x801, 10000)


# ------------------------------------------------------------------------------ load_idx


def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, code, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_roundtrip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx(arr)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(raw) if compress else raw)
    out = load_idx(p)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_load_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    good = (REPO_DATA / "mnist10k-labels-idx1-ubyte.gz").read_bytes()
    p = tmp_path / "trunc.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="trunc.gz"):
        load_idx(p)


@pytest.mark.parametrize(
    "payload,match",
    [
        (b"\x00\x00", "truncated"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01x", "not an IDX"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01xxxx", "dtype code 0x0d"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x04abc", "need 4 data bytes, found 3"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing"),
        (b"\x00\x00\x08\x01\xf0\x00\x00\x00abc", "found 3"),  # header overstates size
        (b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff", "max_bytes"),
    ],
)
def test_load_idx_rejects_bad_files(tmp_path: Path, payload: bytes, match: str) -> None:
    for name, blob in (("bad.idx", payload), ("bad.idx.gz", gzip.compress(payload))):
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(ValueError, match=match) as info:
            load_idx(p)
        assert name in str(info.value)


def test_load_idx_corrupt_gzip(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(_idx(np.zeros(1000, np.uint8) + 3)))
    blob[20] ^= 0xFF  # damage the deflate stream
    p = tmp_path / "corrupt.gz"
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt.gz"):
        load_idx(p)


def test_load_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------------------------ Fashion-MNIST


def test_fashion_missing_names_install_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(root=tmp_path)
    msg = str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "apt-get update" in msg
    assert str(tmp_path) in msg


def test_fashion_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUROPC_FASHION_MNIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        fashion_mnist("test")


def test_fashion_bad_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'train', 'test'"):
        fashion_mnist("all", root=tmp_path)


@pytest.mark.skipif(
    not FASHION_INSTALLED,
    reason=f"Debian package dataset-fashion-mnist not installed (no files in {FASHION_ROOT}); "
    "run `apt-get update && apt-get install -y dataset-fashion-mnist` to enable",
)
def test_fashion_installed() -> None:
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test", flatten=False, as_uint8=True)
    assert xtr.shape == (60000, 784) and xtr.dtype == np.float32
    assert xte.shape == (10000, 28, 28) and xte.dtype == np.uint8
    assert np.bincount(ytr, minlength=10).tolist() == [6000] * 10
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0
    assert len(data.FASHION_MNIST_CLASSES) == 10


# ------------------------------------------------------------------------------ one_hot


def test_one_hot_roundtrip() -> None:
    _, y = mnist("test")
    oh = one_hot(y)
    assert oh.shape == (2000, 10) and oh.dtype == np.float32
    assert np.all(oh.sum(axis=1) == 1)
    np.testing.assert_array_equal(oh.argmax(axis=1), y)
    oh2 = one_hot(np.array([[0, 2], [1, 1]], dtype=np.uint8), n_classes=3, dtype=np.int8)
    assert oh2.shape == (2, 2, 3) and oh2.dtype == np.int8
    np.testing.assert_array_equal(oh2.argmax(-1), [[0, 2], [1, 1]])
    assert one_hot([], n_classes=4).shape == (0, 4)
    assert one_hot([3, 0], n_classes=4).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]


@pytest.mark.parametrize(
    "labels,kwargs,match",
    [
        ([0, 10], {}, r"\[0, 9\]"),
        ([-1, 0], {}, r"\[0, 9\]"),
        ([0.0, 1.0], {}, "integers"),
        ([True, False], {}, "integers"),
        (["a"], {}, "integers"),
        ([0], {"n_classes": 0}, "positive"),
    ],
)
def test_one_hot_errors(labels: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        one_hot(labels, **kwargs)


def test_one_hot_n_classes_type() -> None:
    with pytest.raises(TypeError, match="positive integer"):
        one_hot([0], n_classes=2.0)  # type: ignore[arg-type]


def test_cache_is_used() -> None:
    mnist("train")
    key = str((REPO_DATA / "mnist10k-images-idx3-ubyte.gz").resolve())
    assert key in data._CACHE
    assert not data._CACHE[key][1].flags.writeable
