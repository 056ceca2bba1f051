"""Train the feature classifier of the FID-like metrics and write its packaged weights.

    python analysis/train_feature_classifier.py --dataset mnist10k
    python analysis/train_feature_classifier.py --dataset fashion_mnist

Trains :func:`neuropc.analysis.features.train_classifier` (MLP 784-256-128-10, ReLU, Adam,
deterministic on one CPU thread) on the dataset's training split, reports the accuracy on its
test split and writes the weights with their metadata (dataset, seed, epochs, batch size,
learning rate, test accuracy, versions) to ``--out`` (default:
``neuropc/analysis/feature_weights/DATASET.npz``, the file :func:`default_weights` loads).

* ``mnist10k``: the embedded MNIST subset, ``neuropc.data.mnist`` (8,000 train, 2,000 test);
* ``fashion_mnist``: the full Fashion-MNIST, ``neuropc.data.fashion_mnist`` (60,000 / 10,000).

The same options give bit-identical weights on the same machine and library versions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import neuropc as npc
from neuropc.analysis import features as F
from neuropc.runner import (
    ArgumentParser,
    check_output_file,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    run_main,
    wrote,
)

LOADERS = {"mnist10k": npc.data.mnist, "fashion_mnist": npc.data.fashion_mnist}
HIDDEN = (256, 128)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate and write the weights; returns the metadata written."""
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(LOADERS), default="mnist10k")
    ap.add_argument("--epochs", type=positive_int, default=10)
    ap.add_argument("--batch-size", type=positive_int, default=64)
    ap.add_argument("--lr", type=nonnegative_float, default=1e-3)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: the packaged weights file")
    args = ap.parse_args(argv)
    out = check_output_file(args.out or F.WEIGHTS_DIR / f"{args.dataset}.npz", "--out")

    load = LOADERS[args.dataset]
    x_train, y_train = load("train")
    x_test, y_test = load("test")
    t0 = time.perf_counter()
    weights = F.train_classifier(x_train, y_train, hidden=HIDDEN, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr, seed=args.seed)  # fmt: skip
    seconds = time.perf_counter() - t0
    meta = {
        "dataset": args.dataset,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": ",".join(map(str, HIDDEN)),
        "n_train": len(x_train),
        "n_test": len(x_test),
        "train_accuracy": F.accuracy(weights, x_train, y_train),
        "test_accuracy": F.accuracy(weights, x_test, y_test),
        "neuropc_version": npc.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
    }
    print(f"{args.dataset}: {args.epochs} epochs in {seconds:.1f} s; train accuracy "
          f"{meta['train_accuracy']:.4f}, test accuracy {meta['test_accuracy']:.4f} "
          f"({len(x_test)} images)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    wrote(F.save(out, weights, **meta))
    return meta


if __name__ == "__main__":
    run_main(main)
