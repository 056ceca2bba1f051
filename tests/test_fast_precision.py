"""Fast precision (``Precision(timescale="fast")``): Pi re-estimated at every inference step.

Oracles: an independent loop in torch that descends energy.py's energy jointly in the free values
and in Pi (autograd for the gradient rule; the EMA rule's closed form), checked step by step
against every backend's energies, final values and weight gradients in float64; the slow rule's
closed form after a learning batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS
from test_precision import _random_pi

import neuropc as npc
from neuropc.model.distributions import Gaussian, Precision
from neuropc.model.energy import predictions, total_energy

LR, DECAY, DAMP, RATE, STEPS = 0.3, 0.4, 0.05, 0.1, 7


def _lr(kind: str) -> float:
    return 0.02 if kind == "full" else LR  # a step on the factor L moves Pi quadratically


def _net(kind: str, rule: str) -> npc.Network:
    net = npc.mlp([5, 4, 3], activation="tanh")
    for name in ("h1", "output"):
        prec = Precision(kind, learn=rule, lr=_lr(kind), decay=DECAY, damping=DAMP,
                         timescale="fast")  # fmt: skip
        net.update(name, distribution=Gaussian(precision=prec))
    return net


def _data(b: int = 6) -> dict:
    rng = np.random.default_rng(4)
    return {"input": rng.normal(size=(b, 5)), "output": 2.0 * rng.normal(size=(b, 3))}


def _oracle(net: npc.Network, params: dict, data: dict, kind: str, rule: str):
    """Energies per step, the final values and Pi_T, by an independent loop: x <- x - rate dF/dx
    (F summed over the batch) and Pi <- rule(Pi, <d d^T>) from the same state. The gradient rule
    is Pi <- clip(Pi - lr dF/dPi) (scalar, diag), or L <- L - lr dF/dL with Pi = L L^T (full),
    with the derivatives by autograd of the batch-mean energy; the EMA rule is its closed form."""
    par = {k: torch.tensor(v) for k, v in params.items()}
    x = {k: torch.tensor(v) for k, v in data.items()}
    x["h1"] = torch.zeros(x["input"].shape[0], 4, dtype=torch.float64)
    x["h1"] = predictions(net, par, x)["h1"]  # forward initialisation
    cl = net.clamped("train")
    full_gradient = kind == "full" and rule == "gradient"
    pi0 = {n: par[f"{n}:precision"].clone() for n in ("h1", "output")}
    # the leaves the gradient rule descends: Pi itself, or its Cholesky factor
    leaf = {n: torch.linalg.cholesky(p) if full_gradient else p for n, p in pi0.items()}
    eye = {
        n: torch.eye(p.shape[-1], dtype=p.dtype) if kind == "full" else 1.0 for n, p in pi0.items()
    }
    cov = {n: torch.linalg.inv(p) - DAMP * eye[n] if kind == "full" else 1.0 / p - DAMP
           for n, p in pi0.items()}  # fmt: skip

    def to_pi(n, v):
        return v @ v.T if full_gradient else v

    energies = []
    for t in range(STEPS + 1):
        h = x["h1"].clone().requires_grad_(True)
        lv = {n: v.clone().requires_grad_(True) for n, v in leaf.items()}
        full = {**par, **{f"{n}:precision": to_pi(n, v) for n, v in lv.items()}}
        f = total_energy(net, full, {**x, "h1": h}, cl)
        energies.append(float(f.mean().detach()))
        if t == STEPS:
            break
        (gx,) = torch.autograd.grad(f.sum(), [h], retain_graph=True)
        gp = torch.autograd.grad(f.mean(), list(lv.values()))
        mu = predictions(net, par, x)
        for (n, v), g in zip(leaf.items(), gp):
            if rule == "gradient":
                leaf[n] = v - _lr(kind) * g if kind == "full" else (v - LR * g).clip(1e-6, 1e6)
                continue
            d = x[n] - mu[n]
            second = d.T @ d / d.shape[0] if kind == "full" else (d**2).mean(dim=0)
            if kind == "scalar":
                second = second.mean()
            cov[n] = (1 - DECAY) * cov[n] + DECAY * second
            leaf[n] = torch.linalg.inv(cov[n] + DAMP * eye[n]) if kind == "full" else 1.0 / (
                cov[n] + DAMP)  # fmt: skip
        x["h1"] = x["h1"] - RATE * gx
    return np.array(energies), x, {n: to_pi(n, v).detach() for n, v in leaf.items()}


FULL_ON_TORCH = [p for p in BACKEND_PARAMS if p.values[0]["backend"] == "torch"]
CASES = [
    pytest.param(be.values[0], kind, id=f"{be.id}-{kind}", marks=be.marks)
    for be in BACKEND_PARAMS
    for kind in ("scalar", "diag", "full")
    if kind != "full" or be.values[0]["backend"] == "torch"
]


@pytest.mark.parametrize(("be", "kind"), CASES)
@pytest.mark.parametrize("rule", ["gradient", "ema"])
def test_fast_precision_follows_the_joint_descent(be: dict, kind: str, rule: str) -> None:
    net = _net(kind, rule)
    sim = npc.Simulator(net, **be, dtype="float64", seed=2)
    rng = np.random.default_rng(1)

    def init(n):
        return _random_pi(kind, n, rng)

    sim.load_parameters({"h1:precision": init(4), "output:precision": init(3)})
    params = sim.parameters()
    st, g = sim.gradients(_data(), inference=npc.Inference(steps=STEPS, rate=RATE))
    energies, x, pis = _oracle(net, params, _data(), kind, rule)
    np.testing.assert_allclose(st.energy, energies, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(st["h1"], x["h1"].numpy(), rtol=0, atol=1e-10)
    assert np.abs(st["h1"]).max() < 10  # a settled state, not a runaway
    assert np.abs(energies[-1] - energies[0]) > 0.1  # the precisions moved the energy
    # the weight gradients use the final (fast) precisions: autograd at the final state
    par = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    full = {**par, **{f"{n}:precision": p for n, p in pis.items()}}
    total_energy(net, full, x, net.clamped("train")).mean().backward()
    for k, v in g.items():
        if "precision" not in k:
            np.testing.assert_allclose(v, par[k].grad.numpy(), rtol=0, atol=1e-10, err_msg=k)
    # the slow (parameter) precision did not move: nothing was learned
    for n in ("h1", "output"):
        np.testing.assert_array_equal(
            sim.precision(n), np.broadcast_to(params[f"{n}:precision"], sim.precision(n).shape)
        )


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_slow_step_after_a_learning_batch_uses_the_settled_errors(be: dict) -> None:
    """The slow Pi takes its rule's step from the settled d = x - mu with the slow Pi0, and
    the next batch's fast precision starts from it."""
    net = _net("diag", "gradient")
    sim = npc.Simulator(net, **be, dtype="float64", seed=2, optimizer=npc.SGD(0.0))
    st = sim.learn(_data(), inference=npc.Inference(steps=STEPS, rate=RATE))
    vals = {k: torch.tensor(v) for k, v in st.values.items()}
    par = {k: torch.tensor(v) for k, v in sim.parameters().items()}
    d = st["output"] - predictions(net, par, vals)["output"].numpy()
    want = np.clip(1.0 - LR * 0.5 * ((d * d).mean(axis=0) - 1.0), 1e-6, 1e6)
    np.testing.assert_allclose(sim.precision("output"), want, rtol=0, atol=1e-12)
    # a test-phase run starts its fast precision from the learned slow one
    _, x, _ = _oracle(net, sim.parameters(), _data(), "diag", "gradient")
    st2, _ = sim.gradients(_data(), inference=npc.Inference(steps=STEPS, rate=RATE))
    np.testing.assert_allclose(st2["h1"], x["h1"].numpy(), rtol=0, atol=1e-10)


def test_fast_precision_refusals() -> None:
    with pytest.raises(ValueError, match="needs learn='gradient' or 'ema'"):
        Precision("diag", timescale="fast")
    with pytest.raises(
        ValueError, match="population 'h1' has a full precision, which the numba .* torch"
    ):
        npc.Simulator(_net("full", "ema"), backend="numba")
    sim = npc.Simulator(_net("diag", "ema"), dtype="float64")
    with pytest.raises(ValueError, match="population 'h1' re-estimates its precision"):
        sim.infer(_data(), phase="train", inference=npc.Inference(errors="leaky", rate=0.05))
    with pytest.raises(ValueError, match="population 'h1' learns its precision"):
        sim.learn(_data(), inference=npc.Inference(mode="zil", rate=1.0, steps=2))
