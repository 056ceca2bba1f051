"""The backprop twin's K-FAC (neuropc.reference.natural_gradient) and its exact-Fisher oracle.

Oracles: the exact Fisher natural gradient of a one-layer linear Gaussian model (where K-FAC is
exact); the Gauss-Newton property of the exact natural gradient on a quadratic loss (one full
step lands on the least-squares solution); textbook K-FAC built here from autograd per-sample
gradients of ``backprop.loss``; the documented update written out in numpy from
``backprop.gradients`` and ``backprop.feedforward`` on random DAGs; closed forms of the EMA and
refresh timing; training, frozen parameters and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_backprop_reference import random_dag, random_data

import neuropc as npc
from neuropc.model import operators
from neuropc.model.distributions import Gaussian, Precision
from neuropc.reference import backprop as bp
from neuropc.reference.natural_gradient import KFAC, exact_natural_gradient

LR, DIN, DOUT = 0.2, 0.01, 0.1


def _tensors(d: dict) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(np.asarray(v, np.float64)) for k, v in d.items()}


def _numpy(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in d.items()}


def _kfac_step(net, params: dict, data: dict, spec: npc.NaturalGradient) -> dict:
    """One step of a fresh KFAC from ``params`` (numpy); the new parameters (numpy)."""
    p = _tensors(params)
    KFAC(net, spec).step(p, data)
    return _numpy(p)


def _spd(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return a @ a.T / n + 0.5 * np.eye(n)


def _pi_matrix(net, params: dict, name: str) -> np.ndarray:
    pi = np.asarray(params.get(f"{name}:precision", net[name].precision), np.float64)
    return pi if pi.ndim == 2 else np.diag(np.broadcast_to(pi, (net[name].size,)))


# ---- the exact Fisher -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fixed", "scalar", "diag", "full"])
def test_one_layer_linear_gaussian_kfac_is_exact(kind: str) -> None:
    """input -> output, linear, no bias: mu = W x, so J_b = I (x) x_b^T (row-major vec W) and the
    Fisher is F = mean_b J_b^T Pi J_b = Pi (x) <x x^T> exactly: one Kronecker product, whose
    inverse is Pi^-1 (x) <x x^T>^-1. K-FAC with c_out='precision' (C_out = Pi) on the first batch
    (C_in = <x x^T>) and vanishing damping is therefore -lr F^-1 g, with F from autograd."""
    rng = np.random.default_rng(5)
    net = npc.Network()
    net.population("input", 4, role="input")
    if kind == "fixed":
        net.population("output", 3, role="target", bias=False, precision=[0.5, 2.0, 1.3])
    else:
        net.population("output", 3, role="target", bias=False,
                       distribution=Gaussian(precision=Precision(kind)))  # fmt: skip
    net.connect("input", "output")
    params = {"input->output": rng.normal(size=(3, 4))}
    if kind != "fixed":
        params["output:precision"] = {"scalar": np.array(1.7), "diag": rng.uniform(0.5, 2, 3),
                                      "full": _spd(3, rng)}[kind]  # fmt: skip
    data = {"input": rng.normal(size=(9, 4)), "output": rng.normal(size=(9, 3))}
    tiny = 1e-13
    spec = npc.NaturalGradient(lr=LR, damping_in=tiny, damping_out=tiny, refresh=1)
    new = _kfac_step(net, params, data, spec)
    nat = exact_natural_gradient(net, params, data)
    assert list(nat) == ["input->output"]
    step = new["input->output"] - params["input->output"]
    np.testing.assert_allclose(step, -LR * nat["input->output"], rtol=1e-10, atol=1e-13)
    # and the closed form of that Kronecker inverse
    g = bp.gradients(net, params, data)["input->output"]
    x = data["input"]
    want = np.linalg.solve(_pi_matrix(net, params, "output"), g) @ np.linalg.inv(x.T @ x / 9)
    np.testing.assert_allclose(nat["input->output"], want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("full", [False, True])
def test_exact_natural_gradient_is_a_gauss_newton_step(full: bool) -> None:
    """With bias, mu = W x + b is linear in theta and the loss quadratic with Hessian F, so one
    full natural-gradient step (lr = 1, no damping) lands on the minimiser: least squares on
    [x, 1], which does not depend on Pi (identical regressors for every output, so the
    Pi-weighted solution is the ordinary one). K-FAC is not exact here (the W-b cross terms)."""
    rng = np.random.default_rng(2)
    net = npc.Network()
    net.population("input", 3, role="input")
    prec = Precision("full") if full else Precision("diag")
    net.population("output", 2, role="target", distribution=Gaussian(precision=prec))
    net.connect("input", "output")
    params = {"input->output": rng.normal(size=(2, 3)), "output:bias": rng.normal(size=2),
              "output:precision": _spd(2, rng) if full else rng.uniform(0.5, 2, 2)}  # fmt: skip
    x, y = rng.normal(size=(10, 3)) + 0.5, rng.normal(size=(10, 2))
    nat = exact_natural_gradient(net, params, {"input": x, "output": y})
    coef = np.linalg.lstsq(np.hstack([x, np.ones((10, 1))]), y, rcond=None)[0]  # (4, 2)
    np.testing.assert_allclose(params["input->output"] - nat["input->output"], coef[:3].T,
                               rtol=0, atol=1e-10)  # fmt: skip
    np.testing.assert_allclose(params["output:bias"] - nat["output:bias"], coef[3],
                               rtol=0, atol=1e-10)  # fmt: skip
    # damping: (F + d I)^-1 g is smaller and still a descent direction
    g = bp.gradients(net, params, {"input": x, "output": y})
    damped = exact_natural_gradient(net, params, {"input": x, "output": y}, damping=10.0)
    flat = lambda d: np.concatenate([d[k].ravel() for k in ("input->output", "output:bias")])
    assert np.linalg.norm(flat(damped)) < np.linalg.norm(flat(nat))
    assert flat(damped) @ flat(g) > 0


# ---- textbook K-FAC (empirical output factor) ----------------------------------------------------
def _classifier(output: str) -> npc.Network:
    dist = npc.Categorical() if output == "categorical" else None
    net = npc.mlp([4, 5, 3, 3], activation="tanh", output_distribution=dist)
    if output == "gaussian":
        net.update("output", precision=[0.5, 2.0, 1.3])
    net.update("h2", activation="sigmoid")
    net.connect("input", "output")  # a skip: C_in of the input is shared by two connections
    return net


@pytest.mark.parametrize("output", ["gaussian", "categorical"])
def test_empirical_kfac_equals_textbook_kfac(output: str) -> None:
    """Martens & Grosse (2015) with the data's targets: per-sample gradients ``d loss_b / d W =
    g_b a_b^T`` (g_b = d loss_b / d mu_b, a_b = f(x_pre)), A = <a a^T>, S = <g g^T>, and the step
    ``-lr (S + d_out I)^-1 G (A + d_in I)^-1``. Built here from autograd of ``backprop.loss`` on
    one sample at a time (g_b is the per-sample gradient of the post's bias)."""
    rng = np.random.default_rng(4)
    net = _classifier(output)
    params = npc.Simulator(net, dtype="float64", seed=2).parameters()
    b = 8
    x = rng.normal(size=(b, 4))
    y = (
        npc.one_hot(rng.integers(0, 3, b), 3)
        if output == "categorical"
        else rng.normal(size=(b, 3))
    )
    data = {"input": x, "output": y}
    per_sample = [bp.gradients(net, params, {"input": x[i : i + 1], "output": y[i : i + 1]})
                  for i in range(b)]  # fmt: skip
    with torch.no_grad():
        values = bp.feedforward(net, _tensors(params), _tensors({"input": x}))
    acts = {q: net[q].activation.torch(v).numpy() for q, v in values.items()}
    g_batch = bp.gradients(net, params, data)
    want = {}
    for k, w in params.items():
        post, pre = (k.split(":")[0], None) if k.endswith(":bias") else k.split("->")[::-1]
        gs = np.stack([ps[f"{post}:bias"] for ps in per_sample])  # (B, n_post)
        s_inv = np.linalg.inv(gs.T @ gs / b + DOUT * np.eye(len(gs[0])))
        if pre is None:
            want[k] = w - LR * s_inv @ g_batch[k] / (1 + DIN)
            continue
        a = acts[pre]
        for i in range(b):  # the factorisation K-FAC rests on, per sample
            np.testing.assert_allclose(per_sample[i][k], np.outer(gs[i], a[i]), atol=1e-13)
        a_inv = np.linalg.inv(a.T @ a / b + DIN * np.eye(a.shape[1]))
        want[k] = w - LR * s_inv @ g_batch[k] @ a_inv
    spec = npc.NaturalGradient(lr=LR, damping_in=DIN, damping_out=DOUT, c_out="empirical")
    got = _kfac_step(net, params, data, spec)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-12, err_msg=k)


# ---- the documented update on random DAGs --------------------------------------------------------
@pytest.mark.parametrize("c_out", ["precision", "identity"])
@pytest.mark.parametrize("seed", range(5))
def test_documented_update_on_random_dags(seed: int, c_out: str) -> None:
    """Skip connections, fan-in, prior means on inputs and roots (biases of populations that
    receive nothing), several targets, per-unit output precisions, weight decay: one step is the
    module docstring's update written out from ``backprop.gradients`` and the feed-forward
    activations."""
    rng = np.random.default_rng(seed)
    net = random_dag(rng)
    params = npc.Simulator(net, dtype="float64", seed=seed).parameters()
    data = random_data(net, rng, batch=int(rng.integers(3, 9)))
    g = bp.gradients(net, params, data)
    with torch.no_grad():
        values = bp.feedforward(net, _tensors(params), _tensors(data))
    wd = 0.03

    def out_inv(p: str) -> np.ndarray:
        n = net[p].size
        c = _pi_matrix(net, params, p) if c_out == "precision" else np.eye(n)
        return np.linalg.inv(c + DOUT * np.eye(n))

    want = {}
    for k, w in params.items():
        if k.endswith(":bias"):
            want[k] = w - LR * (out_inv(k[:-5]) @ g[k] / (1 + DIN) + wd * w)
            continue
        pre, post = k.split("->")
        a = net[pre].activation.torch(values[pre]).numpy()
        a_inv = np.linalg.inv(a.T @ a / len(a) + DIN * np.eye(a.shape[1]))
        want[k] = w - LR * (out_inv(post) @ g[k] @ a_inv + wd * w)
    spec = npc.NaturalGradient(lr=LR, damping_in=DIN, damping_out=DOUT, c_out=c_out,
                               weight_decay=wd)  # fmt: skip
    got = _kfac_step(net, params, data, spec)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-12, err_msg=k)


# ---- EMA and refresh ----------------------------------------------------------------------------
def test_ema_and_refresh_timing() -> None:
    """refresh=2, decay=0.3, c_out='empirical', on input -> output (Gaussian, with bias), where
    the deltas are Pi (y - W x - b) and G = -<delta x^T>: batch 0 sets the factors and inverts
    them; batch 1 moves both factors by the EMA but steps with batch 0's inverses; batch 2
    inverts the moved factors."""
    rng = np.random.default_rng(8)
    net = npc.Network()
    net.population("input", 4, role="input")
    net.population("output", 3, role="target", precision=[0.5, 2.0, 1.3])
    net.connect("input", "output")
    pi = np.array([0.5, 2.0, 1.3])
    w, bias = rng.normal(size=(3, 4)), rng.normal(size=3)
    params = _tensors({"input->output": w, "output:bias": bias})
    spec = npc.NaturalGradient(lr=LR, damping_in=DIN, damping_out=DOUT, refresh=2, decay=0.3,
                               c_out="empirical")  # fmt: skip
    kfac = KFAC(net, spec)
    c_in = c_out = inv_in = inv_out = None
    for k in range(3):
        x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
        delta = (y - x @ w.T - bias) * pi
        m, s = x.T @ x / 6, delta.T @ delta / 6
        c_in = m if c_in is None else 0.7 * c_in + 0.3 * m
        c_out = s if c_out is None else 0.7 * c_out + 0.3 * s
        if k % 2 == 0:
            inv_in = np.linalg.inv(c_in + DIN * np.eye(4))
            inv_out = np.linalg.inv(c_out + DOUT * np.eye(3))
        w = w - LR * inv_out @ (-delta.T @ x / 6) @ inv_in
        bias = bias - LR * inv_out @ (-delta.mean(axis=0)) / (1 + DIN)
        kfac.step(params, {"input": x, "output": y})
        st = kfac.state()
        assert int(st["count"]) == k + 1
        np.testing.assert_allclose(st["in/input"], c_in, rtol=0, atol=1e-13)
        np.testing.assert_allclose(st["out/output"], c_out, rtol=0, atol=1e-12)
        np.testing.assert_allclose(st["inv_in/input"], inv_in, rtol=1e-12, atol=0)
        np.testing.assert_allclose(st["inv_out/output"], inv_out, rtol=1e-12, atol=0)
        np.testing.assert_allclose(params["input->output"].numpy(), w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(params["output:bias"].numpy(), bias, rtol=0, atol=1e-12)
        if k == 1:  # the stale inverse is not the moved factor's: the timing is visible
            assert not np.allclose(st["inv_in/input"], np.linalg.inv(c_in + DIN * np.eye(4)))


# ---- the twin trains ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backprop_model_trains_and_keeps_frozen_parameters(dtype: torch.dtype) -> None:
    net = npc.Network()
    net.population("input", 3, role="input")
    net.population("h1", 8, activation="tanh", trainable_bias=False, bias_init=0.1)
    net.population("output", 2, role="target", precision=[1.0, 2.0])
    net.connect("input", "h1")
    net.connect("h1", "output")
    net.connect("input", "output", trainable=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3))
    y = np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1], x[:, 1] * x[:, 2]], axis=1)
    spec = npc.NaturalGradient(lr=0.2, refresh=5)
    sim = npc.Simulator(net, dtype="float64", seed=3, optimizer=spec)
    twin = bp.BackpropModel.from_simulator(sim, dtype=dtype)
    assert isinstance(twin.kfac, KFAC) and twin.torch_optimizer is None
    p0 = twin.parameters()
    hist = twin.fit({"input": x, "output": y}, epochs=15, batch_size=16)
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert twin.kfac.count == 15 * 6
    p1 = twin.parameters()
    assert np.array_equal(p1["input->output"], p0["input->output"])
    assert np.array_equal(p1["h1:bias"], p0["h1:bias"])
    assert not np.array_equal(p1["input->h1"], p0["input->h1"])
    assert all(twin.params[k].dtype == dtype for k in twin.params)


# ---- refusals -----------------------------------------------------------------------------------
def test_bad_settings_are_refused() -> None:
    for bad in ({"damping_in": 0.0}, {"damping_out": -1.0}, {"decay": 0.0}, {"refresh": 0},
                {"c_out": "covariance"}):  # fmt: skip
        with pytest.raises(ValueError, match="NaturalGradient"):
            npc.NaturalGradient(**bad)
    net = npc.mlp([3, 2])
    with pytest.raises(TypeError, match="NaturalGradient"):
        KFAC(net, npc.Adam())
    with pytest.raises(ValueError, match="'output' has no learned precision"):
        KFAC(net, npc.NaturalGradient(require_learned=True))
    KFAC(net, npc.NaturalGradient(require_learned=True, c_out="identity"))  # not needed there
    net.update("output", distribution=Gaussian(precision=Precision("diag", learn="ema")))
    KFAC(net, npc.NaturalGradient(require_learned=True))
    with pytest.raises(ValueError, match="no torch optimiser"):
        bp.torch_optimizer(npc.NaturalGradient(), [])


def test_connection_without_kronecker_fisher_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class Odd(operators.Dense):
        name = "odd"
        kronecker = False

    monkeypatch.setitem(operators.OPERATORS, "odd", Odd)
    net = npc.Network()
    net.population("input", 3, role="input")
    net.population("output", 2, role="target")
    net.connect("input", "output", kind="odd")
    with pytest.raises(ValueError, match="no Kronecker form"):
        KFAC(net, npc.NaturalGradient())


def test_exact_natural_gradient_needs_gaussian_outputs() -> None:
    net = npc.mlp([3, 2], output_distribution=npc.Categorical())
    params = npc.Simulator(net, dtype="float64").parameters()
    data = {"input": np.zeros((2, 3)), "output": npc.one_hot(np.array([0, 1]), 2)}
    with pytest.raises(ValueError, match="only Gaussian outputs"):
        exact_natural_gradient(net, params, data)
