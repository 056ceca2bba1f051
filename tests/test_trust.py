"""Trust: every bad setting is refused where it is given, with a message that names it; the
optimiser never leaves NaN behind; and the review's defects stay mended.

Oracles: the settings' documented domains (each test states the bad value and the rule it
breaks), the parameters before the call (rollback), torch autograd of the energy written once
(neuropc.model.energy), the independent numba backend, and the closed-form stationary variance of the
unadjusted Langevin algorithm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.dynamics import schedule
from neuropc.model.energy import predictions, total_energy


# ---- the optimiser step ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["strict", "ipc"])
@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_optimizer_divergence_is_rolled_back_and_named(be: dict, mode: str) -> None:
    """SGD(lr=1e308) overflows the weights: the step is undone (parameters and optimiser state
    equal to before the call), the error names the parameter and blames the optimiser step (also
    in iPC, where the steps happen during inference)."""
    sim = npc.Simulator(
        npc.mlp([4, 3, 2]), **be, dtype="float64", seed=0, optimizer=npc.SGD(0.01, momentum=0.9),
        inference=npc.Inference(steps=5, mode=mode),
    )  # fmt: skip
    d = {"input": np.full((2, 4), 10.0), "output": np.full((2, 2), -5.0)}
    sim.learn(d)  # some optimiser state to keep
    p0, s0 = sim.parameters(), sim.backend.optimizer_state()
    with pytest.raises(npc.DivergenceError) as ei:
        sim.learn(d, optimizer=npc.SGD(lr=1e308, momentum=0.9))
    err = ei.value
    assert err.source == "optimizer" and err.parameter == "input->h1"
    assert len(err.index) == 2 and all(0 <= i < n for i, n in zip(err.index, (3, 4)))
    assert "the optimiser step diverged (inference was finite)" in str(err)
    assert "'input->h1'" in str(err) and "rolled back" in str(err)
    p1, s1 = sim.parameters(), sim.backend.optimizer_state()
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    assert s1["t"] == s0["t"] and np.array_equal(s1["m"], s0["m"])
    assert np.isfinite(sim.learn(d, state=False))  # still usable


@pytest.mark.parametrize("be", BACKEND_PARAMS[:2])
def test_inference_divergence_still_blames_inference(be: dict) -> None:
    sim = npc.Simulator(npc.mlp([3, 3, 2]), **be, dtype="float64")
    d = {"input": np.ones((2, 3)), "output": np.ones((2, 2))}
    with pytest.raises(npc.DivergenceError, match="inference diverged") as ei:
        sim.learn(d, inference=npc.Inference(steps=3000, rate=50.0))
    assert ei.value.source == "inference" and ei.value.parameter is None


# ---- data and per-call settings (the settings' own messages: tests/test_malformed_inputs.py) ----
@pytest.fixture
def sim() -> npc.Simulator:
    return npc.Simulator(npc.mlp([4, 3, 2]), dtype="float32", seed=0)


def _d(b: int = 6) -> dict:
    rng = np.random.default_rng(0)
    return {"input": rng.random((b, 4)), "output": np.eye(2)[rng.integers(0, 2, b)]}


def test_per_call_settings_are_validated(sim: npc.Simulator) -> None:
    with pytest.raises(TypeError, match="inference must be an npc.Inference"):
        sim.learn(_d(), inference={"steps": 5})
    with pytest.raises(TypeError, match="optimizer must be an optimiser"):
        sim.learn(_d(), optimizer=0.1)
    with pytest.raises(ValueError, match="phase must be 'train' or 'test'; got 'val'"):
        sim.infer(_d(), phase="val")
    with pytest.raises(TypeError, match="epochs must be an integer"):
        sim.fit(_d(), epochs="2")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        sim.fit(_d(), batch_size=0)


def test_data_that_overflows_the_dtype_is_refused(sim: npc.Simulator) -> None:
    d = _d()
    d["input"] = d["input"] * 1e300
    with pytest.raises(
        ValueError, match=r"population 'input': data overflow float32: .*e\+299, above float32"
    ):
        sim.learn(d)
    d64 = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    d64.infer({"input": d["input"][:, :] * 0 + 1e300})  # fits float64: accepted
    with pytest.raises(ValueError, match="population 'input': expected real numbers"):
        sim.infer({"input": np.full((2, 4), "1")})


def test_fit_checks_validation_and_init_before_the_first_epoch(sim: npc.Simulator, capsys) -> None:
    p0 = sim.parameters()
    bad = [
        (({"input": np.ones((3, 5))}, np.zeros(3, int)), r"population 'input': expected data"),
        (({"input": np.ones((3, 4))}, np.zeros(2, int)), r"labels must have shape \(3,\)"),
        (({"input": np.ones((3, 4))}, np.full(3, 2)), r"class indices in \[0, 2\)"),
        (({"input": np.ones((3, 4))}, np.zeros(3)), "labels must be integers"),
        ({"input": np.ones((3, 4))}, "must be a pair"),
        (({"output": np.ones((3, 2))}, np.zeros(3, int)), "not clamped in phase 'test'"),
    ]
    for validation, match in bad:
        with pytest.raises(ValueError, match=match):
            sim.fit(_d(), epochs=2, validation=validation)
    assert "epoch" not in capsys.readouterr().out  # no epoch ran
    p1 = sim.parameters()
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    sim.inference = npc.Inference(init="given")
    with pytest.raises(ValueError, match=r"fit\(\) has no initial values to give"):
        sim.fit(_d())


# ---- the review's defects ---------------------------------------------------------------------
def test_zil_refuses_early_stop_and_noise_fpa_refuses_noise() -> None:
    with pytest.raises(ValueError, match="mode 'zil' .* cannot stop early; got tol=0.001"):
        npc.Inference(mode="zil", rate=1.0, tol=1e-3)
    for mode, rate in (("zil", 1.0), ("fpa", 0.1)):
        with pytest.raises(ValueError, match=f"mode '{mode}' is deterministic"):
            npc.Inference(mode=mode, rate=rate, temperature=1.0)
    npc.Inference(mode="ipc", temperature=1.0)  # strict and iPC sample


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_nudged_target_trace_agrees_with_state(be: dict, tmp_path) -> None:
    """The recorded per-step value of a nudged target is mu + beta (y - mu) (what State and the
    settled probe hold), at every step: the last step equals State, and every step equals
    mu_t + beta (y - mu_t) with mu_t = y - d_t / beta, d_t = eps_t / Pi from the error trace."""
    net = npc.mlp([4, 5, 3], output_precision=2.0)
    sim = npc.Simulator(net, **be, dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    d = {"input": rng.random((6, 4)), "output": rng.random((6, 3))}
    beta = 0.3
    probes = [npc.Probe("output", var, dtype="float64") for var in ("value", "error")]
    with sim.record(tmp_path / "r.h5", probes, preset="none"):
        st = sim.learn(d, inference=npc.Inference(steps=9, rate=0.1, nudge=beta))
    r = npc.open(tmp_path / "r.h5")
    vt, et = r["output:value"].values, r["output:error"].values  # (6, 10, 3)
    np.testing.assert_allclose(vt[:, -1], st["output"], rtol=0, atol=1e-12)
    y = d["output"][:, None, :]
    mu = y - et / 2.0 / beta
    np.testing.assert_allclose(vt, mu + beta * (y - mu), rtol=0, atol=1e-12)
    assert np.abs(vt[:, 0] - y[:, 0]).max() > 1e-3  # not the label


def _leaky_case(steps: int, error_rate: float):
    net = npc.mlp([3, 4, 2], activation="tanh")
    sim = npc.Simulator(net, dtype="float64", seed=4)
    rng = np.random.default_rng(5)
    d = {"input": rng.normal(size=(5, 3)), "output": rng.normal(size=(5, 2))}
    inf = npc.Inference(steps=steps, rate=0.1, errors="leaky", error_rate=error_rate)
    st, g = sim.gradients(d, inference=inf)
    par = {k: torch.tensor(v, requires_grad=True) for k, v in sim.parameters().items()}
    vals = {k: torch.tensor(v) for k, v in st.values.items()}
    return net, st, g, par, vals


def _close(g: dict, par: dict, atol: float) -> None:
    for k, p in par.items():
        np.testing.assert_allclose(g[k], p.grad.numpy(), rtol=0, atol=atol, err_msg=k)


def test_leaky_gradients_are_the_error_neurons_hebbian_rule() -> None:
    """With leaky errors the weight gradients come from the error neurons' state eps (State.errors):
    dF/dtheta of sum_p <eps_p, x_p - mu_p(theta)> with eps held fixed (autograd, 1e-12)."""
    net, st, g, par, vals = _leaky_case(steps=6, error_rate=0.3)
    mu = predictions(net, par, vals)
    f = sum((torch.tensor(st.errors[n]) * (vals[n] - m)).sum(1) for n, m in mu.items())
    f.mean().backward()
    _close(g, par, 1e-12)
    # after 6 steps the error neurons have not settled: this is not dF/dtheta of the energy
    par2 = {k: p.detach().clone().requires_grad_(True) for k, p in par.items()}
    total_energy(net, par2, vals).mean().backward()
    assert max(np.abs(g[k] - par2[k].grad.numpy()).max() for k in g) > 1e-3


def test_leaky_gradients_equal_the_energy_gradient_once_settled() -> None:
    """Settled error neurons hold Pi (x - mu): the gradients are then dF/dtheta (autograd)."""
    net, _st, g, par, vals = _leaky_case(steps=3000, error_rate=0.5)
    total_energy(net, par, vals).mean().backward()
    _close(g, par, 1e-10)


def test_unstable_leaky_error_rate_is_refused() -> None:
    net = npc.mlp([3, 4, 2], output_precision=0.2)
    sim = npc.Simulator(net, dtype="float64")
    d = {"input": np.ones((2, 3)), "output": np.ones((2, 2))}
    with pytest.raises(ValueError, match=r"population 'output' has precision 0.2.* = 2\.5 must be"):
        sim.learn(d, inference=npc.Inference(errors="leaky", error_rate=0.5))
    sim.learn(d, inference=npc.Inference(errors="leaky", error_rate=0.39))  # 1.95 < 2: runs
    sim.inference = npc.Inference(errors="leaky", rate=0.5)  # error_rate defaults to rate
    with pytest.raises(ValueError, match="unstable for leaky errors"):
        sim.fit(d)


def test_torch_ipc_gradients_are_fresh_without_learning() -> None:
    """Asked for gradients without learning (as a recording's update probe does) in iPC, the
    torch backend computes them from this batch, as numba does (the independent oracle)."""
    net = npc.mlp([4, 3, 2])
    inf = npc.Inference(steps=4, rate=0.1, mode="ipc")
    xs = np.random.default_rng(0).random((2, 3, 4))
    out = {}
    for name in ("numba", "torch"):
        sim = npc.Simulator(net, backend=name, dtype="float64", seed=1)
        cl = sim.plan.clamped_mask("train")
        sched = schedule.build(sim.plan, cl, cl.copy(), inf, grads=True)
        for k in range(2):  # the second batch must not return the first batch's gradients
            buf = sim.backend.values_buffer(3)
            buf[:, sim.plan.value_slice("input")] = xs[k]
            buf[:, sim.plan.value_slice("output")] = 0.5
            res = sim.backend.run(3, sched, 7)
            out[name, k] = np.array(res.grads, np.float64)
    for k in range(2):
        np.testing.assert_allclose(out["torch", k], out["numba", k], rtol=0, atol=1e-12)
    assert np.abs(out["torch", 0] - out["torch", 1]).max() > 1e-6


def test_populations_are_read_only_and_updated_through_the_network() -> None:
    net = npc.mlp([3, 4, 2])
    sim = npc.Simulator(net, dtype="float64")
    with pytest.raises(dataclasses.FrozenInstanceError):
        net["h1"].precision = 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.connections[0].gain = 2.0
    with pytest.raises(ValueError, match="'h1': precision must be finite and > 0"):
        net.update("h1", precision=-1.0)
    with pytest.raises(ValueError, match="population 'h1': cannot update size"):
        net.update("h1", size=5)
    v = net.version
    net.update("h1", precision=2.0)
    assert net["h1"].precision == 2.0 and net.version == v + 1
    with pytest.raises(ValueError, match="the network changed after the Simulator was built"):
        sim.infer({"input": np.ones((1, 3))})
    assert npc.Simulator(net, dtype="float64").plan.precision[:4].tolist() == [2.0] * 4


def test_langevin_has_the_documented_order_rate_bias() -> None:
    """Unadjusted Langevin on F = Pi/2 (x - b)^2 has stationary variance (1/Pi) / (1 - rate Pi/2)
    (closed form of the AR(1) chain), not the posterior's 1/Pi: the README's O(rate) bias."""
    net = npc.Network()
    net.population("z", 1, precision=2.0, bias_init=0.5)
    sim = npc.Simulator(net, dtype="float64", seed=0)
    rate = 0.4
    st = sim.infer(
        {}, batch_size=20000, inference=npc.Inference(steps=200, rate=rate, temperature=1.0)
    )
    var = float(st["z"].var())
    want = (1 / 2.0) / (1 - rate * 2.0 / 2)
    assert var == pytest.approx(want, rel=0.03)  # 20000 samples: sd of the estimate ~1%
    assert abs(var - 0.5) > 0.2  # clearly not the posterior variance 1/Pi
    assert float(st["z"].mean()) == pytest.approx(0.5, abs=0.02)


def test_torch_finiteness_check_is_exact_when_a_sum_overflows() -> None:
    """The torch backend checks parameters with one sum first; finite values whose sum overflows
    must not be reported, and one NaN must be found at its index."""
    sim = npc.Simulator(npc.mlp([4, 3, 2]), backend="torch", dtype="float32")
    be = sim.backend
    be.P.fill_(3e38)  # finite in float32; their sum is inf
    assert be._first_nonfinite() == -1
    be.P[7] = float("nan")
    assert be._first_nonfinite() == 7
    be.P.fill_(0.0)
    be.S2[3] = float("inf")
    assert be._first_nonfinite() == 3
