"""The networks, optimisers and data of tests/test_distributed.py, shared by the test (single
process, the whole minibatch) and its worker ranks (tests/distributed_worker.py, a shard each)."""

from __future__ import annotations

import numpy as np

import neuropc as npc

BACKENDS = ("numba", "torch")
OPTIMIZERS = ("sgd", "adam")
STEPS = 5  # learning batches of learn()
BATCH = 128  # the minibatch: 64 per rank with 2 ranks
FIT_SAMPLES, FIT_BATCH = 257, 128  # the last minibatch has 1 sample: one rank sits it out


def network(kind: str, objective: str = "forward_kl") -> npc.Network:
    """``plain``: 6-10-8-4 tanh; ``precision``: its hidden layers learn a diagonal / scalar
    precision; ``encoder``: a latent 3 -> 6 generative model with an amortised encoder (fitted
    with ``objective``)."""
    if kind == "encoder":
        net = npc.Network()
        net.population("z", 3, bias=True)
        net.population("h", 8, activation="tanh", bias=True)
        net.population("x", 6, role="input", bias=True)
        net.connect("z", "h")
        net.connect("h", "x")
        net.encoder("x", ["z", "h"], hidden=(5,), objective=objective)
        return net
    learned = kind == "precision"
    net = npc.Network()
    net.population("input", 6, role="input")
    net.population(
        "h1",
        10,
        activation="tanh",
        bias=True,
        precision=npc.Precision("diag", learn="gradient", lr=0.05) if learned else 1.0,
    )
    net.population(
        "h2",
        8,
        activation="tanh",
        bias=True,
        precision=npc.Precision("scalar", learn="ema", decay=0.2) if learned else 1.0,
    )
    net.population("output", 4, role="target", bias=True)
    for a, b in (("input", "h1"), ("h1", "h2"), ("h2", "output")):
        net.connect(a, b)
    return net  # fmt: skip


def optimizer(name: str):
    return npc.SGD(lr=0.05, momentum=0.9) if name == "sgd" else npc.Adam(lr=0.01)


def simulator(kind: str, backend: str, opt: str, distributed: bool | None = None):
    inference = npc.Inference(steps=8, rate=0.1)
    if kind == "encoder":
        inference = npc.Inference(steps=8, rate=0.1, init="amortised", init_sample=False)
    return npc.Simulator(network(kind), backend=backend, dtype="float64", seed=3,
                         inference=inference, optimizer=optimizer(opt),
                         distributed=distributed)  # fmt: skip


def batches(kind: str) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    if kind == "encoder":
        return [{"x": rng.normal(size=(BATCH, 6))} for _ in range(STEPS)]
    return [{"input": rng.normal(size=(BATCH, 6)), "output": rng.normal(size=(BATCH, 4))}
            for _ in range(STEPS)]  # fmt: skip


def fit_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    return {"input": rng.normal(size=(FIT_SAMPLES, 6)),
            "output": rng.normal(size=(FIT_SAMPLES, 4))}  # fmt: skip


def flat(sim: npc.Simulator) -> np.ndarray:
    """Every parameter (weights, biases, precisions, encoder) in one vector."""
    p = sim.parameters()
    return np.concatenate([np.ravel(p[k]) for k in sorted(p)])
