"""Natural-gradient steps for PC (``npc.NaturalGradient``, issue 11 item 1).

Oracles: the documented Kronecker update written out in numpy from the run's own gradients,
values and errors; the exact Fisher natural gradient of a one-layer linear Gaussian model (Fisher
by autograd of the model's mean, where K-FAC is exact); closed forms of the EMA and refresh
timing; bit-identical checkpoint resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.dynamics.natural_gradient import NaturalGradient
from neuropc.errors import DivergenceError
from neuropc.model import operators
from neuropc.model.distributions import Gaussian, Precision

LR, DIN, DOUT = 0.2, 0.01, 0.1
TORCH = [p for p in BACKEND_PARAMS if p.values[0]["backend"] == "torch"]


def _net(out_prec=None, frozen: bool = False) -> npc.Network:
    net = npc.Network()
    net.population("input", 5, role="input")
    net.population("h1", 4, activation="tanh", trainable_bias=not frozen)
    kw = {"distribution": Gaussian(precision=out_prec)} if out_prec is not None else {}
    net.population("output", 3, role="target", **kw)
    net.connect("input", "h1")
    net.connect("h1", "output")
    net.connect("input", "output", trainable=not frozen)
    return net


def _data(seed: int = 0, b: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(b, 5)), "output": rng.normal(size=(b, 3))}


def _manual(sim, st, g, c_out: str) -> dict:
    """The module docstring's update, from the run's gradients ``g``, values and errors."""
    fx = {"input": st["input"], "h1": np.tanh(st["h1"])}
    cin = {k: np.linalg.inv(v.T @ v / len(v) + DIN * np.eye(v.shape[1])) for k, v in fx.items()}

    def out_inv(p):
        n = sim.network[p].size
        if c_out == "identity":
            return np.eye(n) / (1 + DOUT)
        if c_out == "empirical":
            e = st[f"{p}:error"]
            return np.linalg.inv(e.T @ e / len(e) + DOUT * np.eye(n))
        pi = np.asarray(sim.precision(p)) if p == "output" and _learned(sim) else None
        if pi is None:
            pi = np.broadcast_to(np.asarray(sim.network[p].precision, float), (n,))
        pi = pi if pi.ndim == 2 else np.diag(pi)
        return np.linalg.inv(pi + DOUT * np.eye(n))

    new = {}
    for k, w in sim.parameters().items():
        if k.endswith(":precision"):
            continue
        if "->" in k:
            pre, post = k.split("->")
            new[k] = w - LR * out_inv(post) @ g[k] @ cin[pre]
        else:
            post = k.split(":")[0]
            new[k] = w - LR * out_inv(post) @ g[k] / (1 + DIN)
    return new


def _learned(sim) -> bool:
    return "output:precision" in sim.parameters()


CASES = [
    pytest.param(be.values[0], prec, c_out, id=f"{be.id}-{name}-{c_out}", marks=be.marks)
    for be in BACKEND_PARAMS
    for name, prec in (
        ("unit", None),
        ("fixed", (0.5, 2.0, 1.5)),
        ("diag", "diag"),
        ("full", "full"),
    )
    for c_out in ("precision", "empirical", "identity")
    if not (name == "full" and be.values[0]["backend"] == "numba")
    if c_out == "precision" or name == "fixed"
]


@pytest.mark.parametrize(("be", "prec", "c_out"), CASES)
def test_one_step_equals_the_documented_update(be: dict, prec, c_out: str) -> None:
    rng = np.random.default_rng(3)
    if isinstance(prec, str):  # a Precision parameter (fixed: no rule), at a random value
        net = _net(Precision(prec))
        a = rng.normal(size=(3, 3))
        value = a @ a.T / 3 + 0.5 * np.eye(3) if prec == "full" else rng.uniform(0.5, 2, 3)
    else:
        net, value = _net(), None
        if prec is not None:
            net.update("output", precision=prec)
    ngd = NaturalGradient(lr=LR, damping_in=DIN, damping_out=DOUT, refresh=1, c_out=c_out)
    sim = npc.Simulator(net, **be, dtype="float64", seed=1, optimizer=ngd)
    if value is not None:
        sim.load_parameters({"output:precision": value})
    inf = npc.Inference(steps=8, rate=0.1)
    st, g = sim.gradients(_data(), inference=inf)
    want = _manual(sim, st, g, c_out)
    sim.learn(_data(), inference=inf)
    for k, v in want.items():
        np.testing.assert_allclose(sim.parameters()[k], v, rtol=0, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("kind", ["diag", "full"])
def test_one_layer_linear_gaussian_is_the_exact_natural_gradient(be: dict, kind: str) -> None:
    """input -> output (linear, no bias), both clamped: PC's gradient is the loss gradient and
    the Fisher of N(y; W x, Pi^-1) is E[x x^T] (x) Pi exactly, so PC-NGD with c_out='precision'
    and (vanishing) damping is -lr F^-1 g, with F = mean_b J_b^T Pi J_b from autograd."""
    if kind == "full" and be["backend"] == "numba":
        pytest.skip("numba runs no full precision")
    rng = np.random.default_rng(5)
    net = npc.Network()
    net.population("input", 4, role="input")
    net.population("output", 3, role="target", bias=False,
                   distribution=Gaussian(precision=Precision(kind)))  # fmt: skip
    net.connect("input", "output")
    a = rng.normal(size=(3, 3))
    pi = a @ a.T / 3 + 0.5 * np.eye(3) if kind == "full" else rng.uniform(0.5, 2.0, 3)
    tiny = 1e-13
    ngd = NaturalGradient(lr=LR, damping_in=tiny, damping_out=tiny, refresh=1)
    sim = npc.Simulator(net, **be, dtype="float64", seed=0, optimizer=ngd)
    sim.load_parameters({"output:precision": pi})
    data = {"input": rng.normal(size=(9, 4)), "output": rng.normal(size=(9, 3))}
    w0 = sim.get_weights("input->output")
    _, g = sim.gradients(data)
    sim.learn(data)
    # the Fisher, independently: per-sample Jacobians of mu = W x by autograd
    pim = torch.tensor(pi if kind == "full" else np.diag(pi))
    w = torch.tensor(w0, requires_grad=True)
    x = torch.tensor(data["input"])
    fisher = torch.zeros(w.numel(), w.numel(), dtype=torch.float64)
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda w_, xb=xb: w_ @ xb, w).reshape(3, -1)
        fisher += jac.T @ pim @ jac / len(x)
    step = np.linalg.solve(fisher.numpy(), g["input->output"].reshape(-1)).reshape(3, 4)
    got = sim.get_weights("input->output")
    np.testing.assert_allclose(got, w0 - LR * step, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_ema_and_refresh_timing(be: dict) -> None:
    """refresh=2: the second batch moves C_in by the EMA but steps with the first batch's
    inverse; the third recomputes it from the moved factor."""
    ngd = NaturalGradient(lr=LR, damping_in=DIN, damping_out=DOUT, refresh=2, decay=0.3)
    net = _net()
    sim = npc.Simulator(net, **be, dtype="float64", seed=1, optimizer=ngd)
    inf = npc.Inference(steps=5, rate=0.1)
    xs = [_data(s)["input"] for s in range(3)]
    m = [x.T @ x / len(x) for x in xs]
    sim.learn(_data(0), inference=inf)
    first_inv = np.linalg.inv(m[0] + DIN * np.eye(5))
    w1 = sim.get_weights("input->h1")
    _, g = sim.gradients(_data(1), inference=inf)
    sim.learn(_data(1), inference=inf)
    np.testing.assert_allclose(
        sim.get_weights("input->h1"), w1 - LR * g["input->h1"] @ first_inv / (1 + DOUT),
        rtol=0, atol=1e-12,
    )  # fmt: skip
    c_in = 0.7 * m[0] + 0.3 * m[1]
    np.testing.assert_allclose(sim._ngd[ngd].state()["in/input"], c_in, rtol=0, atol=1e-13)
    w2 = sim.get_weights("input->h1")
    _, g = sim.gradients(_data(2), inference=inf)
    sim.learn(_data(2), inference=inf)
    inv = np.linalg.inv(0.7 * c_in + 0.3 * m[2] + DIN * np.eye(5))
    np.testing.assert_allclose(
        sim.get_weights("input->h1"), w2 - LR * g["input->h1"] @ inv / (1 + DOUT),
        rtol=0, atol=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_frozen_parameters_stay_and_divergence_is_undone(be: dict) -> None:
    sim = npc.Simulator(_net(frozen=True), **be, dtype="float64", seed=1,
                        optimizer=NaturalGradient(lr=LR, refresh=1))  # fmt: skip
    p0 = sim.parameters()
    for s in range(3):
        sim.learn(_data(s))
    p1 = sim.parameters()
    assert np.array_equal(p1["input->output"], p0["input->output"])
    assert np.array_equal(p1["h1:bias"], p0["h1:bias"])
    assert not np.array_equal(p1["input->h1"], p0["input->h1"])
    state = sim._ngd[sim.optimizer]
    factors = state.state()
    big = {k: 1e3 * v for k, v in _data(4).items()}
    with pytest.raises(DivergenceError) as err:
        sim.learn(big, optimizer=NaturalGradient(lr=1e308, refresh=1))
    assert err.value.source == "optimizer" and err.value.parameter is not None
    for k, v in sim.parameters().items():
        assert np.array_equal(v, p1[k]), k
    assert sim._ngd[NaturalGradient(lr=1e308, refresh=1)].count == 0  # its failed step undone
    sim.learn(_data(5))  # the default optimiser's factors were not touched by the other one
    assert state.count == factors["count"] + 1


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_checkpoint_resumes_bit_for_bit(be: dict, tmp_path) -> None:
    ngd = NaturalGradient(lr=LR, refresh=3)
    a = npc.Simulator(_net(), **be, dtype="float64", seed=2, optimizer=ngd)
    for s in range(2):
        a.learn(_data(s))
    a.save(tmp_path / "ck.h5")
    for s in range(2, 5):
        a.learn(_data(s))
    b = npc.load(tmp_path / "ck.h5")
    assert b.optimizer == ngd
    for s in range(2, 5):
        b.learn(_data(s))
    for k, v in a.parameters().items():
        assert np.array_equal(v, b.parameters()[k]), k


def test_bad_settings_are_refused(monkeypatch) -> None:
    for kw, match in [
        ({"damping_in": 0.0}, r"NaturalGradient.damping_in must be a finite number > 0"),
        ({"damping_out": -1.0}, r"NaturalGradient.damping_out must be a finite number > 0"),
        ({"damping_out": float("nan")}, r"NaturalGradient.damping_out must be a finite"),
        ({"decay": 0.0}, r"NaturalGradient.decay"),
        ({"refresh": 0}, r"NaturalGradient.refresh"),
        ({"c_out": "sigma"}, r"c_out must be one of precision, empirical, identity"),
    ]:
        with pytest.raises(ValueError, match=match):
            NaturalGradient(**kw)
    with pytest.raises(ValueError, match=r"population 'h1' has no learned precision"):
        npc.Simulator(_net(), optimizer=NaturalGradient(require_learned=True))
    sim = npc.Simulator(_net(), optimizer=NaturalGradient())
    with pytest.raises(ValueError, match="mode 'ipc'"):
        sim.learn(_data(), inference=npc.Inference(mode="ipc"))

    class LowRank(operators.Dense):  # a kind whose Fisher block has no Kronecker form
        name = "lowrank"
        kronecker = False

    monkeypatch.setitem(operators.OPERATORS, "lowrank", LowRank)
    plan = dataclasses.replace(sim.plan, conn_kinds=("lowrank",) * len(sim.plan.conn_kinds))
    with pytest.raises(ValueError, match=r"connection 'input->h1' is of kind 'lowrank'"):
        NaturalGradient().check(plan)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("c_out", ["precision", "empirical", "identity"])
def test_fpa_pc_ngd_equals_backprop_kfac(be: dict, c_out: str) -> None:
    """Under FPA with unit hidden precision, PC's local gradients are backprop's, its errors are
    backprop's deltas and its f(x_pre) the feed-forward activations: PC-NGD's steps equal the
    backprop twin's K-FAC (neuropc.reference.natural_gradient, written independently) over
    several batches (EMA, refresh every 2, weight decay), on a random MLP with a skip."""
    from neuropc.reference.backprop import BackpropModel

    net = npc.Network()
    net.population("input", 6, role="input")
    net.population("h1", 5, activation="tanh")
    net.population("h2", 4, activation="sigmoid")
    net.population("output", 3, role="target", precision=(0.5, 2.0, 1.0))
    for a, b in (("input", "h1"), ("h1", "h2"), ("h2", "output"), ("input", "h2")):
        net.connect(a, b)
    ngd = NaturalGradient(lr=0.3, damping_in=DIN, damping_out=DOUT, refresh=2, decay=0.3,
                          c_out=c_out, weight_decay=0.01)  # fmt: skip
    # 3 = the longest path to the target: FPA's fixed point, exactly, at rate 1
    inf = npc.Inference(mode="fpa", steps=3, rate=1.0)
    sim = npc.Simulator(net, **be, dtype="float64", seed=4, optimizer=ngd, inference=inf)
    twin = BackpropModel.from_simulator(sim)
    start = sim.parameters()
    for s in range(4):
        rng = np.random.default_rng(s)
        batch = {"input": rng.normal(size=(7, 6)), "output": rng.normal(size=(7, 3))}
        sim.learn(batch)
        twin.step(batch)
    pc, bp = sim.parameters(), twin.parameters()
    assert min(np.abs(pc[k] - start[k]).max() for k in pc) > 1e-3  # every parameter moved
    for k in pc:
        np.testing.assert_allclose(pc[k], bp[k], rtol=0, atol=1e-12, err_msg=k)
