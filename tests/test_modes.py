"""Inference modes against backprop (torch autograd of the feed-forward loss), on every backend.

Oracles: ``neuropc.reference.backprop.gradients`` (autograd of the output energy at the
feed-forward values). FPA and Z-IL equal it to 1e-10 in float64; strict PC's relative error falls
in proportion to the output nudging beta; iPC is checked against strict PC run step by step.
"""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc
from neuropc.reference import backprop

ACTS = ("linear", "tanh", "sigmoid", "gelu", "leaky_relu", "relu", "hard_tanh", "square")
SMOOTH = ("linear", "tanh", "sigmoid", "gelu")


def _random_net(seed: int, *, levelled: bool, acts: tuple[str, ...] = ACTS) -> npc.Network:
    """Inputs -> hidden levels -> targets. Levelled: hidden populations connect only to the next
    level (fan-in allowed, inputs may skip to any level); otherwise hidden skips are added too."""
    rng = np.random.default_rng(seed)
    net = npc.Network()
    n_in, n_levels = int(rng.integers(1, 3)), int(rng.integers(2, 4))
    for i in range(n_in):
        net.population(
            f"in{i}", int(rng.integers(2, 6)), role="input", activation=str(rng.choice(acts))
        )
    levels = []
    for k in range(n_levels):
        names = [f"h{k}_{j}" for j in range(int(rng.integers(1, 3)))]
        for nm in names:
            prec = 1.0 if levelled else float(rng.uniform(0.5, 2.0))
            net.population(
                nm, int(rng.integers(2, 6)), activation=str(rng.choice(acts)), precision=prec
            )
        levels.append(names)
    outs = [f"out{j}" for j in range(int(rng.integers(1, 3)))]
    for nm in outs:
        net.population(
            nm, int(rng.integers(2, 5)), role="target", precision=rng.uniform(0.5, 2.0, 1)[0]
        )
    levels.append(outs)
    ins = [f"in{i}" for i in range(n_in)]
    for k in range(len(levels) - 1):  # every population predicts something on the next level
        for nm in levels[k]:
            for post in rng.choice(
                levels[k + 1], size=int(rng.integers(1, len(levels[k + 1]) + 1)), replace=False
            ):
                net.connect(nm, str(post))
    for nm in [n for lev in levels for n in lev]:  # every population receives something
        if not net.incoming(nm):
            net.connect(str(rng.choice(ins)), nm)
    for i in ins:  # input skips
        for lev in levels[1:]:
            if rng.random() < 0.4:
                post = str(rng.choice(lev))
                if not any(c.pre == i and c.post == post for c in net.connections):
                    net.connect(i, post)
    if not levelled:  # hidden skip connections over a level
        for k in range(len(levels) - 2):
            pre, post = str(rng.choice(levels[k])), str(rng.choice(levels[k + 2]))
            net.connect(pre, post)
    return net


def _setup(seed: int, backend: dict, *, levelled: bool, batch: int = 5, acts=ACTS):
    net = _random_net(seed, levelled=levelled, acts=acts)
    sim = npc.Simulator(net, **backend, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed + 1)
    params = {k: rng.normal(0, 0.6, v.shape) for k, v in sim.parameters().items()}
    sim.load_parameters(params)
    data = {n: rng.normal(0, 1, (batch, net[n].size)) for n in sorted(net.clamped("train"))}
    return net, sim, params, data


def _max_abs(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in b)


def _longest_path(net: npc.Network) -> int:
    order = net.topological_order()
    d = {n: 0 for n in order}
    for n in reversed(order):
        for c in net.outgoing(n):
            d[n] = max(d[n], d[c.post] + 1)
    return max(d.values())


@pytest.mark.parametrize("seed", range(8))
def test_fpa_equals_backprop_at_the_fixed_point(seed: int, backend: dict) -> None:
    net, sim, params, data = _setup(seed, backend, levelled=False)
    want = backprop.gradients(net, params, data)
    cfg = npc.Inference(mode="fpa", steps=3000, rate=0.5, tol=1e-15)
    _, got = sim.gradients(data, inference=cfg)
    assert _max_abs(got, want) <= 1e-10


@pytest.mark.parametrize("seed", range(8))
def test_fpa_is_exact_after_the_longest_path_with_unit_rate(seed: int, backend: dict) -> None:
    net, sim, params, data = _setup(seed, backend, levelled=True)  # unit hidden precision
    want = backprop.gradients(net, params, data)
    steps = _longest_path(net)
    _, got = sim.gradients(data, inference=npc.Inference(mode="fpa", steps=steps, rate=1.0))
    assert _max_abs(got, want) <= 1e-10
    _, short = sim.gradients(data, inference=npc.Inference(mode="fpa", steps=steps - 2, rate=1.0))
    assert _max_abs(short, want) > 1e-6  # the error wave has not reached the deepest layer yet


@pytest.mark.parametrize("seed", range(8))
def test_zil_equals_backprop(seed: int, backend: dict) -> None:
    net, sim, params, data = _setup(seed, backend, levelled=True)
    want = backprop.gradients(net, params, data)
    steps = _longest_path(net) + 2  # more steps than needed change nothing
    _, got = sim.gradients(data, inference=npc.Inference(mode="zil", steps=steps, rate=1.0))
    assert _max_abs(got, want) <= 1e-10
    # and learning applies exactly those gradients (SGD: W <- W - lr * g)
    sim.learn(
        data, inference=npc.Inference(mode="zil", steps=steps, rate=1.0), optimizer=npc.SGD(0.1)
    )
    after = sim.parameters()
    for k in want:
        np.testing.assert_allclose(after[k], params[k] - 0.1 * want[k], rtol=0, atol=1e-12)


def test_zil_conditions_are_enforced(backend: dict) -> None:
    _, sim, _, data = _setup(0, backend, levelled=False)
    with pytest.raises(ValueError, match="rate=1"):
        npc.Inference(mode="zil", rate=0.5)
    with pytest.raises(ValueError, match="levelled graph"):
        sim.gradients(data, inference=npc.Inference(mode="zil", steps=10, rate=1.0))
    _, sim2, _, data2 = _setup(1, backend, levelled=True)
    with pytest.raises(ValueError, match="needs steps >="):
        sim2.learn(data2, inference=npc.Inference(mode="zil", steps=0, rate=1.0))
    # gradients() with fewer steps: populations the error wave has not reached get zero
    _, g0 = sim2.gradients(data2, inference=npc.Inference(mode="zil", steps=0, rate=1.0))
    deep = [k for k in g0 if k.split("->")[-1].split(":")[0].startswith("h0_")]
    assert deep and all(np.all(g0[k] == 0) for k in deep)
    with pytest.raises(ValueError, match="needs init='forward'"):
        npc.Inference(mode="fpa", init="zero")


@pytest.mark.parametrize("seed", range(3))
def test_strict_pc_error_vanishes_linearly_with_nudging(seed: int, backend: dict) -> None:
    # smooth activations and a moderate rate, so that inference reaches its equilibrium
    net, sim, params, data = _setup(seed, backend, levelled=False, acts=SMOOTH)
    want = backprop.gradients(net, params, data)
    norm = np.sqrt(sum(float(np.sum(v**2)) for v in want.values()))
    betas = np.array([0.01, 0.003, 0.001, 0.0003])  # the asymptotic regime
    errs = []
    for beta in betas:
        cfg = npc.Inference(steps=20000, rate=0.1, tol=1e-13, nudge=float(beta))
        st, got = sim.gradients(data, inference=cfg)
        assert st.steps < 20000  # converged
        errs.append(np.sqrt(sum(float(np.sum((got[k] - want[k]) ** 2)) for k in want)) / norm)
    slope = np.polyfit(np.log(betas), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1, (errs, slope)
    # negative nudging approaches the same gradient from the other side
    cfg = npc.Inference(steps=20000, rate=0.1, tol=1e-13, nudge=-0.003)
    _, neg = sim.gradients(data, inference=cfg)
    assert _max_abs(neg, want) < 0.05 * norm


def test_nudging_sets_the_target_between_prediction_and_label(backend: dict) -> None:
    net = npc.mlp([3, 4, 2], activation="tanh")
    sim = npc.Simulator(net, **backend, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    data = {"input": rng.normal(size=(4, 3)), "output": rng.normal(size=(4, 2))}
    mu = sim.predict({"input": data["input"]}, inference=npc.Inference(steps=0))["output"]
    st = sim.infer(data, phase="train", inference=npc.Inference(steps=0, nudge=0.25))
    np.testing.assert_allclose(st["output"], mu + 0.25 * (data["output"] - mu), atol=1e-14)
    st1 = sim.infer(data, phase="train", inference=npc.Inference(steps=0, nudge=1.0))
    np.testing.assert_allclose(st1["output"], data["output"], atol=1e-14)  # beta = 1 is clamping


def test_ipc_is_strict_pc_with_a_weight_step_per_inference_step(backend: dict) -> None:
    net = npc.mlp([4, 5, 3, 2], activation="tanh")
    rng = np.random.default_rng(3)
    data = {"input": rng.normal(size=(6, 4)), "output": rng.normal(size=(6, 2))}
    sgd = npc.SGD(0.05)

    def fresh():
        return npc.Simulator(net, **backend, dtype="float64", seed=1)

    # T = 1: one weight step from the forward-initialised state = strict PC with T = 0
    a, b = fresh(), fresh()
    a.learn(data, inference=npc.Inference(mode="ipc", steps=1, rate=0.2), optimizer=sgd)
    b.learn(data, inference=npc.Inference(steps=0), optimizer=sgd)
    assert _max_abs(a.parameters(), b.parameters()) <= 1e-14
    # T = 2, written out: values step with W0, weights step at (x0, W0) then at (x1, W1)
    ipc = fresh()
    ipc.learn(data, inference=npc.Inference(mode="ipc", steps=2, rate=0.2), optimizer=sgd)
    ref = fresh()
    w0 = ref.parameters()
    x1 = ref.infer(data, phase="train", inference=npc.Inference(steps=1, rate=0.2))
    ref.learn(data, inference=npc.Inference(steps=0), optimizer=sgd)  # W1
    hidden = {n: x1[n] for n in ("h1", "h2")}
    _, g1 = ref.gradients(data, values=hidden, inference=npc.Inference(steps=0, init="given"))
    w1 = ref.parameters()
    w2 = {k: w1[k] - 0.05 * g1[k] for k in w1}
    assert _max_abs(ipc.parameters(), w2) <= 1e-13
    assert _max_abs(w2, w0) > 1e-3
    with pytest.raises(ValueError, match="ipc"):
        ipc.gradients(data, inference=npc.Inference(mode="ipc"))
