"""Oracle: torch.optim applied to the same gradient sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuropc as npc
from neuropc.backends import _numba_kernels as K


def _torch_opt(opt, p):
    if isinstance(opt, npc.SGD):
        return torch.optim.SGD([p], lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                               nesterov=opt.nesterov, dampening=opt.dampening)  # fmt: skip
    cls = torch.optim.AdamW if opt.decoupled else torch.optim.Adam
    return cls([p], lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)


@pytest.mark.parametrize(
    "opt",
    [
        npc.SGD(lr=0.1),
        npc.SGD(lr=0.05, momentum=0.9),
        npc.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
        npc.SGD(lr=0.05, momentum=0.7, dampening=0.3),
        npc.Adam(lr=1e-2),
        npc.Adam(lr=3e-3, betas=(0.8, 0.95), weight_decay=1e-2),
        npc.AdamW(lr=3e-3, weight_decay=0.1),
    ],
)
def test_optimizer_step_matches_torch(opt) -> None:
    rng = np.random.default_rng(0)
    n = 37
    p0 = rng.standard_normal(n)
    P, S1, S2 = p0.copy(), np.zeros(n), np.zeros(n)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = _torch_opt(opt, tp)
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
