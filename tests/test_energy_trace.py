"""A learning batch whose state nobody reads (``learn(state=False)``, ``fit``) runs without its
read-out (``Schedule.readout``): a backend may compute only the final state's energies and leave
the values and errors on the device. That must change nothing else.

Oracles: the same batches with the trace (``learn(state=True)``: the energies never feed the
dynamics, so parameters, optimiser state and the final energy agree bit for bit), and the
closed form of a diverging linear chain (``d_t = (-2)^t``: the energy ``4^t / 2`` first
overflows float64 at step 512), which the untraced run must still name."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND_PARAMS, COMPILED_PARAMS

import neuropc as npc


def _data(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(6, 5)), "output": np.eye(3)[rng.integers(0, 3, 6)]}


# one chunk of steps, and several (20 each), with and without Langevin noise; compiled (seconds
# per graph) only the case that covers the most: several chunks, noise
CASES = [
    pytest.param(be.values[0], t, k, id=f"{be.id}-T{t}-{k}", marks=be.marks)
    for be in BACKEND_PARAMS for t in (0.0, 0.05) for k in (7, 45)
] + [pytest.param(be.values[0], 0.05, 45, id=f"{be.id}-T0.05-45", marks=be.marks)
     for be in COMPILED_PARAMS]  # fmt: skip


@pytest.mark.parametrize(("be", "temperature", "steps"), CASES)
def test_learning_without_the_trace_is_bit_identical(be: dict, temperature: float, steps: int):
    inf = npc.Inference(steps=steps, rate=0.1, temperature=temperature)
    sims = [
        npc.Simulator(
            npc.mlp([5, 4, 4, 3], activation="tanh"),
            **be,
            dtype="float64",
            seed=3,
            inference=inf,
            optimizer=npc.Adam(0.01),
        )
        for _ in range(2)
    ]
    for b in range(3):
        d = _data(b)
        st = sims[0].learn(d)
        e = sims[1].learn(d, state=False)
        assert st.energies["h1"].shape == (steps + 1,)
        assert e == float(sum(v[-1] for v in st.energies.values()))
    p0, p1 = sims[0].parameters(), sims[1].parameters()
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    s0, s1 = sims[0].backend.optimizer_state(), sims[1].backend.optimizer_state()
    assert s0["t"] == s1["t"] == 3
    assert np.array_equal(s0["m"], s1["m"]) and np.array_equal(s0["v"], s1["v"])


def _chain(be: dict) -> npc.Simulator:
    net = npc.Network()
    net.population("a", 1, role="input")
    net.population("b", 1)
    net.connect("a", "b", init="ones")
    return npc.Simulator(net, **be, dtype="float64", optimizer=npc.SGD(0.1))


@pytest.mark.parametrize("steps", [600, 2000])  # at the end: values finite (2^600), or not
@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_divergence_without_the_trace_names_its_first_step(be: dict, steps: int) -> None:
    # x <- x - r (x - mu) with r = 3: d_t = (-2)^t, the energy 4^t / 2 is inf from t = 512 on
    sim = _chain(be)
    before = sim.parameters()
    inf = npc.Inference(steps=steps, rate=3.0, init="given")
    for state in (True, False):
        with pytest.raises(npc.DivergenceError) as ei:
            sim.learn({"a": [[0.0]]}, values={"b": [[1.0]]}, inference=inf, state=state)
        assert ei.value.step == 512 and ei.value.population == "b"
        after = sim.parameters()
        assert all(np.array_equal(before[k], after[k]) for k in before)
    # and a run that stays finite learns
    e = sim.learn({"a": [[0.0]]}, values={"b": [[1.0]]},
                  inference=npc.Inference(steps=3, rate=0.5, init="given"), state=False)  # fmt: skip
    assert e == pytest.approx(0.5 * 0.5**6, rel=1e-12)  # d_t = (1/2)^t, E = d^2 / 2


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_fit_names_the_first_diverging_step(be: dict) -> None:
    net = npc.mlp([4, 8, 8, 2], activation="linear")
    sim = npc.Simulator(net, **be, dtype="float64", seed=0,
                        inference=npc.Inference(steps=400, rate=50.0))  # fmt: skip
    d = {"input": np.ones((3, 4)), "output": np.ones((3, 2)) * 5}
    with pytest.raises(npc.DivergenceError) as traced:
        sim.learn(d)
    with pytest.raises(npc.DivergenceError) as fitted:
        sim.fit(d, epochs=1, batch_size=3, shuffle=False, progress=False)
    assert (fitted.value.step, fitted.value.population) == (
        traced.value.step, traced.value.population)  # fmt: skip
