"""The preconditioned inference dynamics (issue 12, item 2): ``Inference(preconditioner=...)``.

Oracle: autograd of ``energy.py`` at every recorded state of the chain gives ``g_t = dF/dx``;
the RMSprop statistics ``v_t`` and ``M_t = 1 / (eps + sqrt(v_t / (1 - beta2^t)))`` follow from
them, so each recorded step must be ``x_{t+1} = x_t - rate M_t g_t`` exactly (no noise), and with
noise ``(x_{t+1} - x_t + rate M_t g_t) / sqrt(2 rate T M_t)`` must be standard normal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.model.energy import total_energy

RATE, STEPS = 0.05, 8


def _chain(be: dict, temperature: float, pc: npc.Preconditioner, b: int = 6):
    """(states of h1 per step (B, T+1, n), values, params, net) of one preconditioned run."""
    net = npc.mlp([5, 4, 3], activation="tanh")
    sim = npc.Simulator(net, **be, dtype="float64", seed=0)
    sim.record(None, [npc.Probe("h1", "value", mode="steps", dtype="float64")], preset="none")
    rng = np.random.default_rng(1)
    data = {"input": rng.normal(size=(b, 5)), "output": 2 * rng.normal(size=(b, 3))}
    inf = npc.Inference(steps=STEPS, rate=RATE, temperature=temperature, preconditioner=pc, seed=4)
    sim.infer(data, phase="train", inference=inf)
    h = sim.recorder.open()["h1:value"].values
    return h, data, sim.parameters(), net


def _drift(h, data, params, net, pc):
    """Per step: (M_t, rate M_t g_t) from autograd of the energy at the recorded states."""
    par = {k: torch.tensor(v) for k, v in params.items()}
    v = np.zeros(h[:, 0].shape)
    out = []
    for t in range(STEPS):
        x = torch.tensor(h[:, t], requires_grad=True)
        vals = {**{k: torch.tensor(a) for k, a in data.items()}, "h1": x}
        (g,) = torch.autograd.grad(total_energy(net, par, vals, net.clamped("train")).sum(), [x])
        g = g.numpy()
        v = pc.beta2 * v + (1 - pc.beta2) * g * g
        bc = 1 / (1 - pc.beta2 ** (t + 1)) if pc.bias_correction else 1.0
        m = 1 / (pc.eps + np.sqrt(v * bc))
        out.append((m, RATE * m * g))
    return out


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("pc", [npc.Preconditioner(), npc.Preconditioner(beta2=0.5, eps=1e-3,
                                                                         bias_correction=False)])  # fmt: skip
def test_preconditioned_descent_follows_the_rmsprop_recursion(be: dict, pc) -> None:
    h, data, params, net = _chain(be, 0.0, pc)
    for t, (_, step) in enumerate(_drift(h, data, params, net, pc)):
        np.testing.assert_allclose(h[:, t + 1], h[:, t] - step, rtol=0, atol=1e-10)
    assert np.abs(h[:, -1] - h[:, 0]).max() > 1e-2  # it moved


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_preconditioned_noise_is_scaled_by_the_root_of_m(be: dict) -> None:
    """With temperature T the residual of each step, divided by sqrt(2 rate T M_t), is N(0, 1):
    mean and variance over 200 x 8 x 4 = 6400 draws within 5 standard errors."""
    pc, temp = npc.Preconditioner(beta2=0.9), 0.5
    h, data, params, net = _chain(be, temp, pc, b=200)
    z = []
    for t, (m, step) in enumerate(_drift(h, data, params, net, pc)):
        z.append((h[:, t + 1] - h[:, t] + step) / np.sqrt(2 * RATE * temp * m))
    z = np.concatenate([a.ravel() for a in z])
    se = 1 / np.sqrt(len(z))
    assert abs(z.mean()) < 5 * se and abs(z.var() - 1) < 5 * np.sqrt(2) * se


def test_bad_preconditioner_settings_are_refused() -> None:
    for kw, match in [({"beta2": 1.0}, "Preconditioner.beta2"), ({"eps": 0.0}, "Preconditioner.eps"),
                      ({"bias_correction": "yes"}, "Preconditioner.bias_correction")]:  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=match):
            npc.Preconditioner(**kw)
    with pytest.raises(ValueError, match="needs mode 'strict' or 'ipc'"):
        npc.Inference(mode="fpa", preconditioner=npc.Preconditioner())
    with pytest.raises(ValueError, match="instant errors"):
        npc.Inference(errors="leaky", preconditioner=npc.Preconditioner())
    with pytest.raises(TypeError, match="Inference.preconditioner"):
        npc.Inference(preconditioner=0.9)
