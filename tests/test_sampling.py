"""``sim.sample(n)``: ancestral samples of the generative model (issue 12, item 8).

Oracles: the mean and covariance of a linear-Gaussian hierarchy in closed form, the
frequencies of a Categorical and a Bernoulli prior (softmax / sigmoid of their biases), the
deterministic mean pass, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_PARAMS

import neuropc as npc


def _linear(kind: str) -> npc.Network:
    net = npc.Network()
    net.population("z", 2, bias=True, precision=(4.0, 0.25))
    prec = npc.Precision(kind)
    net.population("x", 3, distribution=npc.Gaussian(precision=prec))
    net.connect("z", "x")
    return net


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("kind", ["diag", "full"])
def test_linear_gaussian_moments(be: dict, kind: str) -> None:
    """z ~ N(b_z, diag(1/pi_z)), x = W z + b_x + N(0, Pi_x^-1): E[x] = W b_z + b_x and
    Cov(x) = W Sigma_z W^T + Pi_x^-1; 200,000 samples, every entry within 5 standard errors."""
    if kind == "full" and be["backend"] == "numba":
        pytest.skip("numba runs no full precision")
    sim = npc.Simulator(_linear(kind), **be, dtype="float64", seed=0)
    rng = np.random.default_rng(1)
    w, bz, bx = rng.normal(size=(3, 2)), np.array([1.0, -2.0]), rng.normal(size=3)
    a = rng.normal(size=(3, 3))
    pix = a @ a.T / 3 + 0.5 * np.eye(3) if kind == "full" else rng.uniform(0.5, 2.0, 3)
    sim.load_parameters({"z->x": w, "z:bias": bz, "x:bias": bx, "x:precision": pix})
    n = 200_000
    s = sim.sample(n, seed=3)
    sz = np.diag([1 / 4.0, 1 / 0.25])
    cov = w @ sz @ w.T + (np.linalg.inv(pix) if kind == "full" else np.diag(1 / pix))
    mean = w @ bz + bx
    assert np.all(np.abs(s["x"].mean(axis=0) - mean) < 5 * np.sqrt(np.diag(cov) / n))
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)  # sd of a covariance
    assert np.all(np.abs(np.cov(s["x"].T) - cov) < 5 * se)
    assert np.all(np.abs(s["z"].mean(axis=0) - bz) < 5 * np.sqrt(np.diag(sz) / n))
    np.testing.assert_allclose(sim.sample(2, mean=True)["x"], np.tile(mean, (2, 1)), atol=1e-12)
    np.testing.assert_array_equal(sim.sample(5, seed=7)["x"], sim.sample(5, seed=7)["x"])


def test_categorical_and_bernoulli_priors() -> None:
    net = npc.Network()
    net.population("c", 3, bias=True, distribution=npc.Categorical())
    net.population("b", 2, bias=True, distribution=npc.Bernoulli())
    sim = npc.Simulator(net, dtype="float64")
    sim.load_parameters({"c:bias": np.array([0.0, 1.0, -1.0]), "b:bias": np.array([2.0, -0.5])})
    n = 100_000
    s = sim.sample(n, seed=1)
    assert set(np.unique(s["c"])) == {0.0, 1.0} and np.all(s["c"].sum(axis=1) == 1)
    p = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
    assert np.all(np.abs(s["c"].mean(axis=0) - p) < 5 * np.sqrt(p * (1 - p) / n))
    q = 1 / (1 + np.exp(-np.array([2.0, -0.5])))
    assert np.all(np.abs(s["b"].mean(axis=0) - q) < 5 * np.sqrt(q * (1 - q) / n))


def test_given_values_and_refusals() -> None:
    sim = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    with pytest.raises(ValueError, match="population 'input' has no prior"):
        sim.sample(3)
    s = sim.sample(3, given={"input": np.ones(4)}, mean=True)
    assert np.array_equal(s["input"], np.ones((3, 4))) and s["output"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"given\['input'\] must have shape \(3, 4\)"):
        sim.sample(3, given={"input": np.ones((2, 4))})
    with pytest.raises(ValueError, match="unknown population 'nope'"):
        sim.sample(3, given={"nope": np.ones(4)})
    with pytest.raises(ValueError, match="sample n must be an integer >= 1"):
        sim.sample(0)


def test_mean_of_some_populations_only() -> None:
    """``mean=["x"]``: the latent is drawn, the Bernoulli image is its probability sigmoid(mu)."""
    net = npc.Network()
    net.population("z", 2, bias=True)
    net.population("x", 3, distribution=npc.Bernoulli())
    net.connect("z", "x")
    sim = npc.Simulator(net, dtype="float64")
    s = sim.sample(5, seed=2, mean=["x"])
    p = sim.parameters()
    want = 1 / (1 + np.exp(-(s["z"] @ p["z->x"].T + p["x:bias"])))
    assert np.allclose(s["x"], want, atol=1e-14) and np.unique(s["z"]).size == 10
    with pytest.raises(ValueError, match="unknown population 'nope'"):
        sim.sample(2, mean=["nope"])
