"""Precision as a model parameter (issue 10, items 2 and 6).

Oracles: standard PC (identity precision, learning off), torch autograd of the energy written
once (``neuropc.model.energy``, now with ``-1/2 log det Pi``), the closed form
``dF/dSigma = 1/2 (Sigma^-1 - eps eps^T)``, the closed form of one EMA step, the covariance of
Gaussian data (a fit that must recover ``C^-1`` and ``m``), and FPA's equality with backprop
(Rosenbaum 2022: hidden precisions do not change the converged updates, the output's rescales
them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS
from test_backprop_reference import random_dag as bp_random_dag

import neuropc as npc
from neuropc.model.distributions import Gaussian, Precision, energy_torch
from neuropc.model.energy import errors, total_energy
from neuropc.reference import backprop as bp

KINDS = [("numba", "scalar"), ("numba", "diag"), ("torch", "scalar"), ("torch", "diag"),
         ("torch", "full")]  # fmt: skip


def _net(kind: str | None, learn=None, hidden=True, **kw) -> npc.Network:
    net = npc.mlp([5, 4, 3], activation="tanh")
    if kind is not None:
        for name in ("h1", "output") if hidden else ("output",):
            prec = Precision(kind, learn=learn, **kw)
            net.update(name, distribution=Gaussian(precision=prec))
    return net


def _data(b: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(b, 5)), "output": rng.normal(size=(b, 3))}


def _random_pi(kind: str, n: int, rng) -> np.ndarray:
    if kind == "scalar":
        return np.array(rng.uniform(0.5, 2.0))
    if kind == "diag":
        return rng.uniform(0.5, 2.0, n)
    a = rng.normal(size=(n, n))
    return a @ a.T / n + 0.5 * np.eye(n)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_identity_precision_with_learning_off_is_standard_pc(be: dict) -> None:
    runs = []
    for kind in (None, "diag"):
        sim = npc.Simulator(_net(kind), **be, dtype="float64", seed=3, optimizer=npc.Adam(1e-2))
        energies = [sim.learn(_data(seed=k)).energy for k in range(3)]
        runs.append(({k: v for k, v in sim.parameters().items() if "precision" not in k},
                     energies))  # fmt: skip
    for k in runs[0][0]:
        assert np.array_equal(runs[0][0][k], runs[1][0][k]), k
    for a, b in zip(runs[0][1], runs[1][1]):
        assert np.array_equal(a, b)  # log det I = 0: the same energies


@pytest.mark.parametrize(("backend", "kind"), KINDS)
def test_errors_energies_and_gradients_match_autograd(backend: str, kind: str) -> None:
    """With random precisions (loaded as parameters), the settled errors, the energies (with
    -1/2 log det Pi) and the weight gradients equal autograd of energy.py at the final state."""
    rng = np.random.default_rng(7)
    net = _net(kind)
    sim = npc.Simulator(net, backend=backend, dtype="float64", seed=1)
    sim.load_parameters({f"{n}:precision": _random_pi(kind, net[n].size, rng)
                         for n in ("h1", "output")})  # fmt: skip
    st, g = sim.gradients(_data(), inference=npc.Inference(steps=6, rate=0.05))
    par = {k: torch.tensor(v, requires_grad=True) for k, v in sim.parameters().items()}
    vals = {k: torch.tensor(v) for k, v in st.values.items()}
    cl = net.clamped("train")
    total_energy(net, par, vals, cl).mean().backward()
    for k, v in g.items():
        np.testing.assert_allclose(v, par[k].grad.numpy(), rtol=0, atol=1e-10, err_msg=k)
    eps = errors(net, {k: p.detach() for k, p in par.items()}, vals, cl)
    for n in ("h1", "output"):
        np.testing.assert_allclose(st[f"{n}:error"], eps[n].numpy(), rtol=0, atol=1e-10)
    want = float(total_energy(net, {k: p.detach() for k, p in par.items()}, vals, cl).mean())
    assert st.energy[-1] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_dF_dSigma_closed_form() -> None:
    """F = 1/2 d^T Sigma^-1 d + 1/2 log det Sigma: dF/dSigma = 1/2 (Sigma^-1 - eps eps^T),
    eps = Sigma^-1 d (batch mean), against autograd through Pi = Sigma^-1."""
    rng = np.random.default_rng(0)
    n, b = 4, 9
    a = rng.normal(size=(n, n))
    sigma = torch.tensor(a @ a.T / n + np.eye(n), requires_grad=True)
    x, mu = torch.tensor(rng.normal(size=(b, n))), torch.tensor(rng.normal(size=(b, n)))
    dist = Gaussian(precision=Precision("full"))
    energy_torch(dist, x, mu, True, torch.linalg.inv(sigma)).mean().backward()
    s_inv = np.linalg.inv(sigma.detach().numpy())
    eps = (x - mu).numpy() @ s_inv
    want = 0.5 * (s_inv - eps.T @ eps / b)
    np.testing.assert_allclose(sigma.grad.numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("backend", "kind"), KINDS)
def test_gradient_rule_is_one_step_of_the_energy_gradient(backend: str, kind: str) -> None:
    """After one batch (weights frozen by lr 0), Pi = Pi0 - lr dF/dPi (diagonal, scalar) or
    Pi = L L^T with L = L0 - lr dF/dL (full), dF from autograd at the settled state."""
    rng = np.random.default_rng(2)
    lr = 0.05
    net = _net(kind, learn="gradient", hidden=False, lr=lr)
    sim = npc.Simulator(net, backend=backend, dtype="float64", seed=1, optimizer=npc.SGD(0.0))
    pi0 = _random_pi(kind, 3, rng)
    sim.load_parameters({"output:precision": pi0})
    st = sim.learn(_data(), inference=npc.Inference(steps=6, rate=0.05))
    par = {k: torch.tensor(v) for k, v in sim.parameters().items()}
    vals = {k: torch.tensor(v) for k, v in st.values.items()}
    if kind == "full":
        chol = torch.tensor(np.linalg.cholesky(pi0), requires_grad=True)
        par["output:precision"] = chol @ chol.T
        total_energy(net, par, vals, net.clamped("train")).mean().backward()
        new = (chol - lr * chol.grad).detach()
        want = (new @ new.T).numpy()
    else:
        p = torch.tensor(pi0, requires_grad=True)
        par["output:precision"] = p
        total_energy(net, par, vals, net.clamped("train")).mean().backward()
        want = pi0 - lr * p.grad.numpy()
    np.testing.assert_allclose(sim.precision("output"), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("backend", "kind"), KINDS)
def test_ema_rule_closed_form(backend: str, kind: str) -> None:
    """One batch: Pi = ((1 - decay) Pi0^-1 + decay <d d^T>)^-1 (its diagonal or mean)."""
    decay = 0.3
    net = _net(kind, learn="ema", hidden=False, decay=decay, init=2.0)
    sim = npc.Simulator(net, backend=backend, dtype="float64", seed=1, optimizer=npc.SGD(0.0))
    st = sim.learn(_data(), inference=npc.Inference(steps=6, rate=0.05))
    d = st["output:error"] / 2.0  # eps = Pi0 d with Pi0 = 2 I
    if kind == "full":
        want = np.linalg.inv((1 - decay) * np.eye(3) / 2 + decay * d.T @ d / len(d))
    elif kind == "diag":
        want = 1 / ((1 - decay) / 2 + decay * np.mean(d * d, axis=0))
    else:
        want = 1 / ((1 - decay) / 2 + decay * np.mean(d * d))
    np.testing.assert_allclose(sim.precision("output"), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("backend", "kind", "learn"),
    [("numba", "diag", "ema"), ("numba", "diag", "gradient"), ("torch", "full", "ema"),
     ("torch", "full", "gradient"), ("torch", "scalar", "gradient")],
)  # fmt: skip
def test_fit_recovers_the_data_precision_and_mean(backend: str, kind: str, learn: str) -> None:
    """A clamped root population with a learnable precision and bias (prior mean), fitted to
    samples of N(m, C): Pi -> C^-1 (diag: 1 / diag C; scalar: n / tr C) and bias -> m."""
    rng = np.random.default_rng(0)
    n = 3
    a = rng.normal(size=(n, n))
    cov = a @ a.T / n + 0.5 * np.eye(n)
    m = np.array([0.5, -1.0, 2.0])
    net = npc.Network()
    prec = Precision(kind, learn=learn, lr=0.02, decay=0.02)
    net.population("z", n, role="input", bias=True, distribution=Gaussian(precision=prec))
    sim = npc.Simulator(net, backend=backend, dtype="float64", seed=0, optimizer=npc.Adam(0.05),
                        inference=npc.Inference(steps=0))  # fmt: skip
    chol = np.linalg.cholesky(cov)
    for _ in range(600):
        sim.learn({"z": m + rng.normal(size=(500, n)) @ chol.T}, state=False)
    np.testing.assert_allclose(sim.get_bias("z"), m, atol=0.05)
    target = {"full": np.linalg.inv(cov), "diag": 1 / np.diag(cov), "scalar": n / np.trace(cov)}
    np.testing.assert_allclose(sim.precision("z"), target[kind], rtol=0.06, atol=0.02)


@pytest.mark.parametrize("be", BACKEND_PARAMS[:2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpa_hidden_precision_leaves_updates_output_precision_rescales(be: dict, seed: int):
    """Under FPA the converged updates equal backprop of the output energy: hidden precisions do
    not change them, the output precision scales them (Rosenbaum 2022), except the prior mean of
    an input, which learns from the input's own error."""
    rng = np.random.default_rng(seed)
    base = bp_random_dag(rng)
    data = {n: rng.normal(size=(5, base[n].size)) for n in sorted(base.clamped("train"))}
    grads = {}
    for label, hidden, out in (("ref", 1.0, 1.0), ("hidden", 3.0, 1.0), ("output", 1.0, 2.0)):
        net = npc.Network.from_spec(base.spec())
        for name, p in net.populations.items():
            if p.role == "target":
                net.update(name, precision=out)
            elif p.role == "hidden" and net.has_error(name):
                net.update(name, precision=hidden)
        sim = npc.Simulator(net, **be, dtype="float64", seed=seed)
        cfg = npc.Inference(mode="fpa", steps=3000, rate=0.25, tol=1e-15)
        _, grads[label] = sim.gradients(data, inference=cfg)
        np.testing.assert_allclose(
            [np.max(np.abs(grads[label][k] - v)) for k, v in
             bp.gradients(net, sim.parameters(), data).items()], 0, atol=1e-10)  # fmt: skip
    for k in grads["ref"]:
        np.testing.assert_allclose(grads["hidden"][k], grads["ref"][k], rtol=0, atol=1e-10)
        # an input's prior mean learns from its own error, which no output precision scales
        own = k.endswith(":bias") and base[k[: -len(":bias")]].role == "input"
        scale = 1.0 if own else 2.0
        np.testing.assert_allclose(grads["output"][k], scale * grads["ref"][k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_checkpoint_resumes_learned_precision_bit_for_bit(backend: str, tmp_path) -> None:
    def sim():
        return npc.Simulator(_net("diag", learn="ema"), backend=backend, dtype="float64", seed=2)

    a = sim()
    for k in range(4):
        a.learn(_data(seed=k))
    b = sim()
    for k in range(2):
        b.learn(_data(seed=k))
    c = npc.load(b.save(tmp_path / "p.h5"))
    for k in range(2, 4):
        c.learn(_data(seed=k))
    pa, pc = a.parameters(), c.parameters()
    assert "output:precision" in pa
    for k in pa:
        assert np.array_equal(pa[k], pc[k]), k


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_undo_step_restores_the_batch(backend: str) -> None:
    for opt in (npc.SGD(0.1), npc.SGD(0.1, momentum=0.9), npc.Adam(0.1)):
        s = npc.Simulator(npc.mlp([5, 4, 3]), backend=backend, dtype="float64", optimizer=opt)
        s.learn(_data(seed=1))
        p0, o0 = s.parameters(), s.backend.optimizer_state()
        s.learn(_data(seed=2))
        s.backend.undo_step()
        p1, o1 = s.parameters(), s.backend.optimizer_state()
        assert all(np.array_equal(p0[k], p1[k]) for k in p0) and o1["t"] == o0["t"]
        assert np.array_equal(o0["m"], o1["m"]) and np.array_equal(o0["v"], o1["v"])


def test_a_diverging_learned_precision_undoes_the_batch() -> None:
    sim = npc.Simulator(_net("full", learn="gradient", hidden=False, lr=1e300), backend="torch",
                        dtype="float64", optimizer=npc.Adam(0.1))  # fmt: skip
    p0, o0 = sim.parameters(), sim.backend.optimizer_state()
    with pytest.raises(npc.DivergenceError, match="learned precision of population 'output'") as e:
        sim.learn({"input": np.ones((4, 5)) * 5, "output": np.full((4, 3), 50.0)})
    assert e.value.source == "precision"
    p1 = sim.parameters()
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    assert sim.backend.optimizer_state()["t"] == o0["t"]


def test_bad_precision_settings_are_refused() -> None:
    for kw, match in [
        ({"kind": "block"}, "Precision.kind must be one of scalar, diag, full"),
        ({"learn": "adam"}, "Precision.learn must be None, 'gradient' or 'ema'"),
        ({"decay": 1.0}, r"Precision.decay must be a finite number > 0 and < 1"),
        ({"decay": 0.0}, r"Precision.decay must be a finite number > 0 and < 1"),
        ({"clip": (2.0, 1.0)}, r"Precision.clip must satisfy 0 < lo < hi"),
        ({"clip": (0.0, 1.0)}, r"Precision.clip\[0\] must be a finite number > 0"),
        ({"timescale": "fast"}, "timescale='fast' .* needs learn='gradient' or 'ema'"),
        ({"timescale": "quick"}, "Precision.timescale must be 'slow' or 'fast'"),
        ({"lr": -1}, "Precision.lr must be a finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            Precision(**kw)
    net = npc.Network()
    with pytest.raises(ValueError, match=r"'a': Precision\(kind='diag'\).init must be .* \(3,\)"):
        net.population("a", 3, distribution=Gaussian(precision=Precision("diag", init=[1, 2])))
    with pytest.raises(ValueError, match="'a': a full Precision.init must be symmetric positive"):
        net.population("a", 2, distribution=Gaussian(precision=Precision("full", init=-np.eye(2))))
    with pytest.raises(ValueError, match="'a': give the precision once"):
        net.population("a", 2, precision=2.0,
                       distribution=Gaussian(precision=Precision("diag")))  # fmt: skip
    sim = npc.Simulator(_net("full"), backend="torch", dtype="float64")
    before = sim.parameters()
    with pytest.raises(
        ValueError, match="population 'output': precision must be positive definite"
    ):
        sim.load_parameters({"input->h1": np.zeros((4, 5)), "output:precision": -np.eye(3)})
    assert all(np.array_equal(before[k], v) for k, v in sim.parameters().items())  # nothing set
    with pytest.raises(ValueError, match="population 'h1' has a full precision, which the numba "
                                         "backend does not run; backends that do: torch"):  # fmt: skip
        npc.Simulator(_net("full"), backend="numba")
    with pytest.raises(ValueError, match="errors='leaky' needs a diagonal precision"):
        sim.learn(_data(), inference=npc.Inference(errors="leaky"))
    learned = npc.Simulator(_net("diag", learn="ema"), dtype="float64")
    with pytest.raises(ValueError, match="mode 'ipc' .* does not combine"):
        learned.learn(_data(), inference=npc.Inference(mode="ipc"))
    with pytest.raises(ValueError, match="population 'input' has no Precision parameter"):
        learned.load_parameters({"input:precision": 1.0})


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_precision_probe_records_the_learned_value(backend: str, tmp_path) -> None:
    sim = npc.Simulator(_net("diag", learn="ema", hidden=False), backend=backend,
                        dtype="float64", seed=0)  # fmt: skip
    seen = []
    with sim.record(tmp_path / "r.h5", [npc.Probe("output", "precision")], preset="none"):
        for k in range(3):
            sim.learn(_data(seed=k))
            seen.append(sim.precision("output"))
    with npc.open(tmp_path / "r.h5") as r:
        got = r["output:precision"].values
    np.testing.assert_allclose(got.reshape(3, -1), np.array(seen), rtol=1e-6)
    assert not np.allclose(seen[0], seen[2])  # it did learn
