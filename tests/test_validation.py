"""Bad input gets a clear ValueError that names the population and the shapes, and loses nothing."""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc


@pytest.fixture
def sim() -> npc.Simulator:
    return npc.Simulator(npc.mlp([6, 5, 3]), dtype="float64", seed=0)


def _data(b: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"input": rng.random((b, 6)), "output": rng.random((b, 3))}


def test_unknown_population_lists_valid_names() -> None:
    net = npc.mlp([4, 3, 2])
    with pytest.raises(ValueError, match=r"unknown population 'h9'.*valid: input, h1, output"):
        net.connect("h9", "output")
    with pytest.raises(ValueError, match="unknown population 'nope'"):
        net["nope"]
    with pytest.raises(ValueError, match="unknown population 'nope'"):
        net.resolve("nope:error")


def test_unknown_activation_role_and_variable() -> None:
    net = npc.Network()
    with pytest.raises(ValueError, match="unknown activation 'tahn'.*valid: linear, tanh"):
        net.population("a", 3, activation="tahn")
    with pytest.raises(ValueError, match="unknown role 'output'"):
        net.population("a", 3, role="output")
    net.population("a", 3, role="input")
    with pytest.raises(ValueError, match="population 'a' has no error population"):
        net.resolve("a:error")
    with pytest.raises(ValueError, match="unknown variable 'rate'"):
        net.resolve("a:rate")


def test_cycle_is_rejected_and_named() -> None:
    net = npc.Network()
    for n in "abc":
        net.population(n, 2)
    net.connect("a", "b")
    net.connect("b", "c")
    with pytest.raises(ValueError, match=r"cycle: c -> a -> b -> c|cycle: a -> b -> c -> a"):
        net.connect("c", "a")
    assert [c.name for c in net.connections] == ["a->b", "b->c"]  # the bad edge was not kept
    with pytest.raises(ValueError, match="cannot predict itself"):
        net.connect("a", "a")


def test_size_and_per_unit_shapes() -> None:
    net = npc.Network()
    with pytest.raises(ValueError, match="population 'x': size must be a positive integer; got 0"):
        net.population("x", 0)
    with pytest.raises(
        ValueError,
        match=r"population 'x': precision must be a scalar or have shape \(3,\); got shape \(2,\)",
    ):
        net.population("x", 3, precision=[1.0, 2.0])
    with pytest.raises(ValueError, match="precision must be finite and > 0"):
        net.population("x", 3, precision=0.0)


def test_data_of_wrong_shape_names_population_and_shapes(sim: npc.Simulator) -> None:
    d = _data()
    d["input"] = d["input"][:, :5]
    with pytest.raises(
        ValueError,
        match=r"population 'input': expected data of shape \(batch, 6\); got shape \(4, 5\)",
    ):
        sim.learn(d)
    d = _data()
    d["output"] = d["output"][:3]
    with pytest.raises(ValueError, match="population 'output': batch size 3 differs from 4"):
        sim.learn(d)
    with pytest.raises(ValueError, match=r"expected data of shape \(batch, 6\); got shape \(6,\)"):
        sim.infer({"input": np.zeros(6)})


def test_missing_and_unclamped_data(sim: npc.Simulator) -> None:
    with pytest.raises(
        ValueError, match="population 'output' is clamped in phase 'train' but no data was given"
    ):
        sim.learn({"input": _data()["input"]})
    # labels are never clamped at test time
    with pytest.raises(
        ValueError, match="'output' is not clamped in phase 'test' \\(targets are never clamped"
    ):
        sim.infer(_data(), phase="test")
    with pytest.raises(ValueError, match="labels are never clamped at test time"):
        sim.network.clamp("output", "test")
    sim.infer({"input": _data()["input"]})  # the refused clamp changed nothing


def test_stale_simulator_is_detected(sim: npc.Simulator) -> None:
    sim.network.clamp("h1", "train")
    with pytest.raises(ValueError, match="the network changed after the Simulator was built"):
        sim.learn(_data())
    with pytest.raises(ValueError, match="unknown population 'inptu'"):
        sim.infer({"inptu": np.zeros((2, 6))})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_rejected_before_anything_changes(
    sim: npc.Simulator, bad: float
) -> None:
    before = sim.parameters()
    d = _data()
    d["input"][2, 4] = bad
    with pytest.raises(
        ValueError,
        match=r"population 'input': data contains NaN or inf \(first at index \(2, 4\)\)",
    ):
        sim.learn(d)
    with pytest.raises(ValueError, match="population 'input': data contains NaN or inf"):
        sim.fit(d, epochs=1, progress=False)
    after = sim.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_divergence_names_step_and_population_and_keeps_weights() -> None:
    # a huge inference rate makes the linear dynamics explode; the energy goes non-finite
    net = npc.mlp([4, 8, 8, 2], activation="linear")
    sim = npc.Simulator(net, dtype="float64", seed=0, inference=npc.Inference(steps=400, rate=50.0))
    before = sim.parameters()
    d = {"input": np.ones((3, 4)), "output": np.ones((3, 2)) * 5}
    with pytest.raises(npc.DivergenceError) as ei:
        sim.learn(d)
    err = ei.value
    assert err.step > 0 and err.population in ("h1", "h2", "output")
    assert f"population {err.population!r}" in str(err) and f"step {err.step}" in str(err)
    after = sim.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # the same step without the blow-up works and changes the weights
    sim.learn(d, inference=npc.Inference(steps=5, rate=0.1))
    assert not np.array_equal(before["h1->h2"], sim.get_weights("h1->h2"))


def test_divergence_step_is_exact() -> None:
    # x <- x - r*(x - mu) with r = 3 multiplies the error by -2 each step, d_t = (-2)^t
    net = npc.Network()
    net.population("a", 1, role="input")
    net.population("b", 1)
    net.connect("a", "b", init="ones")
    sim = npc.Simulator(net, dtype="float64")
    st0 = sim.infer(
        {"a": [[0.0]]},
        values={"b": [[1.0]]},
        inference=npc.Inference(steps=3, rate=3.0, init="given"),
    )
    np.testing.assert_allclose(st0.energies["b"], 0.5 * np.array([1.0, 4.0, 16.0, 64.0]))
    with pytest.raises(npc.DivergenceError) as ei:
        sim.infer(
            {"a": [[0.0]]},
            values={"b": [[1.0]]},
            inference=npc.Inference(steps=2000, rate=3.0, init="given"),
        )
    # the kernel sums d * Pi * d = 4^t before halving it: 4^512 = 2^1024 is the first inf
    assert ei.value.step == 512 and ei.value.population == "b"


def test_parameter_setters_validate(sim: npc.Simulator) -> None:
    with pytest.raises(
        ValueError,
        match=r"connection 'input->h1': expected weights of shape \(5, 6\); got \(6, 5\)",
    ):
        sim.set_weights("input->h1", np.zeros((6, 5)))
    with pytest.raises(ValueError, match="unknown connection 'input->h2'"):
        sim.get_weights("input->h2")
    with pytest.raises(
        ValueError, match=r"population 'h1': expected a bias of shape \(5,\); got \(4,\)"
    ):
        sim.set_bias("h1", np.zeros(4))
    with pytest.raises(ValueError, match="population 'input' has no bias"):
        sim.get_bias("input")


def test_inference_and_optimizer_settings_validate() -> None:
    with pytest.raises(ValueError, match="Inference.steps must be an integer >= 0"):
        npc.Inference(steps=-1)
    with pytest.raises(ValueError, match="Inference.rate must be a finite number >= 0"):
        npc.Inference(rate=float("nan"))
    with pytest.raises(ValueError, match="Inference.init must be one of forward, zero, given"):
        npc.Inference(init="random")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        npc.Simulator(npc.mlp([2, 2]), backend="cuda")


def test_compile_is_a_torch_option() -> None:
    net = npc.mlp([3, 2])
    with pytest.raises(ValueError, match="compile= applies to the torch backend"):
        npc.Simulator(net, backend="numba", compile=True)
    with pytest.raises(ValueError, match="compile must be False, True or a torch.compile mode"):
        npc.Simulator(net, backend="torch", compile=3)


def test_compile_on_a_torch_without_the_guard_filter_says_which_torch_it_needs(monkeypatch):
    """torch < 2.10 has no torch.compiler.keep_portable_guards_unsafe (the compiled chunks'
    guard filter): the simulator refuses compile= there with one clear error, not an
    AttributeError in the first batch."""
    import torch

    monkeypatch.delattr(torch.compiler, "keep_portable_guards_unsafe")
    with pytest.raises(ValueError, match=r"compile=True needs torch >= 2\.10; this is torch"):
        npc.Simulator(npc.mlp([3, 2]), backend="torch", compile=True)
    npc.Simulator(npc.mlp([3, 2]), backend="torch")  # eager runs need no compiler features
