"""Builders of common network shapes (:func:`mlp`)."""

from __future__ import annotations

from collections.abc import Sequence

from . import distributions as _dist
from .network import Network


def mlp(
    sizes: Sequence[int],
    *,
    activation: str = "tanh",
    input_activation: str = "linear",
    output_activation: str = "linear",
    names: Sequence[str] | None = None,
    precision: float = 1.0,
    output_precision: float | None = None,
    output_distribution: _dist.Distribution | None = None,
    init: str = "xavier_uniform",
) -> Network:
    """A chain ``input -> h1 -> ... -> output`` of dense layers.

    ``sizes = [784, 256, 256, 10]`` gives populations ``input`` (clamped in every phase), ``h1``,
    ``h2`` and ``output`` (the target: clamped in training, free at test time). ``activation`` is
    applied to the hidden values when they predict the next layer, ``input_activation`` (default
    linear) to the input, so ``mu_1 = W_1 x_0 + b_1`` and ``mu_l = W_l f(x_{l-1}) + b_l`` above.
    ``output_activation`` is the output's own activation (it predicts nothing in a chain).
    ``output_distribution``: e.g. ``npc.Categorical()`` for a softmax output trained on the
    cross-entropy (PCX's PC-CE); the default is a Gaussian of precision ``output_precision``.
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least two sizes (input and output); got {sizes}")
    if names is None:
        names = ["input"] + [f"h{i}" for i in range(1, len(sizes) - 1)] + ["output"]
    if len(names) != len(sizes):
        raise ValueError(f"mlp: {len(names)} names for {len(sizes)} sizes")
    net = Network()
    last = len(sizes) - 1
    for i, (n, s) in enumerate(zip(names, sizes)):
        role = "input" if i == 0 else ("target" if i == last else "hidden")
        prec = output_precision if (i == last and output_precision is not None) else precision
        act = input_activation if i == 0 else (output_activation if i == last else activation)
        dist = output_distribution if i == last else None
        if dist is not None and output_precision is None:
            prec = 1.0  # the hidden precision is not the output's: only a Gaussian has one
        net.population(n, s, activation=act, role=role, precision=prec, distribution=dist)
    for a, b in zip(names[:-1], names[1:]):
        net.connect(a, b, init=init)
    return net
