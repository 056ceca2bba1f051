"""Oracle: torch.optim applied to the same gradient sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import OPTIMIZER_SETTINGS, torch_optimizer

import neuropc as npc
from neuropc.backends import _numba_kernels as K


@pytest.mark.parametrize("opt", OPTIMIZER_SETTINGS)
def test_optimizer_step_matches_torch(opt) -> None:
    rng = np.random.default_rng(0)
    n = 37
    p0 = rng.standard_normal(n)
    P, S1, S2 = p0.copy(), np.zeros(n), np.zeros(n)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = torch_optimizer(opt, tp)
    trainable = np.ones(n)
    trainable[5] = 0.0
    for t in range(1, 8):
        g = rng.standard_normal(n)
        bk = np.zeros((3, P.size), P.dtype)
        assert K.optimizer_step(opt.kind, P, g.copy(), S1, S2, opt.hyper(), t, trainable, bk) == -1
        tp.grad = torch.tensor(g)
        topt.step()
    ref = tp.detach().numpy()
    mask = trainable == 1
    np.testing.assert_allclose(P[mask], ref[mask], rtol=0, atol=1e-13)
    assert P[5] == p0[5]  # a frozen parameter does not move


def test_frozen_connection_does_not_learn() -> None:
    net = npc.Network()
    net.population("a", 3, role="input")
    net.population("b", 2, role="target", trainable_bias=False)
    net.connect("a", "b", trainable=False)
    sim = npc.Simulator(net, dtype="float64", optimizer=npc.SGD(lr=0.1))
    before = sim.parameters()
    sim.learn({"a": np.ones((2, 3)), "b": np.zeros((2, 2))})
    after = sim.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)
