"""Every backend computes the same numbers as the numba reference backend.

Same weights, same data, noise off: value and error trajectories, energies and weight updates
agree to 1e-10 in float64 and 1e-4 (relative to the array's scale) in float32. With noise on,
the backends draw different (seeded) noise, so they are compared through the posterior they
sample (Bogacz 2017 tutorial: mean 1.480, sd 0.342).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_PARAMS, load_model
from test_oracle_gradients import SEEDS, random_dag, random_parameters

import neuropc as npc

OTHERS = [p for p in BACKEND_PARAMS if p.values[0]["backend"] != "numba"]
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


@pytest.mark.parametrize("errors", ["instant", "leaky"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", SEEDS[:6])
@pytest.mark.parametrize("other", OTHERS)
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


@pytest.mark.parametrize("other", OTHERS)
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
