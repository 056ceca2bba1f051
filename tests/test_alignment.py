"""The local-vs-global gradient comparison API."""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc
from neuropc.analysis.alignment import compare, gradient_alignment


def test_compare_closed_forms() -> None:
    b = np.array([3.0, 4.0])
    assert compare(b, b) == pytest.approx((1.0, 0.0, 1.0))
    assert compare(-b, b) == pytest.approx((-1.0, 2.0, 1.0))
    assert compare(2 * b, b) == pytest.approx((1.0, 1.0, 2.0))
    cos, rel, ratio = compare(np.array([4.0, -3.0]), b)  # orthogonal, same norm
    assert (cos, rel, ratio) == pytest.approx((0.0, np.sqrt(2.0), 1.0))
    assert all(np.isnan(compare(b, np.zeros(2))))


def test_alignment_over_steps(backend: dict) -> None:
    net = npc.mlp([6, 5, 4, 3], activation="tanh")
    sim = npc.Simulator(net, **backend, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    data = {"input": rng.normal(size=(8, 6)), "output": rng.normal(size=(8, 3))}
    # FPA with rate 1: exact after 2 steps (the longest path from h1 to the output)
    al = gradient_alignment(sim, data, inference=npc.Inference(mode="fpa", steps=3, rate=1.0))
    assert list(al.steps) == [0, 1, 2, 3] and al.cosine.shape == (4, len(al.names))
    i = al.names.index("input->h1")
    assert al.cosine[0, i] == 0.0 and al.norm_ratio[0, i] == 0.0  # no error has arrived yet
    np.testing.assert_allclose(al.cosine[2:], 1.0, atol=1e-12)
    np.testing.assert_allclose(al.rel_error[2:], 0.0, atol=1e-10)
    assert al.max_abs_error() < 1e-12
    # the output layer is exact from t = 0 in every mode
    j = al.names.index("h2->output")
    assert al.rel_error[0, j] < 1e-12
    # strict PC: aligned but not equal
    st = gradient_alignment(sim, data, inference=npc.Inference(steps=20, rate=0.1), steps=[20])
    fin = st.final()
    assert 0.5 < fin["h1->h2"]["cosine"] < 1.0 and fin["h1->h2"]["rel_error"] > 1e-3
    assert set(st.at("h1->h2")) == {"cosine", "rel_error", "norm_ratio"}
