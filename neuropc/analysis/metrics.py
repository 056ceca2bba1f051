"""Evaluation metrics shared by the simulator and the backprop reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ..model.network import Network


def target_name(network: Network) -> str:
    """The network's single population with role ``"target"``."""
    t = [n for n, p in network.populations.items() if p.role == "target"]
    if len(t) != 1:
        raise ValueError(f"pass target=: the network has {len(t)} target populations ({t})")
    return t[0]


def accuracy(
    predict: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    data: Mapping[str, np.ndarray],
    labels: np.ndarray,
    target: str,
    batch_size: int = 1000,
) -> float:
    """Fraction of samples whose argmax of ``predict(batch)[target]`` equals ``labels``, in
    batches of ``batch_size``."""
    labels = np.asarray(labels)
    n = len(next(iter(data.values()))) if data else 0
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},); got {labels.shape}")
    correct = 0
    for s in range(0, n, batch_size):
        pred = predict({k: v[s : s + batch_size] for k, v in data.items()})[target]
        correct += int(np.sum(np.argmax(pred, axis=1) == labels[s : s + batch_size]))
    return correct / max(n, 1)
