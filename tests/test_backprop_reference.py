"""The backprop twin (neuropc.reference.backprop) against PC's local gradients and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuropc as npc
from neuropc.reference import backprop as bp

T0 = npc.Inference(steps=0, init="forward", seed=0)
ACTS = ("linear", "tanh", "sigmoid", "gelu", "leaky_relu", "relu", "hard_tanh", "square")


def random_dag(rng: np.random.Generator) -> npc.Network:
    """Inputs, hidden populations with fan-in and skip connections (one may be a root with a
    prior mean), and one or two targets that predict nothing (sinks)."""
    net = npc.Network()
    sources: list[str] = []
    for i in range(int(rng.integers(1, 3))):
        name = f"in{i}"
        prior = i == 1  # a second input carries a learnable prior mean (it has an error)
        net.population(name, int(rng.integers(2, 5)), activation=str(rng.choice(ACTS)),
                       role="input", bias=prior, bias_init=0.3 if prior else 0.0)  # fmt: skip
        sources.append(name)
    for i in range(int(rng.integers(2, 5))):
        name = f"h{i}"
        prior_root = i == 0 and rng.random() < 0.5
        net.population(name, int(rng.integers(2, 6)), activation=str(rng.choice(ACTS)),
                       bias=bool(prior_root or rng.random() < 0.7),
                       bias_init=rng.normal(size=1)[0])  # fmt: skip
        if not prior_root:
            k = int(rng.integers(1, len(sources) + 1))
            for pre in rng.choice(sources, size=k, replace=False):
                net.connect(str(pre), name, init=str(rng.choice(["xavier_uniform", "normal"])))
        sources.append(name)
    for i in range(int(rng.integers(1, 3))):
        name = f"out{i}"
        size = int(rng.integers(1, 4))
        net.population(name, size, activation=str(rng.choice(ACTS)), role="target",
                       precision=rng.uniform(0.5, 2.0, size), bias=bool(rng.random() < 0.7))  # fmt: skip
        k = int(rng.integers(0, 3))  # the deepest hidden population, plus skip connections
        for pre in sorted({sources[-1], *rng.choice(sources[:-1], size=k, replace=False)}):
            net.connect(str(pre), name)
    return net


def random_data(net: npc.Network, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    return {n: rng.normal(size=(batch, net[n].size)) for n in sorted(net.clamped("train"))}


def as_tensors(d: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in d.items()}


@pytest.mark.parametrize("seed", range(12))
def test_gradients_match_pc_at_forward_initialised_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net = random_dag(rng)
    sim = npc.Simulator(net, dtype="float64", seed=seed)
    data = random_data(net, rng, batch=int(rng.integers(1, 9)))
    state, g_pc = sim.gradients(data, phase="train", inference=T0)
    g_bp = bp.gradients(net, sim.parameters(), data)
    assert set(g_bp) == set(g_pc)

    # every hidden error is zero at the forward-initialised state ...
    for name, err in state.errors.items():
        if name not in net.clamped("train"):
            assert np.abs(err).max() <= 1e-12, name
    # ... so PC's energy there is the backprop loss
    loss = bp.loss(net, {k: torch.tensor(v) for k, v in sim.parameters().items()}, as_tensors(data))
    assert abs(float(state.energy[0]) - float(loss)) <= 1e-10 * max(1.0, float(loss))

    # the predictions of clamped populations (the last layer) get backprop's gradient exactly;
    # deeper parameters get no PC gradient before any inference step
    clamped = net.clamped("train")
    for key in g_pc:
        post = key[: -len(":bias")] if key.endswith(":bias") else net.connection(key).post
        if post in clamped:
            np.testing.assert_allclose(g_pc[key], g_bp[key], rtol=0, atol=1e-10, err_msg=key)
        else:
            assert np.abs(g_pc[key]).max() <= 1e-12, key


@pytest.mark.parametrize("seed", range(6))
def test_feedforward_equals_pc_forward_initialisation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    net = random_dag(rng)
    sim = npc.Simulator(net, dtype="float64", seed=seed)
    inputs = random_data(net, rng, batch=5)
    inputs = {k: v for k, v in inputs.items() if k in net.clamped("test")}
    state = sim.infer(inputs, phase="test", inference=T0)
    params = {k: torch.tensor(v) for k, v in sim.parameters().items()}
    values = bp.feedforward(net, params, as_tensors(inputs), phase="test")
    assert list(values) == net.topological_order()
    for name, v in values.items():
        np.testing.assert_allclose(v.numpy(), state[name], rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("precision", [1.0, 3.0, np.array([0.5, 2.0])])
def test_linear_two_layer_closed_form(precision: float | np.ndarray) -> None:
    net = npc.mlp([3, 2], activation="linear")
    net.update("output", precision=precision)
    sim = npc.Simulator(net, dtype="float64", seed=3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    p = sim.parameters()
    w, b = p["input->output"], p["output:bias"]
    pi = np.broadcast_to(precision, (2,))
    resid = (y - x @ w.T - b) * pi  # (B, 2): Pi (y - W x - b) per sample
    g = bp.gradients(net, p, {"input": x, "output": y})
    np.testing.assert_allclose(g["input->output"], -resid.T @ x / len(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["output:bias"], -resid.mean(axis=0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twin_starts_from_the_simulator_parameters(dtype: str) -> None:
    net = npc.mlp([6, 5, 4, 3], activation="tanh")
    sim = npc.Simulator(net, dtype=dtype, seed=7, optimizer=npc.AdamW(2e-3, weight_decay=0.1))
    twin = bp.BackpropModel.from_simulator(sim)
    assert twin.dtype == (torch.float32 if dtype == "float32" else torch.float64)
    ours, theirs = twin.parameters(), sim.parameters()
    assert list(ours) == list(theirs)
    for k in theirs:
        assert np.array_equal(ours[k], theirs[k]), k
    opt = twin.torch_optimizer
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 2e-3 and opt.defaults["weight_decay"] == 0.1


@pytest.mark.parametrize(
    "optimizer",
    [npc.Adam(0.05), npc.AdamW(0.05, weight_decay=0.1), npc.SGD(0.1, momentum=0.9, nesterov=True)],
    ids=["adam", "adamw", "sgd"],
)
def test_single_layer_pc_training_equals_backprop(optimizer: npc.optim.Optimizer) -> None:
    """With no hidden layer and no inference steps PC's learning rule is backprop: training the
    simulator and its twin "the same way" (same weights, optimiser, minibatches and order) must
    give the same parameters; the last minibatch is partial and the output bias is frozen."""
    net = npc.Network()
    net.population("input", 4, activation="tanh", role="input")
    net.population("output", 3, role="target", precision=[1.0, 2.0, 0.5], trainable_bias=False,
                   bias_init=0.2)  # fmt: skip
    net.connect("input", "output")
    sim = npc.Simulator(net, dtype="float64", seed=1, optimizer=optimizer, inference=T0)
    twin = bp.BackpropModel.from_simulator(sim)
    rng = np.random.default_rng(5)
    data = {"input": rng.normal(size=(23, 4)), "output": rng.normal(size=(23, 3))}
    sim.fit(data, epochs=3, batch_size=5, progress=False)
    twin.fit(data, epochs=3, batch_size=5)
    for k, v in sim.parameters().items():
        np.testing.assert_allclose(twin.parameters()[k], v, rtol=0, atol=1e-10, err_msg=k)
    assert np.all(sim.get_bias("output") == 0.2)


def test_twin_fit_learns_and_predicts() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like: needs the hidden layer
    net = npc.mlp([2, 16, 2], activation="tanh")
    twin = bp.BackpropModel(net, npc.Simulator(net).parameters(), optimizer=npc.Adam(0.02))
    hist = twin.fit({"input": x, "output": npc.one_hot(labels, 2)}, epochs=60, batch_size=20)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert twin.accuracy({"input": x}, labels) > 0.9
    assert set(twin.predict({"input": x[:3]})) == {"h1", "output"}


def test_free_root_without_prior_cannot_be_computed() -> None:
    net = npc.Network()
    net.population("input", 2, role="input")
    net.population("latent", 3, bias=False)
    net.population("output", 2, role="target")
    net.connect("input", "output")
    net.connect("latent", "output")
    params = {k: torch.tensor(v) for k, v in npc.Simulator(net).parameters().items()}
    with pytest.raises(ValueError, match="'latent'"):
        bp.feedforward(net, params, {"input": torch.zeros(1, 2)})


def test_parameter_mismatch_is_reported() -> None:
    net = npc.mlp([3, 2])
    p = npc.Simulator(net).parameters()
    del p["output:bias"]
    with pytest.raises(ValueError, match=r"missing: output:bias"):
        bp.gradients(net, p, {"input": np.zeros((1, 3)), "output": np.zeros((1, 2))})
