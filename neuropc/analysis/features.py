"""A small, deterministically trained classifier whose hidden layer gives the features of the
FID-like metrics of :mod:`.generative` (FID proper uses an Inception network; here an MLP trained
on the same 28x28 images, flattened to rows of 784 values in ``[0, 1]``).

* :func:`train_classifier`: an MLP ``784 -> 256 -> 128 -> 10`` (ReLU) trained with torch (float32,
  CPU, one thread, deterministic algorithms, seeded initialisation and shuffling; same seed and
  data give bit-identical weights) by Adam on the cross-entropy;
* :func:`features`, :func:`logits`, :func:`accuracy`: numpy forward passes of the weights (a dict
  ``W0, b0, W1, b1, ...`` with ``W`` as ``(out, in)``); the features are the last hidden layer's
  ReLU activations;
* :func:`save`, :func:`load`: ``.npz`` files (never pickle) holding the weights and metadata;
* :func:`default_weights`: the packaged weights in ``feature_weights/`` (see its ``README.md``);
* :func:`fid_like`, :func:`prdc_like`: :func:`.generative.fid` and :func:`.generative.prdc` on the
  features of two image sets.
"""

from __future__ import annotations

import os
import re
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import generative

__all__ = ["accuracy", "available", "default_weights", "features", "fid_like", "load", "logits", "prdc_like",
           "save", "train_classifier"]  # fmt: skip

WEIGHTS_DIR = Path(__file__).resolve().parent / "feature_weights"
_META = "meta_"
_LAYER_KEY = re.compile(r"^[Wb](\d+)$")


def _rows(images: Any, width: int | None = None) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"images: expected a non-empty (N, ...) array; got shape {x.shape}")
    x = x.reshape(len(x), -1)
    if width is not None and x.shape[1] != width:
        raise ValueError(f"images: {x.shape[1]} values per image, the weights expect {width}")
    return x


def _layers(weights: dict[str, np.ndarray], where: str = "weights") -> int:
    """Validate ``W0, b0, ..., W{L-1}, b{L-1}`` (chained shapes, finite floats); return ``L``."""
    keys = set(weights)
    n = sum(1 for k in keys if k.startswith("W"))
    expected = {f"{p}{i}" for i in range(n) for p in "Wb"}
    if n == 0 or keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        raise ValueError(f"{where}: expected keys W0, b0, ..., W{max(n - 1, 0)}, b{max(n - 1, 0)}"
                         f"; missing {missing or 'none'}, unexpected {extra or 'none'}")  # fmt: skip
    for i in range(n):
        w, b = np.asarray(weights[f"W{i}"]), np.asarray(weights[f"b{i}"])
        if w.dtype.kind != "f" or b.dtype.kind != "f":
            raise ValueError(f"{where}: W{i}/b{i} must be floating; got {w.dtype}/{b.dtype}")
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"{where}: W{i} must be (out, in) and b{i} (out,); got {w.shape}, "
                             f"{b.shape}")  # fmt: skip
        prev = np.shape(weights[f"W{i - 1}"])[0] if i else w.shape[1]
        if w.shape[1] != prev:
            raise ValueError(f"{where}: W{i} has {w.shape[1]} inputs but W{i - 1} has "
                             f"{prev} outputs")  # fmt: skip
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError(f"{where}: W{i}/b{i} hold non-finite values")
    return n


def train_classifier(images: Any, labels: Any, *, hidden: Sequence[int] = (256, 128),
                     classes: int = 10, epochs: int = 10, batch_size: int = 64,
                     lr: float = 1e-3, seed: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
    """Train the MLP ``in -> hidden... -> classes`` (ReLU) on ``images`` (``(N, ...)``, flattened)
    and integer ``labels`` by Adam on the cross-entropy, ``epochs`` passes in shuffled minibatches.

    Deterministic: float32 on the CPU, ``torch.manual_seed(seed)`` for the initialisation (inside
    :func:`torch.random.fork_rng`, so the global RNG is left as it was), a seeded
    :class:`torch.Generator` for the shuffling, deterministic algorithms and one torch thread
    during training (both settings restored afterwards). Returns float32 numpy weights
    ``W0, b0, ...`` (``W`` as ``(out, in)``)."""
    import torch

    x = _rows(images).astype(np.float32)
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.shape != (len(x),) or y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels: expected {len(x)} integers in [0, {classes - 1}]")
    if epochs < 1 or batch_size < 1 or not lr > 0 or any(h < 1 for h in hidden):
        raise ValueError("train_classifier: epochs, batch_size, hidden sizes >= 1 and lr > 0")
    sizes = [x.shape[1], *hidden, classes]
    threads = torch.get_num_threads()
    det, warn_only = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[torch.nn.Module] = []
            for i in range(len(sizes) - 1):
                layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.ReLU()]
            net = torch.nn.Sequential(*layers[:-1]).to(torch.float32)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            gen = torch.Generator().manual_seed(seed)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
            for _ in range(epochs):
                perm = torch.randperm(len(tx), generator=gen)
                for start in range(0, len(tx), batch_size):
                    idx = perm[start : start + batch_size]
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(net(tx[idx]), ty[idx]).backward()
                    opt.step()
        linear = [m for m in net if isinstance(m, torch.nn.Linear)]
        out: dict[str, np.ndarray] = {}
        for i, m in enumerate(linear):
            out[f"W{i}"] = m.weight.detach().numpy().astype(np.float32, copy=True)
            out[f"b{i}"] = m.bias.detach().numpy().astype(np.float32, copy=True)
        return out
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def _forward(weights: dict[str, np.ndarray], images: Any) -> tuple[np.ndarray, np.ndarray]:
    """(last hidden ReLU activations, logits), both float64."""
    weights = {k: np.asarray(v) for k, v in weights.items()}
    n = _layers(weights)
    h = _rows(images, weights["W0"].shape[1]).astype(np.float64)
    for i in range(n - 1):
        h = np.maximum(h @ weights[f"W{i}"].T.astype(np.float64) + weights[f"b{i}"], 0.0)
    return h, h @ weights[f"W{n - 1}"].T.astype(np.float64) + weights[f"b{n - 1}"]


def features(weights: dict[str, np.ndarray], images: Any) -> np.ndarray:
    """The last hidden layer's ReLU activations, ``(N, 128)`` float64 for the default MLP."""
    return _forward(weights, images)[0]


def logits(weights: dict[str, np.ndarray], images: Any) -> np.ndarray:
    """The output layer's pre-softmax values, ``(N, classes)`` float64."""
    return _forward(weights, images)[1]


def accuracy(weights: dict[str, np.ndarray], images: Any, labels: Any) -> float:
    """The fraction of ``images`` whose largest logit is at their label."""
    return float(np.mean(np.argmax(logits(weights, images), axis=1) == np.asarray(labels)))


def save(path: str | os.PathLike[str], weights: dict[str, np.ndarray], **meta: Any) -> Path:
    """Write ``weights`` and ``meta`` (str, int, float or bool values, stored as plain numpy
    string / number arrays under ``meta_NAME``) to the ``.npz`` file ``path``, atomically: a
    temporary file in the same folder, then :func:`os.replace`. Returns the path."""
    path = Path(path)
    _layers(weights, str(path))
    arrays = {k: np.asarray(v) for k, v in weights.items()}
    for k, v in meta.items():
        if not isinstance(v, (str, bool, int, float, np.bool_, np.integer, np.floating)):
            raise ValueError(f"{path}: metadata {k!r} must be a str or number; got {type(v)}")
        arrays[_META + k] = np.asarray(v)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as umask allows
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save` (``allow_pickle=False``): ``(weights, meta)``, the
    metadata as Python str / int / float / bool. A malformed file (not an ``.npz``, object
    arrays, missing or unexpected keys, wrong shapes or dtypes) raises a ``ValueError`` naming
    it and the problem."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable feature-weights .npz file ({err})") from err
    meta: dict[str, Any] = {}
    weights: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        if k.startswith(_META):
            if v.shape != () or v.dtype.kind not in "Ubif":
                raise ValueError(f"{path}: metadata {k!r} must be a scalar string or number; "
                                 f"got shape {v.shape}, dtype {v.dtype}")  # fmt: skip
            meta[k[len(_META) :]] = v.item()
        elif _LAYER_KEY.match(k):
            weights[k] = v
        else:
            raise ValueError(f"{path}: unexpected entry {k!r}")
    _layers(weights, str(path))
    return weights, meta


def available() -> list[str]:
    """The dataset names of the packaged weights (``mnist10k``, ``fashion_mnist``, ...)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def default_weights(dataset: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The packaged weights and metadata of the classifier trained on ``dataset``."""
    names = available()
    if dataset not in names:
        raise ValueError(f"no packaged feature weights for {dataset!r}; available: "
                         f"{', '.join(names) or 'none'} (in {WEIGHTS_DIR})")  # fmt: skip
    return load(WEIGHTS_DIR / f"{dataset}.npz")


def fid_like(real_images: Any, fake_images: Any, weights: dict[str, np.ndarray]) -> float:
    """:func:`.generative.fid` of the classifier features of two image sets."""
    return generative.fid(features(weights, real_images), features(weights, fake_images))


def prdc_like(real_images: Any, fake_images: Any, weights: dict[str, np.ndarray],
              k: int = 5) -> dict[str, float]:  # fmt: skip
    """:func:`.generative.prdc` (precision, recall, density, coverage) of the features."""
    return generative.prdc(features(weights, real_images), features(weights, fake_images), k)
