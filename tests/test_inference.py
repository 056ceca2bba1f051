"""Inference dynamics against closed forms: linear equilibria, initialisation, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc


def _linear_chain(
    seed: int = 0, backend: dict | None = None
) -> tuple[npc.Simulator, dict[str, np.ndarray]]:
    net = npc.Network()
    net.population("x0", 4, role="input")
    net.population("x1", 3, precision=[1.0, 2.0, 0.5])
    net.population("x2", 3, precision=1.5)
    net.population("y", 2, role="target", precision=0.7)
    for a, b in [("x0", "x1"), ("x1", "x2"), ("x2", "y"), ("x0", "x2")]:  # with a skip connection
        net.connect(a, b, init="normal")
    sim = npc.Simulator(net, **(backend or {}), dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    for p in ("x1", "x2", "y"):
        sim.set_bias(p, rng.standard_normal(net[p].size))
    data = {"x0": rng.standard_normal((5, 4)), "y": rng.standard_normal((5, 2))}
    return sim, data


def _linear_equilibrium(
    sim: npc.Simulator, data: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Solve dF/dx1 = dF/dx2 = 0 for the linear Gaussian chain in closed form (normal equations)."""
    net, P = sim.network, sim.parameters()
    W1, W2, W3, Ws = P["x0->x1"], P["x1->x2"], P["x2->y"], P["x0->x2"]
    b1, b2, b3 = P["x1:bias"], P["x2:bias"], P["y:bias"]
    Pi1, Pi2, Pi3 = (
        np.diag(np.broadcast_to(net[n].precision, (net[n].size,))) for n in ("x1", "x2", "y")
    )
    n1, n2 = 3, 3
    # F = 1/2|x1 - W1 x0 - b1|_Pi1 + 1/2|x2 - W2 x1 - Ws x0 - b2|_Pi2 + 1/2|y - W3 x2 - b3|_Pi3
    A = np.zeros((n1 + n2, n1 + n2))
    A[:n1, :n1] = Pi1 + W2.T @ Pi2 @ W2
    A[:n1, n1:] = -W2.T @ Pi2
    A[n1:, :n1] = -Pi2 @ W2
    A[n1:, n1:] = Pi2 + W3.T @ Pi3 @ W3
    out1, out2 = [], []
    for x0, y in zip(data["x0"], data["y"]):
        m1 = W1 @ x0 + b1
        c2 = Ws @ x0 + b2
        rhs = np.concatenate([Pi1 @ m1 - W2.T @ Pi2 @ c2, Pi2 @ c2 + W3.T @ Pi3 @ (y - b3)])
        sol = np.linalg.solve(A, rhs)
        out1.append(sol[:n1])
        out2.append(sol[n1:])
    return np.array(out1), np.array(out2)


def test_linear_network_settles_to_the_closed_form_equilibrium(backend: dict) -> None:
    sim, data = _linear_chain(0, backend)
    x1, x2 = _linear_equilibrium(sim, data)
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=5000, rate=0.2, tol=1e-13))
    assert st.steps < 5000  # stopped early on the update norm
    np.testing.assert_allclose(st["x1"], x1, atol=1e-11)
    np.testing.assert_allclose(st["x2"], x2, atol=1e-11)
    # at the equilibrium the gradient vanishes: eps_1 = W2^T eps_2 etc. (linear activations)
    P = sim.parameters()
    np.testing.assert_allclose(st["x1:error"], st["x2:error"] @ P["x1->x2"], atol=1e-10)
    np.testing.assert_allclose(st["x2:error"], st["y:error"] @ P["x2->y"], atol=1e-10)


def test_early_stop_respects_tol(backend: dict) -> None:
    sim, data = _linear_chain(1, backend)
    tol = 1e-6
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=2000, rate=0.1, tol=tol))
    assert 0 < st.steps < 2000
    # one more step from the returned state moves every sample by less than tol
    nxt = sim.infer(data, phase="train", values={"x1": st["x1"], "x2": st["x2"]},
                    inference=npc.Inference(steps=1, rate=0.1, init="given"))  # fmt: skip
    dx = np.sqrt(((nxt["x1"] - st["x1"]) ** 2).sum(1) + ((nxt["x2"] - st["x2"]) ** 2).sum(1))
    assert dx.max() < tol
    # ... and the step before stopping was above it (it did not stop too early)
    prev = sim.infer(data, phase="train", inference=npc.Inference(steps=st.steps - 2, rate=0.1))
    dprev = np.sqrt(((nxt["x1"] - prev["x1"]) ** 2).sum(1)).max()
    assert dprev > dx.max()


def test_forward_initialisation_zeroes_hidden_errors(backend: dict) -> None:
    sim, data = _linear_chain(2, backend)
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=0))
    np.testing.assert_allclose(st["x1:error"], 0, atol=1e-14)
    np.testing.assert_allclose(st["x2:error"], 0, atol=1e-14)
    P = sim.parameters()
    x1 = data["x0"] @ P["x0->x1"].T + P["x1:bias"]
    np.testing.assert_allclose(st["x1"], x1, atol=1e-14)
    # at test time the target is free and forward-initialised too: all errors are zero
    st = sim.infer({"x0": data["x0"]}, phase="test", inference=npc.Inference(steps=3))
    for n in ("x1", "x2", "y"):
        np.testing.assert_allclose(st[f"{n}:error"], 0, atol=1e-13)
    np.testing.assert_allclose(st.energy, 0, atol=1e-24)


def test_zero_and_given_initialisation(backend: dict) -> None:
    sim, data = _linear_chain(3, backend)
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=0, init="zero"))
    assert np.all(st["x1"] == 0) and np.all(st["x2"] == 0)
    np.testing.assert_array_equal(st["x0"], data["x0"])
    given = np.full((5, 3), 0.25)
    st = sim.infer(
        data, phase="train", values={"x2": given}, inference=npc.Inference(steps=0, init="given")
    )
    np.testing.assert_array_equal(st["x2"], given)  # given
    P = sim.parameters()
    np.testing.assert_allclose(
        st["x1"], data["x0"] @ P["x0->x1"].T + P["x1:bias"], atol=1e-14
    )  # forward
    with pytest.raises(ValueError, match="needs values="):
        sim.infer(data, phase="train", inference=npc.Inference(init="given"))
    with pytest.raises(ValueError, match="population 'x0' is clamped"):
        sim.infer(
            data, phase="train", values={"x0": data["x0"]}, inference=npc.Inference(init="given")
        )


def test_clamped_predictions_are_constant_and_clamped_values_untouched(backend: dict) -> None:
    sim, data = _linear_chain(4, backend)
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=50, rate=0.1))
    np.testing.assert_array_equal(st["x0"], data["x0"])
    np.testing.assert_array_equal(st["y"], data["y"])


def test_langevin_noise_scale_on_a_gaussian(backend: dict) -> None:
    """x ~ N(m, 1/pi) under F = pi/2 (x - m)^2 at temperature T: stationary variance T/pi of the
    Euler-Maruyama chain is T / (pi (1 - rate pi / 2)) exactly (AR(1) closed form)."""
    net = npc.Network()
    net.population("z", 1, bias=True, bias_init=1.5, precision=4.0)
    sim = npc.Simulator(net, **backend, dtype="float64", seed=0)
    rate, temp = 0.05, 0.5
    cfg = npc.Inference(steps=400, rate=rate, temperature=temp)
    samples = []
    vals = np.full((20000, 1), 1.5)
    for _ in range(4):
        st = sim.infer({}, phase="test", values={"z": vals}, inference=cfg.replace(init="given"))
        vals = st["z"]
        samples.append(vals[:, 0].copy())
    s = np.concatenate(samples)
    pi = 4.0
    var = temp / (pi * (1 - rate * pi / 2))
    assert abs(s.mean() - 1.5) < 4 * np.sqrt(var / 20000)
    assert abs(s.var() / var - 1) < 0.03
    # sampling from the prior needs only a batch size
    st = sim.infer({}, phase="test", batch_size=3, inference=cfg.replace(steps=0))
    np.testing.assert_array_equal(st["z"], np.full((3, 1), 1.5))
    with pytest.raises(ValueError, match="pass batch_size="):
        sim.infer({}, phase="test")
