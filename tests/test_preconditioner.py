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


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("h", [0.5, 1.5])
def test_ula_stationary_variance_closed_form(be: dict, h: float) -> None:
    """A free root with prior mean 0 and precision pi, F = pi x^2 / 2: Euler-ULA
    ``x <- (1 - h) x + sqrt(2 rate) xi`` with ``h = rate pi`` has the stationary variance
    ``2 / (pi (2 - h))`` (not the target's 1 / pi: the discretisation bias), for 0 < h < 2.
    4000 chains after 60 steps (|1 - h|^60 < 1e-18 of the start): the sample variance within 5
    standard errors (sd of a variance: var sqrt(2 / n))."""
    pi, rate = 2.0, h / 2.0
    net = npc.Network()
    net.population("z", 1, bias=True, trainable_bias=False, precision=pi)
    sim = npc.Simulator(net, **be, dtype="float64", seed=0)
    sim.set_bias("z", 0.0)
    st = sim.infer({}, batch_size=4000, inference=npc.Inference(
        steps=60, rate=rate, temperature=1.0, init="zero", seed=9))  # fmt: skip
    want = 2 / (pi * (2 - h))
    assert abs(st["z"].var() - want) < 5 * want * np.sqrt(2 / 4000)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_ula_beyond_h_2_diverges(be: dict) -> None:
    """h = rate pi > 2: |1 - h| > 1, the chain grows geometrically and inference reports it."""
    net = npc.Network()
    net.population("z", 1, bias=True, trainable_bias=False, precision=2.0)
    sim = npc.Simulator(net, **be, dtype="float64", seed=0)
    with pytest.raises(npc.DivergenceError, match="population 'z'"):
        sim.infer({}, batch_size=10, inference=npc.Inference(
            steps=2000, rate=1.1, temperature=1.0, init="zero", seed=9))  # fmt: skip


def test_checkpoint_keeps_a_preconditioned_langevin_inference(tmp_path) -> None:
    inf = npc.Inference(steps=6, temperature=0.5, burn_in=2, collect=2,
                        preconditioner=npc.Preconditioner(beta2=0.9, eps=1e-6))  # fmt: skip
    sim = npc.Simulator(npc.mlp([5, 4, 3]), dtype="float64", inference=inf)
    sim.save(tmp_path / "ck.h5")
    assert npc.load(tmp_path / "ck.h5").inference == inf
