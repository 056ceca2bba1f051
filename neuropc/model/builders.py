"""Builders of common network shapes (:func:`mlp`, :func:`transformer`)."""

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


def transformer(
    vocab: int,
    seq: int,
    d: int = 128,
    *,
    heads: int = 1,
    ff: int | None = None,
    attention: _dist.Distribution | None = None,
    output: _dist.Distribution | None = None,
    ff_activation: str = "gelu",
    causal: bool = True,
) -> Network:
    """A one-block transformer language model as predictive-coding nodes (Pinchetti et al.
    2022): every sub-module's output is a population, so inference relaxes each of them.

    ``tokens`` ``(seq,)`` (input: token ids) -embedding-> ``embed`` ``(seq, d)`` (its bias is a
    learned position embedding) -dense-> ``q``, ``k``, ``v`` -> ``attn`` ``(heads, seq, seq)``
    (``attention_scores``, causal; softmax over keys: a Categorical layer when ``attention`` is
    ``Categorical("KL")``, the default) -> ``mix`` (``attention_values`` of ``attn`` and ``v``)
    -> ``resid`` = embed + W_o mix (``identity`` + ``dense``) -> ``ln`` (``layernorm``) ->
    ``hidden`` ``(seq, ff)`` (``ff_activation``) -> ``resid2`` = resid + W_2 f(hidden) ->
    ``ln2`` -> ``next`` ``(seq, vocab)``, the target: next-token logits, ``output`` (default
    ``Categorical("KL")``; its clamped one-hot data give the cross-entropy).

    ``attention=npc.Gaussian()`` and ``output=npc.Gaussian()`` give the all-Gaussian PC of the
    paper's comparison (the attention values still pass through a softmax when they predict)."""
    ff = 4 * d if ff is None else ff
    attn_dist = _dist.Categorical("KL") if attention is None else attention
    out_dist = _dist.Categorical("KL") if output is None else output
    tok = ("token", "feature")
    net = Network()
    net.population("tokens", shape=(seq,), dims=("token",), role="input")
    net.population("embed", shape=(seq, d), dims=tok)
    for n in ("q", "k", "v", "mix"):
        net.population(n, shape=(seq, d), dims=tok, bias=False)
    net.population("attn", shape=(heads, seq, seq), dims=("head", "query", "key"),
                   activation="softmax", distribution=attn_dist, bias=False)  # fmt: skip
    net.population("resid", shape=(seq, d), dims=tok)
    net.population("ln", shape=(seq, d), dims=tok, bias=False)
    net.population("hidden", shape=(seq, ff), dims=tok, activation=ff_activation)
    net.population("resid2", shape=(seq, d), dims=tok)
    net.population("ln2", shape=(seq, d), dims=tok, bias=False)
    net.population("next", shape=(seq, vocab), dims=("token", "vocab"), role="target",
                   distribution=out_dist)  # fmt: skip
    net.connect("tokens", "embed", kind="embedding", vocab=vocab, init="normal")
    for n in ("q", "k", "v"):
        net.connect("embed", n)
    net.connect(("q", "k"), "attn", kind="attention_scores", heads=heads, causal=causal)
    net.connect(("attn", "v"), "mix", kind="attention_values", heads=heads)
    net.connect("embed", "resid", kind="identity")
    net.connect("mix", "resid")
    net.connect("resid", "ln", kind="layernorm")
    net.connect("ln", "hidden")
    net.connect("resid", "resid2", kind="identity")
    net.connect("hidden", "resid2")
    net.connect("resid2", "ln2", kind="layernorm")
    net.connect("ln2", "next")
    return net
