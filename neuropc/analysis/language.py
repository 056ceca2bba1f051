"""Language-model readouts of a trained network (:func:`neuropc.transformer`): next-token
logits, test perplexity and text generation.

The logits of a sequence are the prediction ``mu`` of the output population at the
feed-forward state (:func:`neuropc.reference.backprop.feedforward`): the state PC's test-time
inference starts from and keeps when the output is free, and what backprop trains. With a
Gaussian output (the all-Gaussian PC arm) ``mu`` is a regression onto one-hot targets, so its
softmax is read with a ``temperature`` (fitted on held-out text by :func:`fit_temperature`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..model.network import Network
from ..reference import backprop as _bp


def logits(
    net: Network,
    params: Mapping[str, np.ndarray],
    ids: np.ndarray,
    *,
    inputs: str = "tokens",
    output: str = "next",
    batch: int = 256,
) -> np.ndarray:
    """``(N, T, V)`` next-token logits of the ``(N, T)`` token windows ``ids`` (float32);
    ``params`` numpy arrays or float32 tensors (not copied)."""
    par = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}
    shape = net[output].shape
    out = np.empty((len(ids), *shape), np.float32)
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            x = torch.as_tensor(np.asarray(ids[s : s + batch], np.float32))
            vals = _bp.feedforward(net, par, {inputs: x})
            out[s : s + batch] = vals[output].reshape(len(x), *shape).numpy()
    return out


def nll(lg: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Summed negative log-likelihood (nats) of ``targets`` under ``softmax(lg / temperature)``."""
    z = torch.as_tensor(lg, dtype=torch.float64) / temperature
    lp = torch.log_softmax(z, dim=-1)
    t = torch.as_tensor(np.asarray(targets, np.int64))
    return float(-lp.gather(-1, t[..., None]).sum())


def perplexity(lg: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """``exp(mean NLL)`` of ``targets`` (``(N, T)``) under the logits ``lg`` (``(N, T, V)``)."""
    return float(np.exp(nll(lg, targets, temperature) / np.size(targets)))


def fit_temperature(lg: np.ndarray, targets: np.ndarray) -> float:
    """The temperature in ``[1e-3, 1e3]`` (log-spaced grid, then refined) that minimises the NLL
    of held-out ``targets``: the calibration of logits not trained as log-probabilities."""
    grid = np.logspace(-3, 3, 61)
    best = min(grid, key=lambda t: nll(lg, targets, t))
    fine = best * np.logspace(-0.1, 0.1, 21)
    return float(min(fine, key=lambda t: nll(lg, targets, t)))


def generate(
    net: Network,
    params: Mapping[str, np.ndarray],
    prompt: np.ndarray,
    n: int,
    *,
    rng: np.random.Generator,
    temperature: float = 1.0,
    inputs: str = "tokens",
    output: str = "next",
) -> np.ndarray:
    """``prompt`` followed by ``n`` sampled token ids: each new token is drawn from
    ``softmax(logits / temperature)`` at the last position of the most recent window of the
    network's sequence length (the prompt is left-padded with its first token when shorter).
    ``temperature=0`` takes the most likely token."""
    seq = net[inputs].shape[0]
    ids = [int(i) for i in np.asarray(prompt, np.int64).ravel()]
    if not ids:
        raise ValueError("generate: the prompt is empty; give at least one token id")
    par = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()}  # once
    for _ in range(int(n)):
        window = ids[-seq:]
        window = [window[0]] * (seq - len(window)) + window  # causal: padding on the left
        # the newest token is always the window's last position
        lg = logits(net, par, np.asarray([window]), inputs=inputs, output=output)[0, -1]
        if temperature == 0:
            ids.append(int(np.argmax(lg)))
            continue
        p = torch.softmax(torch.as_tensor(lg, dtype=torch.float64) / temperature, -1).numpy()
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return np.asarray(ids, np.int64)
