"""How far PC's local weight updates are from backprop's global gradients.

For a batch, :func:`gradient_alignment` runs inference for each requested number of steps ``t``,
takes PC's local gradient ``g_t = dF/dtheta`` (batch-mean energy, the negative of the Hebbian
update) and compares it with backprop's ``b = dL/dtheta`` for the feed-forward twin
(:mod:`neuropc.reference.backprop`), per connection (``"pre->post"``) and bias (``"pop:bias"``):

    cosine     = <g, b> / (|g| |b|)
    rel_error  = |g - b| / |b|
    norm_ratio = |g| / |b|

The inference settings (mode, nudging beta, rate) come from ``inference``; the output precision
from the network. A parameter whose backprop gradient is zero gets NaN for the ratios.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..dynamics.inference import Inference
from ..simulator import Simulator


@dataclass
class Alignment:
    """Metrics of shape ``(len(steps), len(names))``; ``bp`` holds backprop's gradients."""

    steps: np.ndarray
    names: list[str]
    cosine: np.ndarray
    rel_error: np.ndarray
    norm_ratio: np.ndarray
    bp: dict[str, np.ndarray]
    pc: dict[str, np.ndarray]  # PC's gradients at the last step

    def at(self, name: str) -> dict[str, np.ndarray]:
        """The three metrics of one parameter against ``steps``."""
        i = self.names.index(name)
        return {
            "cosine": self.cosine[:, i],
            "rel_error": self.rel_error[:, i],
            "norm_ratio": self.norm_ratio[:, i],
        }

    def final(self) -> dict[str, dict[str, float]]:
        """Metrics at the last step, per parameter."""
        return {
            n: {"cosine": float(self.cosine[-1, i]), "rel_error": float(self.rel_error[-1, i]),
                "norm_ratio": float(self.norm_ratio[-1, i])}
            for i, n in enumerate(self.names)
        }  # fmt: skip

    def max_abs_error(self) -> float:
        """Largest |g - b| over all parameters at the last step."""
        return max(float(np.max(np.abs(self.pc[k] - self.bp[k]))) for k in self.names)


def compare(g: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(cosine, relative error, norm ratio) of ``g`` against ``b`` (flattened)."""
    g, b = np.ravel(g).astype(np.float64), np.ravel(b).astype(np.float64)
    nb, ng = float(np.linalg.norm(b)), float(np.linalg.norm(g))
    if nb == 0.0:
        return float("nan"), float("nan"), float("nan")
    cos = float(g @ b) / (ng * nb) if ng > 0 else 0.0
    return cos, float(np.linalg.norm(g - b)) / nb, ng / nb


def gradient_alignment(
    sim: Simulator,
    data: Mapping[str, np.ndarray],
    *,
    inference: Inference | None = None,
    steps: Sequence[int] | None = None,
    weights_only: bool = False,
) -> Alignment:
    """Compare PC's local gradients after ``t`` inference steps (each ``t`` in ``steps``, default
    ``0..inference.steps``) with backprop's on the batch ``data`` (phase ``"train"``)."""
    from ..reference import backprop

    cfg = inference or sim.inference
    steps = list(range(cfg.steps + 1)) if steps is None else [int(t) for t in steps]
    params = sim.parameters()
    bp = backprop.gradients(sim.network, params, data)
    names = [k for k in params if not (weights_only and k.endswith(":bias"))]
    out = np.full((3, len(steps), len(names)), np.nan)
    pc = {}
    for i, t in enumerate(steps):
        _, pc = sim.gradients(data, inference=cfg.replace(steps=t))
        for j, k in enumerate(names):
            out[:, i, j] = compare(pc[k], bp[k])
    return Alignment(np.array(steps), names, out[0], out[1], out[2], bp, pc)
