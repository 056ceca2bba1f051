"""The torch backend's double-buffered parameter state (neuropc.backends.torch_state) against two
oracles: torch.optim applied to the same gradients, and the single-buffer (in place, CUDA) mode,
which must give the very same bits; and what undo restores, compared with copies taken before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import OPTIMIZER_SETTINGS, torch_optimizer

import neuropc as npc
from neuropc.backends.torch_state import ParameterState

N = 37


def _state(double: bool, p0: np.ndarray) -> ParameterState:
    st = ParameterState(N, lambda flat: ([flat[:10].view(2, 5)], [flat[10:13]]), double,
                        dtype=torch.float64)  # fmt: skip
    st.current[0].copy_(torch.tensor(p0))
    return st


@pytest.mark.parametrize("opt", OPTIMIZER_SETTINGS)
def test_steps_match_torch_optim_and_the_in_place_mode_bit_for_bit(opt) -> None:
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(N)
    double, single = _state(True, p0), _state(False, p0)
    tp = torch.tensor(p0.copy(), requires_grad=True)
    topt = torch_optimizer(opt, tp)
    for t in range(1, 8):
        g = torch.tensor(rng.standard_normal(N))
        double.step(opt, t, g, None)
        single.step(opt, t, g, None)
        tp.grad = g.clone()
        topt.step()
    assert torch.equal(double.current, single.current)
    np.testing.assert_allclose(double.current[0].numpy(), tp.detach().numpy(), rtol=0, atol=1e-13)
    # the views follow the current buffer
    assert torch.equal(double.W[0].flatten(), double.current[0, :10])
    assert torch.equal(double.bias[0], double.current[0, 10:13])


@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("opt", [OPTIMIZER_SETTINGS[1], OPTIMIZER_SETTINGS[4]])
def test_a_frozen_entry_does_not_move(opt, double: bool) -> None:
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(N)
    st = _state(double, p0)
    tr = torch.ones(N, dtype=torch.float64)
    tr[5] = 0.0
    for t in range(1, 4):
        st.step(opt, t, torch.tensor(rng.standard_normal(N)), tr)
    assert st.current[0, 5].item() == p0[5] and st.current[0, 4].item() != p0[4]


@pytest.mark.parametrize("double", [True, False])
def test_undo_takes_back_the_last_step_or_every_step_since_hold(double: bool) -> None:
    rng = np.random.default_rng(2)
    st = _state(double, rng.standard_normal(N))
    opt = npc.Adam(lr=1e-2)
    st.step(opt, 1, torch.tensor(rng.standard_normal(N)), None)
    before = st.current.clone()
    st.step(opt, 2, torch.tensor(rng.standard_normal(N)), None)
    assert not torch.equal(st.current, before)
    st.undo()
    assert torch.equal(st.current, before)
    assert torch.equal(st.W[0].flatten(), before[0, :10])  # the views are the restored ones
    st.hold()  # several steps (optimiser steps during inference), one undo for all
    for t in range(2, 5):
        st.step(opt, t, torch.tensor(rng.standard_normal(N)), None)
    st.undo()
    assert torch.equal(st.current, before)
    st.release()
    st.step(opt, 2, torch.tensor(rng.standard_normal(N)), None)
    after = st.current.clone()
    st.step(opt, 3, torch.tensor(rng.standard_normal(N)), None)
    st.undo()
    assert torch.equal(st.current, after)


def test_an_sgd_step_carries_the_state_it_does_not_use() -> None:
    """Plain SGD changes only the parameters: the moments another optimiser left stay, also in
    the buffer the step made current."""
    rng = np.random.default_rng(3)
    st = _state(True, rng.standard_normal(N))
    st.step(npc.Adam(lr=1e-2), 1, torch.tensor(rng.standard_normal(N)), None)
    moments = st.current[1:].clone()
    st.step(npc.SGD(lr=0.1), 1, torch.tensor(rng.standard_normal(N)), None)
    assert torch.equal(st.current[1:], moments)


def test_first_nonfinite_names_the_first_bad_entry() -> None:
    st = _state(True, np.zeros(N))
    assert st.first_nonfinite() == -1
    st.current[2, 30] = float("inf")
    st.current[1, 20] = float("nan")
    assert st.first_nonfinite() == 20
