"""The inference policy is written once (neuropc.dynamics.schedule); the backends execute it.

Oracles: the modes' definitions (neuropc.dynamics.modes) read off the schedule; a schedule that
no mode produces, run on every backend against numba in float64; and the gradients a schedule
gathers at step d, against a plain run stopped after d steps (same state, independent path).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.dynamics import schedule as S
from neuropc.dynamics.modes import depths


def _net() -> npc.Network:
    """input(5) -> h1(4, tanh) -> h2(3, tanh) -> output(2), plus the skip input -> h2."""
    net = npc.Network()
    net.population("input", 5, role="input")
    net.population("h1", 4, activation="tanh")
    net.population("h2", 3, activation="tanh")
    net.population("output", 2, role="target")
    for a, b in (("input", "h1"), ("h1", "h2"), ("input", "h2"), ("h2", "output")):
        net.connect(a, b)
    return net


def _build(inf: npc.Inference, **kw) -> tuple[S.Schedule, npc.Simulator]:
    sim = npc.Simulator(_net(), dtype="float64", seed=0)
    cl = sim.plan.clamped_mask("train")
    return S.build(sim.plan, cl, cl.copy(), inf, **kw), sim


def _idx(sim: npc.Simulator, *names: str) -> list[int]:
    return [sim.plan.index(n) for n in names]


def test_strict_schedule() -> None:
    s, sim = _build(npc.Inference(steps=4), learning=True)
    i, h1, h2, o = _idx(sim, "input", "h1", "h2", "output")
    assert list(s.init[[h1, h2]]) == [S.FORWARD] * 2 and list(s.init[[i, o]]) == [S.KEEP] * 2
    assert not s.frozen.any()
    assert list(s.var_pred[[h1, h2, o]]) == [False, True, True]  # h1's only pre is clamped
    assert list(s.refresh_act[[i, h1, h2, o]]) == [False, True, True, False]
    assert (s.grad_at == S.END).all() and s.grads and s.opt_when == S.AT_END
    assert not s.steps_each and s.noise_sd == 0.0 and s.grad_scale == 1.0


def test_fpa_freezes_every_free_prediction_and_never_refreshes_f() -> None:
    s, sim = _build(npc.Inference(mode="fpa", steps=4))
    h2, o = _idx(sim, "h2", "output")
    assert set(np.flatnonzero(s.frozen)) == {h2, o}  # predictions with a part from free pres
    assert not s.var_pred.any() and not s.refresh_act.any()
    assert not s.grads and s.opt_when == S.NEVER


def test_zil_ipc_nudge_langevin_and_zero_init_schedules() -> None:
    inf = npc.Inference(mode="zil", steps=4, rate=1.0)
    s, sim = _build(inf, learning=True)
    cl = sim.plan.clamped_mask("train")
    np.testing.assert_array_equal(s.grad_at, depths(sim.plan, cl))
    assert list(s.grad_at[_idx(sim, "h1", "h2", "output")]) == [2, 1, 0]  # distance to target
    assert s.zero_grads and s.steps_each
    s = S.build(sim.plan, cl, cl, npc.Inference(mode="ipc"), learning=True)
    assert (s.grad_at == S.EVERY).all() and s.opt_when == S.EACH_STEP and s.steps_each
    s = S.build(sim.plan, cl, cl, npc.Inference(nudge=0.25), grads=True)
    assert s.nudge == 0.25 and s.grad_scale == 4.0 and s.nudged[sim.plan.index("output")]
    s = S.build(sim.plan, cl, cl, npc.Inference(temperature=2.0, rate=0.05))
    assert s.noise_sd == pytest.approx(np.sqrt(0.2))
    s = S.build(sim.plan, cl, cl, npc.Inference(steps=6, temperature=1.0, burn_in=2, collect=2),
                learning=True)  # fmt: skip
    assert (s.grad_at == S.COLLECTED).all() and s.zero_grads and s.steps_each
    assert list(np.flatnonzero(s.collect)) == [2, 4, 6] and s.collect_weight == 1 / 3
    s = S.build(sim.plan, cl, cl, npc.Inference(init="zero"))
    assert (s.init[~cl] == S.ZERO).all() and (s.init[cl] == S.KEEP).all()


def _run(kw: dict, sched_fn, steps: int, learn=None):
    """One batch through ``sim.backend.run`` with the schedule that ``sched_fn`` makes from the
    plain one; returns (values, errors, energies, grads, parameters after)."""
    net = _net()
    sim = npc.Simulator(net, dtype="float64", seed=3, **kw)
    rng = np.random.default_rng(7)
    sim.load_parameters({k: rng.normal(0, 0.5, v.shape) for k, v in sim.parameters().items()})
    buf = sim.backend.values_buffer(6)
    buf[:, sim.plan.value_slice("input")] = rng.normal(size=(6, 5))
    buf[:, sim.plan.value_slice("output")] = rng.normal(size=(6, 2))
    cl = sim.plan.clamped_mask("train")
    base = S.build(sim.plan, cl, cl.copy(), npc.Inference(steps=steps, rate=0.2), grads=True)
    out = sim.backend.run(6, sched_fn(sim, base), 11, learn=learn)
    # grads is backend-native (a CUDA tensor on the GPU); host_grads() is its documented copy
    arrays = [np.array(a, np.float64) for a in (out.values, out.errors, out.energies)]
    arrays.append(out.host_grads())
    return arrays + [sim.backend.get_params()]


def _mixed(sim, base):
    """No mode does this: h1's connections learn at step 2, h2's at every step (summed into the
    last), the output's after inference; f is refreshed only on h2; and the optimiser steps
    after every step."""
    g = base.grad_at.copy()
    g[sim.plan.index("h1")] = 2
    g[sim.plan.index("h2")] = S.EVERY
    refresh = base.refresh_act.copy()
    refresh[sim.plan.index("h1")] = False
    return dataclasses.replace(
        base, grad_at=g, zero_grads=True, refresh_act=refresh, opt_when=S.EACH_STEP
    )


@pytest.mark.parametrize("kw", [p for p in BACKEND_PARAMS if p.values[0]["backend"] != "numba"])
def test_backends_execute_a_schedule_no_mode_makes(kw: dict) -> None:
    opt = npc.SGD(lr=0.05, momentum=0.5)
    ref = _run({"backend": "numba"}, _mixed, 5, opt)
    got = _run(kw, _mixed, 5, opt)
    for a, b in zip(got, ref):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * scale)
    assert np.abs(ref[4] - _run({"backend": "numba"}, lambda s, b: b, 5)[4]).max() > 1e-3


@pytest.mark.parametrize("kw", BACKEND_PARAMS)
@pytest.mark.parametrize("d", [0, 2, 3])
def test_gradients_scheduled_at_step_d_equal_a_run_of_d_steps(kw: dict, d: int) -> None:
    def at_d(sim, base):
        return dataclasses.replace(base, grad_at=np.full_like(base.grad_at, d), zero_grads=True)

    got = _run(kw, at_d, 6)[3]
    want = _run(kw, lambda sim, base: base, d)[3]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.abs(want).max() > 1e-3
