"""Distributions per population (Gaussian, Bernoulli, Categorical; energies F and KL).

Oracles: closed forms (softmax(mu) - y for a clamped categorical output, y - s(mu) for a
Bernoulli, standard PC for a unit-precision Gaussian under KL), backprop of the output
distribution's negative log-likelihood (FPA), and the settings' documented domains. Value and
parameter gradients of every distribution against autograd of the energy on random DAGs are in
tests/test_oracle_gradients.py (the ``-dists`` cases).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_PARAMS
from test_backprop_reference import random_dag as bp_random_dag

import neuropc as npc
from neuropc.reference import backprop as bp


def _classifier(dist, sizes=(5, 4, 3)) -> npc.Network:
    net = npc.Network()
    net.population("x", sizes[0], role="input")
    net.population("h", sizes[1], activation="tanh")
    net.population("y", sizes[2], role="target", distribution=dist)
    net.connect("x", "h")
    net.connect("h", "y")
    net.connect("x", "y")  # a skip: the output has fan-in
    return net


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _forward_mu(sim: npc.Simulator, x: np.ndarray) -> np.ndarray:
    p = sim.parameters()
    h = p["x->h"] @ x.T
    h = np.tanh(h.T + p["h:bias"])
    return h @ p["h->y"].T + x @ p["x->y"].T + p["y:bias"]


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("energy", ["F", "KL"])
def test_clamped_categorical_output_error_is_cross_entropy(be: dict, energy: str) -> None:
    """At the forward-initialised state, a clamped one-hot output's error is y - softmax(mu), so
    dF/dmu = softmax(mu) - y, and its energy is the cross-entropy."""
    sim = npc.Simulator(_classifier(npc.Categorical(energy)), **be, dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 5)), np.eye(3)[rng.integers(0, 3, 6)]
    st = sim.infer({"x": x, "y": y}, phase="train", inference=npc.Inference(steps=0))
    q = _softmax(_forward_mu(sim, x))
    np.testing.assert_allclose(st["y:error"], y - q, rtol=0, atol=1e-12)
    ce = -np.mean(np.sum(y * np.log(q), axis=1))
    assert st.energies["y"][0] == pytest.approx(ce, rel=1e-12)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_clamped_bernoulli_output_error_and_energy(be: dict) -> None:
    sim = npc.Simulator(_classifier(npc.Bernoulli()), **be, dtype="float64", seed=2)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 5)), rng.random((6, 3))
    st = sim.infer({"x": x, "y": y}, phase="train", inference=npc.Inference(steps=0))
    mu = _forward_mu(sim, x)
    q = 1 / (1 + np.exp(-mu))
    np.testing.assert_allclose(st["y:error"], y - q, rtol=0, atol=1e-12)
    bce = -np.mean(np.sum(y * np.log(q) + (1 - y) * np.log(1 - q), axis=1))
    assert st.energies["y"][0] == pytest.approx(bce, rel=1e-12)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_unit_gaussian_under_kl_is_standard_pc(be: dict) -> None:
    """KL(N(phi, I) || N(mu, I)) = 1/2 |phi - mu|^2: the same run, bit for bit."""
    runs = []
    for dist in (None, npc.Gaussian(energy="KL")):
        net = npc.mlp([5, 4, 3])
        if dist is not None:
            for name in ("h1", "output"):
                net.update(name, distribution=dist)
        sim = npc.Simulator(net, **be, dtype="float64", seed=3, optimizer=npc.Adam(1e-2))
        rng = np.random.default_rng(0)
        for _ in range(3):
            sim.learn({"input": rng.normal(size=(4, 5)), "output": rng.normal(size=(4, 3))})
        runs.append(sim.parameters())
    for k in runs[0]:
        assert np.array_equal(runs[0][k], runs[1][k]), k


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("dist", [npc.Categorical(), npc.Categorical("KL"), npc.Bernoulli()])
@pytest.mark.parametrize("seed", [0, 3, 5])
def test_fpa_equals_backprop_of_the_output_nll(be: dict, dist, seed: int) -> None:
    """FPA with non-Gaussian outputs equals backprop of their negative log-likelihood
    (cross-entropy, binary cross-entropy) on random DAGs with fan-in and skip connections: with
    rate 1 and unit hidden precision the error wave is exact once it has crossed the longest
    path (float64, 1e-10)."""
    rng = np.random.default_rng(seed)
    net = bp_random_dag(rng)
    targets = [n for n, p in net.populations.items() if p.role == "target"]
    for t in targets:
        net.update(t, distribution=dist, precision=1.0)
    sim = npc.Simulator(net, **be, dtype="float64", seed=seed)
    data = {}
    for n in sorted(net.clamped("train")):
        size = net[n].size
        if n not in targets:
            data[n] = rng.normal(size=(6, size))
        elif isinstance(dist, npc.Categorical):
            data[n] = np.eye(size)[rng.integers(0, size, 6)]
        else:
            data[n] = rng.random((6, size))
    steps = 2 * len(net.populations)  # more than the longest path
    _, g = sim.gradients(data, inference=npc.Inference(mode="fpa", steps=steps, rate=1.0))
    want = bp.gradients(net, sim.parameters(), data)
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=0, atol=1e-10, err_msg=k)


def test_categorical_classifier_learns_on_both_backends() -> None:
    """A softmax output trained by PC reaches the same parameters on numba and torch."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5))
    y = np.eye(3)[(x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)]
    out = []
    for be in ("numba", "torch"):
        sim = npc.Simulator(_classifier(npc.Categorical()), backend=be, dtype="float64", seed=1,
                            optimizer=npc.Adam(5e-2))  # fmt: skip
        sim.fit({"x": x, "y": y}, epochs=5, batch_size=16, progress=False)
        out.append(sim.parameters())
        assert sim.accuracy({"x": x}, y.argmax(1)) > 1 / 3
    for k in out[0]:
        np.testing.assert_allclose(out[0][k], out[1][k], rtol=0, atol=1e-10, err_msg=k)


# ---- bad input ----------------------------------------------------------------------------------
def test_data_outside_the_distribution_is_refused() -> None:
    sim = npc.Simulator(_classifier(npc.Categorical()), dtype="float64")
    x = np.ones((2, 5))
    with pytest.raises(ValueError, match=r"population 'y' is Categorical: .*row 1 sums to 2"):
        sim.learn({"x": x, "y": np.array([[1.0, 0, 0], [1.0, 1.0, 0]])})
    with pytest.raises(ValueError, match=r"'y' is Categorical: .*smallest entry -0.5"):
        sim.learn({"x": x, "y": np.array([[1.0, 0, 0], [1.5, -0.5, 0]])})
    sim = npc.Simulator(_classifier(npc.Bernoulli()), dtype="float64")
    with pytest.raises(ValueError, match=r"'y' is Bernoulli: data must be in \[0, 1\]; .* 1.5"):
        sim.learn({"x": x, "y": np.full((2, 3), 1.5)})


def test_distribution_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="Categorical: energy must be 'F' or 'KL'; got 'CE'"):
        npc.Categorical("CE")
    net = npc.Network()
    with pytest.raises(TypeError, match="'a': distribution must be npc.Gaussian"):
        net.population("a", 3, distribution="softmax")
    with pytest.raises(ValueError, match="'a': a categorical population has no precision"):
        net.population("a", 3, distribution=npc.Categorical(), precision=2.0)
    with pytest.raises(ValueError, match="'a': give the precision once"):
        net.population("a", 3, distribution=npc.Gaussian(precision=2.0), precision=3.0)
    with pytest.raises(ValueError, match="'a': precision must be finite and > 0"):
        net.population("a", 3, distribution=npc.Gaussian(precision=-1.0))


@pytest.mark.parametrize(
    ("inf", "what"),
    [
        (npc.Inference(errors="leaky"), "errors='leaky'"),
        (npc.Inference(nudge=0.5), "nudge"),
        (npc.Inference(mode="zil", rate=1.0), "mode 'zil'"),
    ],
)
def test_gaussian_only_dynamics_are_refused_for_other_distributions(inf, what) -> None:
    sim = npc.Simulator(_classifier(npc.Categorical()), dtype="float64")
    p0 = sim.parameters()
    with pytest.raises(ValueError, match=f"{what} is defined for Gaussian populations; "
                                         "population 'y' is categorical"):  # fmt: skip
        sim.learn({"x": np.ones((2, 5)), "y": np.eye(3)[[0, 1]]}, inference=inf)
    assert all(np.array_equal(p0[k], v) for k, v in sim.parameters().items())


def test_spec_round_trip_and_checkpoint_keep_distributions(tmp_path) -> None:
    net = _classifier(npc.Categorical("KL"))
    net.update("h", distribution=npc.Bernoulli("KL"))
    assert npc.Network.from_spec(net.spec()).spec() == net.spec()
    sim = npc.Simulator(net, dtype="float64")
    new = npc.load(sim.save(tmp_path / "c.h5"))
    assert new.network["y"].distribution == npc.Categorical("KL")
    assert new.network["h"].distribution == npc.Bernoulli("KL")


def test_backends_declare_what_they_run(monkeypatch) -> None:
    """A backend that lacks a kind refuses it at Simulator(...), naming the population, the kind
    and the backends that have it (today both run every distribution: take one away)."""
    from neuropc import backends

    assert all("categorical" in backends.SUPPORTS[b]["distribution"] for b in backends.BACKENDS)
    lacking = {**backends.SUPPORTS["numba"], "distribution": frozenset({"gaussian"})}
    monkeypatch.setitem(backends.SUPPORTS, "numba", lacking)
    with pytest.raises(ValueError, match=r"population 'y' has a categorical distribution, which "
                                         r"the numba backend does not run; backends that do: torch"):  # fmt: skip
        npc.Simulator(_classifier(npc.Categorical()), backend="numba")
    npc.Simulator(_classifier(npc.Categorical()), backend="torch")


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_saturated_bernoulli_errors_are_flushed_not_subnormal(be) -> None:
    """sigmoid(-95) = 5.5e-42 lies below the smallest normal float32 (1.18e-38): stored as an
    error it would be a subnormal, which slows every gemm that reads it tenfold. Such errors are
    0 exactly; errors above the threshold are untouched (sigmoid(-80) = 1.8e-35)."""
    net = npc.Network()
    net.population("z", 2, bias=True)
    net.population("x", 2, role="input", bias=True, distribution=npc.Bernoulli())
    net.connect("z", "x", init="zeros")
    sim = npc.Simulator(net, **be, dtype="float32")
    sim.set_bias("x", np.array([-95.0, -80.0]))
    st = sim.infer({"x": np.zeros((3, 2), np.float32)}, inference=npc.Inference(steps=0))
    e = np.asarray(st.errors["x"])
    assert np.all(e[:, 0] == 0.0)
    assert np.allclose(e[:, 1], -1.0 / (1.0 + np.exp(80.0)), rtol=1e-5, atol=0)
