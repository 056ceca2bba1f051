"""Langevin learning (issue 12, item 1): ``Inference(burn_in=..., collect="mean" | k)``.

Oracles: autograd of ``energy.py`` at every collected state of the chain (recorded step by step),
averaged; today's PC bit for bit with nothing collected; the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.model.energy import total_energy


def _data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(6, 5)), "output": rng.normal(size=(6, 3))}


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize(("burn_in", "collect"), [(0, "mean"), (2, "mean"), (1, 2), (3, 4)])
def test_gradient_is_the_average_over_the_collected_states(be, burn_in, collect) -> None:
    """G = 1/|S| sum_{t in S} dF/dtheta(x_t): the chain's states are recorded at every step and
    autograd of the energy differentiates each collected one (the same chain: one seed)."""
    net = npc.mlp([5, 4, 3], activation="tanh")
    sim = npc.Simulator(net, **be, dtype="float64", seed=0)
    sim.record(None, [npc.Probe("h1", "value", mode="steps", dtype="float64")], preset="none")
    inf = npc.Inference(steps=7, rate=0.05, temperature=0.5, burn_in=burn_in, collect=collect,
                        seed=3)  # fmt: skip
    _, g = sim.gradients(_data(), inference=inf)
    h1 = sim.recorder.open()["h1:value"].values  # (trial, step, unit)
    steps = inf.collected()
    assert steps[0] == burn_in and steps[-1] <= 7 and len(steps) > 1
    par = {k: torch.tensor(v, requires_grad=True) for k, v in sim.parameters().items()}
    want = {k: np.zeros_like(v) for k, v in g.items()}
    for t in steps:
        vals = {**{k: torch.tensor(v) for k, v in _data().items()}, "h1": torch.tensor(h1[:, t])}
        grads = torch.autograd.grad(total_energy(net, par, vals, net.clamped("train")).mean(),
                                    list(par.values()))  # fmt: skip
        for k, gr in zip(par, grads):
            want[k] += gr.numpy() / len(steps)
    for k in g:
        np.testing.assert_allclose(g[k], want[k], rtol=0, atol=1e-10, err_msg=k)
    last = npc.Inference(steps=7, rate=0.05, temperature=0.5, seed=3)
    assert (
        np.abs(sim.gradients(_data(), inference=last)[1]["input->h1"] - g["input->h1"]).max() > 1e-6
    )


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_learning_from_collected_samples_steps_the_average(be) -> None:
    """learn() with collection takes its optimiser step from the averaged gradient."""
    net = npc.mlp([5, 4, 3], activation="tanh")
    inf = npc.Inference(steps=6, rate=0.05, temperature=0.3, burn_in=2, collect="mean", seed=1)
    a = npc.Simulator(net, **be, dtype="float64", seed=2, optimizer=npc.SGD(0.1))
    p0 = a.parameters()
    _, g = a.gradients(_data(), inference=inf)
    a.learn(_data(), inference=inf)
    for k, v in a.parameters().items():
        np.testing.assert_allclose(v, p0[k] - 0.1 * g[k], rtol=0, atol=1e-12, err_msg=k)


def test_bad_settings_are_refused() -> None:
    for kw, match in [
        (
            {"burn_in": 5, "steps": 5, "collect": "mean", "temperature": 1.0},
            "burn_in must be < steps",
        ),
        ({"collect": "mean"}, "needs Langevin noise"),
        ({"collect": 0, "temperature": 1.0}, "Inference.collect must be an integer >= 1"),
        ({"collect": "all", "temperature": 1.0}, "must be 'last', 'mean' or a step interval"),
        ({"collect": "mean", "temperature": 1.0, "mode": "ipc"}, "needs mode 'strict'"),
        ({"collect": 2, "temperature": 1.0, "tol": 1e-3}, "cannot stop early"),
        ({"burn_in": 2}, "burn_in only matters"),
    ]:
        with pytest.raises(ValueError, match=match):
            npc.Inference(**kw)
