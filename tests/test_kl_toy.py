"""models/kl_toy.py (issue 13, item 3), on its quick run.

Oracles: the arms are the networks the docstring defines (distribution, energy, activation); a
KL arm's test cross-entropy beats ln 10, that of the uniform prediction, and its accuracy beats
the binomial chance threshold on the test labels; the F arm's energy of a free categorical is
linear in its value (the own term ``-log softmax(mu)`` does not depend on ``x``), so inference
drifts it without bound: checked on one step in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import load_model, run_model_json
from oracles import chance_threshold

import neuropc as npc


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    return run_model_json("kl_toy", tmp_path_factory.mktemp("kl_toy"))


def test_keys_and_the_kl_arms_learn(quick) -> None:
    for k in ("loss_F", "loss_KL", "acc_F", "acc_KL"):
        assert k in quick
    labels = npc.data.mnist("test")[1][: load_model("kl_toy").QUICK.n_test]
    for kind in ("softmax", "sigmoid"):
        assert quick[f"loss_KL_{kind}"] < math.log(10)
        assert quick[f"acc_KL_{kind}"] >= chance_threshold(labels)


def test_arms_are_the_documented_networks() -> None:
    mod = load_model("kl_toy")
    for kind, (dist, act) in mod.KINDS.items():
        for energy in ("F", "KL"):
            h = mod.build(kind, energy, 8)["hidden"]
            assert isinstance(h.distribution, dist) and h.distribution.energy == energy
            assert h.activation.name == (act if energy == "KL" else "linear")


def test_a_free_categorical_under_f_drifts_by_its_log_probabilities() -> None:
    """One step from x0 with the prediction fixed: x1 = x0 + rate log softmax(mu) exactly (the
    label, clamped, feeds nothing back when its weights are zero)."""
    mod = load_model("kl_toy")
    net = mod.build("softmax", "F", 4)
    sim = npc.Simulator(net, dtype="float64", seed=0)
    sim.set_weights("hidden->label", np.zeros((10, 4)))
    x = np.random.default_rng(0).random((3, 784))
    mu = x @ sim.get_weights("image->hidden").T + sim.get_bias("hidden")
    logq = mu - np.log(np.exp(mu).sum(1, keepdims=True))
    y = npc.one_hot(np.array([1, 2, 3]), dtype=np.float64)
    x0 = sim.infer({"image": x, "label": y}, phase="train",
                   inference=npc.Inference(steps=0))["hidden"]  # fmt: skip
    x1 = sim.infer({"image": x, "label": y}, phase="train",
                   inference=npc.Inference(steps=1, rate=0.1))["hidden"]  # fmt: skip
    np.testing.assert_allclose(x1 - x0, 0.1 * logq, rtol=0, atol=1e-12)
