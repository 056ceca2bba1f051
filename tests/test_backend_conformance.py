"""Every backend computes the same numbers as the numba reference backend.

Same weights, same data, noise off: value and error trajectories, energies and weight updates
agree to 1e-10 in float64 and 1e-4 (relative to the array's scale) in float32. With noise on,
the backends draw different (seeded) noise, so they are compared through the posterior they
sample (Bogacz 2017 tutorial: mean 1.480, sd 0.342).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_PARAMS, COMPILED_PARAMS, load_model
from test_oracle_gradients import SEEDS, random_dag, random_parameters

import neuropc as npc

OTHERS = [p for p in BACKEND_PARAMS if p.values[0]["backend"] != "numba"]
# every seed, dtype and error dynamics for the eager backends; for the compiled ones (seconds of
# compilation per structure and chunk length) one seed, float64 instant and float32 leaky
CASES = [
    pytest.param(o.values[0], s, dt, er, id=f"{o.id}-{s}-{dt}-{er}", marks=o.marks)
    for o in OTHERS
    for s in SEEDS[:6]
    for dt in ("float64", "float32")
    for er in ("instant", "leaky")
] + [
    pytest.param(o.values[0], SEEDS[0], dt, er, id=f"{o.id}-{dt}-{er}", marks=o.marks)
    for o in COMPILED_PARAMS
    for dt, er in (("float64", "instant"), ("float32", "leaky"))
]
TOL = {"float64": 1e-10, "float32": 1e-4}


def _scaled(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(
        np.max(np.abs(a - b), initial=0.0) / max(1.0, float(np.max(np.abs(b), initial=0.0)))
    )


def _pair(net_fn, seed: int, other: dict, dtype: str, **kw):
    sims = []
    for be in ({"backend": "numba"}, other):
        net = net_fn()
        sim = npc.Simulator(net, **be, dtype=dtype, seed=seed, **kw)
        sims.append(sim)
    params = random_parameters(sims[0].network, np.random.default_rng(seed + 77))
    for s in sims:
        s.load_parameters(params)
    return sims


def _data(net: npc.Network, phase: str, seed: int, batch: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(0, 1, (batch, net[n].size)) for n in sorted(net.clamped(phase))}


@pytest.mark.parametrize(("other", "seed", "dtype", "errors"), CASES)
def test_trajectories_and_updates_agree(other: dict, seed: int, dtype: str, errors: str) -> None:
    tol = TOL[dtype]
    inf = npc.Inference(steps=8, rate=0.05, errors=errors)
    # SGD, not Adam: Adam's first step is lr * sign(g) for any |g| >> eps, so float32 rounding of a
    # gradient that is ~0 would flip a whole step; the gradients themselves are compared below
    a, b = _pair(
        lambda: random_dag(seed), seed, other, dtype, inference=inf, optimizer=npc.SGD(0.05)
    )
    data = _data(a.network, "train", seed)
    # value and error trajectories: the state after k steps, for several k
    for k in (0, 1, 3, 8):
        cfg = inf.replace(steps=k)
        sa = a.infer(data, phase="train", inference=cfg)
        sb = b.infer(data, phase="train", inference=cfg)
        for n in sa.values:
            assert _scaled(sb.values[n], sa.values[n]) <= tol, (k, n, "value")
        for n in sa.errors:
            assert _scaled(sb.errors[n], sa.errors[n]) <= tol, (k, n, "error")
            assert _scaled(sb.energies[n], sa.energies[n]) <= tol, (k, n, "energy")
    # local weight updates (dF/dtheta at the end of inference), then three learning batches
    ga, gb = a.gradients(data)[1], b.gradients(data)[1]
    for k in ga:
        assert _scaled(gb[k], ga[k]) <= tol, (k, "gradient")
    for i in range(3):
        d = _data(a.network, "train", seed + 100 + i)
        ea, eb = a.learn(d).energy, b.learn(d).energy
        assert _scaled(eb, ea) <= tol
    pa, pb = a.parameters(), b.parameters()
    for k in pa:
        assert _scaled(pb[k], pa[k]) <= tol, k


@pytest.mark.parametrize("other", OTHERS + COMPILED_PARAMS)
def test_early_stop_and_divergence_agree(other: dict) -> None:
    a, b = _pair(lambda: npc.mlp([5, 4, 3], activation="tanh"), 0, other, "float64")
    data = _data(a.network, "train", 1)
    cfg = npc.Inference(steps=500, rate=0.1, tol=1e-6)
    sa, sb = (
        a.infer(data, phase="train", inference=cfg),
        b.infer(data, phase="train", inference=cfg),
    )
    assert sa.steps == sb.steps < 500
    boom = npc.Inference(steps=2000, rate=40.0)
    errs = []
    for s in (a, b):
        with pytest.raises(npc.DivergenceError) as ei:
            s.learn(data, inference=boom)
        errs.append((ei.value.step, ei.value.population))
    assert errs[0] == errs[1]


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_langevin_posterior_on_every_backend(be: dict) -> None:
    """Bogacz (2017) posterior p(v | u = 2): mean 1.480, sd 0.342 (exact), sampled with T = 1."""
    if be["device"] not in (None, "cpu"):
        pytest.skip("the tutorial script selects backends by name only")
    post = load_model("bogacz_tutorial").posterior_sampling(
        be["backend"], 0, chains=2000, steps=8000, burn_in=1000
    )
    assert post["mean"] == pytest.approx(1.480, abs=0.01)
    assert post["sd"] == pytest.approx(0.342, abs=0.01)


@pytest.mark.parametrize("mode", ["strict", "fpa"])
@pytest.mark.parametrize("be", COMPILED_PARAMS)
def test_compiled_runs_the_eager_steps(be: dict, mode: str) -> None:
    """torch.compile runs the same step code: with Langevin noise (the same stream) and output
    nudging (strict; FPA is deterministic) and a per-step recording, the compiled and the eager
    torch backend give the same trajectories, traces and parameters in float64."""
    inf = npc.Inference(
        steps=7,
        rate=0.05,
        temperature=0.01 if mode == "strict" else 0.0,
        mode=mode,
        nudge=0.5 if mode == "strict" else None,
    )
    sims = []
    for compile_ in (False, be["compile"]):
        s = npc.Simulator(
            random_dag(3), backend="torch", device=be["device"], compile=compile_,
            dtype="float64", seed=5, inference=inf, optimizer=npc.SGD(0.05),
        )  # fmt: skip
        s.record(None, preset="steps")
        sims.append(s)
    for i in range(2):
        data = _data(sims[0].network, "train", 40 + i)
        outs = [s.learn(data) for s in sims]
        assert outs[0].steps == outs[1].steps == 7
        for n in outs[0].values:
            assert _scaled(outs[1].values[n], outs[0].values[n]) <= 1e-10, n
        for n in outs[0].errors:
            assert _scaled(outs[1].errors[n], outs[0].errors[n]) <= 1e-10, n
            assert _scaled(outs[1].energies[n], outs[0].energies[n]) <= 1e-10, n
    recs = [s.recorder.open() for s in sims]
    assert recs[0].names
    for name in recs[0].names:
        a, b = recs[0][name].values, recs[1][name].values
        assert a.shape == b.shape and a.size > 0, name
        assert _scaled(b, a) <= 1e-10, name
    pa, pb = sims[0].parameters(), sims[1].parameters()
    for k in pa:
        assert _scaled(pb[k], pa[k]) <= 1e-10, k


@pytest.mark.parametrize("be", COMPILED_PARAMS)
def test_compiled_chunks_follow_every_change_of_call(be: dict) -> None:
    """The compiled chunks keep only dynamo's tensor and global-state guards (the Python values
    they read are part of their cache key): a change of batch size, noise on and off, another
    rate, and a recording that starts mid-run each give the eager backend's numbers (float64)."""
    plain = npc.Inference(steps=6, rate=0.05)
    calls = [
        (6, plain, False),
        (4, plain, False),  # a new batch size: a tensor guard fails, a new graph
        (6, plain.replace(temperature=0.02), False),  # noise tensors where None was
        (6, plain, False),  # and back
        (6, plain.replace(rate=0.08), False),  # another rate: another relaxation
        (6, plain, True),  # a recording collects states
    ]
    kw = {"backend": "torch", "device": be["device"], "dtype": "float64", "seed": 3}
    sims = [
        npc.Simulator(random_dag(5), compile=c, optimizer=npc.SGD(0.05), **kw)
        for c in (False, be["compile"])
    ]
    for i, (batch, inf, record) in enumerate(calls):
        if record:
            for s in sims:
                s.record(None, preset="steps")
        data = _data(sims[0].network, "train", 60 + i, batch=batch)
        outs = [s.learn(data, inference=inf) for s in sims]
        for n in outs[0].values:
            assert _scaled(outs[1].values[n], outs[0].values[n]) <= 1e-10, (i, n)
        pa, pb = sims[0].parameters(), sims[1].parameters()
        for k in pa:
            assert _scaled(pb[k], pa[k]) <= 1e-10, (i, k)
