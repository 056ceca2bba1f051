"""Connection operators in networks (issue 10, item 3): the initialisers' documented
distributions and the backends' declarations. Every kind's vjps against autograd:
tests/test_operator_kinds.py."""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc
from neuropc import backends
from neuropc.model import operators


def test_dense_initialisers_have_the_documented_scale() -> None:
    rng = np.random.default_rng(1)
    n_pre, n_post, g = 400, 300, 1.5
    want_sd = {
        "xavier_uniform": g * np.sqrt(6 / (n_pre + n_post)) / np.sqrt(3),
        "xavier_normal": g * np.sqrt(2 / (n_pre + n_post)),
        "kaiming_uniform": g * np.sqrt(3 / n_pre) / np.sqrt(3),
        "normal": g / np.sqrt(n_pre),
    }
    for init, sd in want_sd.items():
        w = operators.Dense().init(rng, [(n_pre,)], (n_post,), init, g)["W"]
        assert w.shape == (n_post, n_pre)
        assert w.std() == pytest.approx(sd, rel=0.01), init  # 120k draws: sd error ~0.2%
    assert np.all(operators.Dense().init(rng, [(2,)], (3,), "zeros", g)["W"] == 0)
    assert np.all(operators.Dense().init(rng, [(2,)], (3,), "ones", g)["W"] == g)


def test_connection_kinds_are_validated_and_declared(monkeypatch) -> None:
    net = npc.Network()
    net.population("a", 3, role="input")
    net.population("b", 2)
    with pytest.raises(
        ValueError, match="connection a->b: unknown connection kind 'conv'; valid: dense, "
    ):
        net.connect("a", "b", kind="conv")
    assert net.connections == []

    class Twin(operators.Dense):  # a kind that no backend declares
        name = "twin"

    monkeypatch.setitem(operators.OPERATORS, "twin", Twin)
    net.connect("a", "b", kind="twin")
    assert npc.Network.from_spec(net.spec()).connections[0].kind == "twin"
    for be in backends.BACKENDS:
        with pytest.raises(ValueError, match=f"connection 'a->b' is of kind 'twin', which the "
                                             f"{be} backend does not run; backends that do: \\(none\\)"):  # fmt: skip
            npc.Simulator(net, backend=be)
