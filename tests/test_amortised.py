"""Amortised warm starts and the like-for-like VAE (issue 12, items 3, 4, 6 and 10).

Oracles: an independent numpy forward pass of the encoder; the forward-KL objective recomputed
with ``torch.distributions`` over the chain's recorded samples, and its closed-form gradient;
the exact ELBO and ``log p(x)`` of a linear-Gaussian model, with tolerances from the closed-form
variance of the Monte-Carlo estimate; numba against torch to 1e-10; bit-identical resume; the
refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import BACKEND_PARAMS

import neuropc as npc
from neuropc.analysis.likelihood import log_constant
from neuropc.dynamics.amortised import AmortisedEncoder
from neuropc.reference.vae import VAE


def _linear_gaussian(pi_x: float = 2.0, samples: int = 1, objective: str = "jeffreys"):
    """z ~ N(0, I_3) -> x ~ N(W z + b, I_5 / pi_x), x clamped; a linear encoder q(z | x)."""
    net = npc.Network()
    net.population("z", 3, bias=True, trainable_bias=False)
    net.population("x", 5, role="input", bias=True, precision=pi_x)
    net.connect("z", "x")
    net.encoder("x", "z", hidden=(), objective=objective, reverse_samples=samples)
    return net


def _exact(sim_params: dict, x: np.ndarray, mu: np.ndarray, logvar: np.ndarray, pi_x: float):
    """Per data point: log p(x), the ELBO of q = N(mu, diag e^logvar), and the variance of one
    log importance weight log w(xi) (module docstring of neuropc.analysis.likelihood)."""
    W, b = sim_params["z->x"], sim_params["x:bias"]
    d = W.shape[1]
    H = np.eye(d) + pi_x * W.T @ W
    cov_x = W @ W.T + np.eye(W.shape[0]) / pi_x
    _, logdet_cx = np.linalg.slogdet(cov_x)
    _, logdet_h = np.linalg.slogdet(H)
    out = []
    for xb, m_q, lv in zip(x, mu, logvar):
        r = xb - b
        log_px = -0.5 * (r @ np.linalg.solve(cov_x, r) + logdet_cx + len(r) * math.log(2 * math.pi))
        m = np.linalg.solve(H, pi_x * W.T @ r)  # posterior mean
        s2 = np.exp(lv)
        delta = m_q - m
        kl = 0.5 * (np.sum(np.diag(H) * s2) + delta @ H @ delta - d - logdet_h - np.sum(lv))
        sq = np.sqrt(s2)
        A = np.eye(d) - sq[:, None] * H * sq[None, :]
        var = np.sum((sq * (H @ delta)) ** 2) + 0.5 * np.trace(A @ A)
        out.append((log_px, log_px - kl, var))
    return np.array(out)


def _q(rng, b: int, d: int = 3):
    return rng.normal(size=(b, d)) * 0.5, rng.normal(size=(b, d)) * 0.3 - 1.0


def test_reverse_kl_is_minus_elbo_on_a_linear_gaussian_model() -> None:
    """L_r + C = -ELBO = KL(q || p(z|x)) - log p(x): exact closed form, within 5 standard errors
    of the K-sample estimate (its variance is closed-form too)."""
    k, pi_x = 4000, 2.0
    net = _linear_gaussian(pi_x, samples=k)
    sim = npc.Simulator(net, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5))
    mu, lv = _q(rng, 4)
    enc = sim.encoder
    theta = sim.parameters()
    got = float(enc.reverse_kl(torch.tensor(mu), torch.tensor(lv), {"x": x}, ["x"], theta, 5))
    ex = _exact(theta, x, mu, lv, pi_x)
    want = -np.mean(ex[:, 1]) - log_constant(net)
    se = math.sqrt(np.sum(ex[:, 2]) / (k * len(x) ** 2))
    assert abs(got - want) < 5 * se + 1e-12
    assert se < 0.01 * abs(want)  # the test can tell a wrong constant or sign apart


def test_vae_elbo_equals_its_closed_form() -> None:
    """VAE.elbo with k samples against the exact ELBO of the linear-Gaussian model, and the
    importance-sampled log p(x) (IWAE, k large) approaching the exact log p(x)."""
    pi_x, k = 2.0, 4000
    sim = npc.Simulator(_linear_gaussian(pi_x), dtype="float64", seed=2)
    vae = VAE.from_simulator(sim)
    x = np.random.default_rng(1).normal(size=(3, 5))
    mu, lv = (t.detach().numpy() for t in vae.encoder.encode(x))
    ex = _exact(vae.parameters(), x, mu, lv, pi_x)
    got = vae.elbo({"x": x}, k=k, seed=3)
    se = np.sqrt(ex[:, 2] / k)
    assert np.all(np.abs(got - ex[:, 1]) < 5 * se)
    iw = npc.analysis.generative.iwae(vae.log_weights({"x": x}, k=k, seed=4))
    assert np.all(iw <= ex[:, 0] + 5 * se)  # a lower bound (up to noise) ...
    assert np.all(iw > ex[:, 1] - 5 * se)  # ... at least as tight as the ELBO


def test_forward_kl_matches_direct_log_q_and_its_closed_form_gradient() -> None:
    rng = np.random.default_rng(3)
    b, d, s = 4, 3, 7
    mu = torch.tensor(rng.normal(size=(b, d)), requires_grad=True)
    lv = torch.tensor(rng.normal(size=(b, d)) * 0.3, requires_grad=True)
    z = rng.normal(size=(s, b, d))
    m1, m2 = z.mean(0), (z * z).mean(0)
    loss = AmortisedEncoder.forward_kl(mu, lv, torch.tensor(m1), torch.tensor(m2))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    direct = -q.log_prob(torch.tensor(z)).sum(-1).mean()
    assert abs(float(loss.detach()) - float(direct.detach())) < 1e-12
    gm, gl = torch.autograd.grad(loss, (mu, lv))
    mu_, s2 = mu.detach().numpy(), np.exp(lv.detach().numpy())
    assert np.allclose(gm.numpy(), (mu_ - m1) / s2 / b, atol=1e-12, rtol=0)
    want = 0.5 * (1 - (m2 - 2 * m1 * mu_ + mu_**2) / s2) / b
    assert np.allclose(gl.numpy(), want, atol=1e-12, rtol=0)


def _numpy_encoder(p: dict, x: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    h = x
    for i in range(hidden):
        h = np.tanh(h @ p[f"encoder:{i}.W"].T + p[f"encoder:{i}.b"])
    return h @ p["encoder:mean.W"].T + p["encoder:mean.b"], h @ p["encoder:logvar.W"].T + p[
        "encoder:logvar.b"
    ]


def _deep(objective: str = "jeffreys") -> npc.Network:
    """z (3) -> h (4, tanh) -> x (6, Bernoulli data); the encoder covers both latents."""
    net = npc.Network()
    net.population("z", 3, activation="tanh", bias=True, trainable_bias=False)
    net.population("h", 4, activation="tanh")
    net.population("x", 6, role="input", distribution=npc.Bernoulli(), bias=True)
    net.connect("z", "h")
    net.connect("h", "x")
    net.encoder("x", ["z", "h"], hidden=(5,), objective=objective)
    return net


def _binary(n: int = 8, seed: int = 0) -> dict:
    return {"x": (np.random.default_rng(seed).random((n, 6)) < 0.4).astype(float)}


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_warm_start_is_the_encoders_mean_or_a_draw_of_q(be) -> None:
    sim = npc.Simulator(_deep(), **be, dtype="float64", seed=0)
    data = _binary(3000)
    mu, lv = _numpy_encoder(sim.parameters(), data["x"], 1)
    st = sim.infer(data, inference=npc.Inference(steps=0, init="amortised", init_sample=False))
    assert np.allclose(np.hstack([st.values["z"], st.values["h"]]), mu, atol=1e-12, rtol=0)
    st = sim.infer(data, inference=npc.Inference(steps=0, init="amortised"))
    r = (np.hstack([st.values["z"], st.values["h"]]) - mu) / np.exp(0.5 * lv)
    se = 1 / math.sqrt(len(r))
    assert np.all(np.abs(r.mean(0)) < 5 * se)
    assert np.all(np.abs(r.var(0) - 1) < 5 * math.sqrt(2) * se)


@pytest.mark.parametrize("be", BACKEND_PARAMS)
@pytest.mark.parametrize("collect", ["mean", 3, "last"])
def test_forward_kl_is_fitted_to_the_recorded_chain(be, collect) -> None:
    """The encoder's forward-KL loss equals -mean log q over the chain's states in S, recorded
    step by step (torch.distributions on the encoder's pre-batch output)."""
    sim = npc.Simulator(_deep("forward_kl"), **be, dtype="float64", seed=0)
    sim.record(None, [npc.Probe(p, "value", mode="steps", dtype="float64") for p in ("z", "h")],
               preset="none")  # fmt: skip
    burn = 0 if collect == "last" else 2
    inf = npc.Inference(steps=8, rate=0.05, temperature=1.0, burn_in=burn, collect=collect,
                        init="amortised")  # fmt: skip
    data = _binary()
    mu, lv = _numpy_encoder(sim.parameters(), data["x"], 1)
    sim.learn(data, inference=inf, optimizer=npc.SGD(lr=0.0))
    r = sim.recorder.open()
    traj = np.concatenate([r["z:value"].values, r["h:value"].values], axis=2)  # (B, T+1, 7)
    z = traj[:, inf.collected()]
    q = torch.distributions.Normal(torch.tensor(mu), torch.exp(0.5 * torch.tensor(lv)))
    want = -q.log_prob(torch.tensor(z).transpose(0, 1)).sum(-1).mean()
    assert abs(sim.encoder.losses["forward_kl"] - float(want)) < 1e-10


def _train(be, steps: int = 3, temperature: float = 0.0, collect="last", seed: int = 0):
    sim = npc.Simulator(_deep(), **be, dtype="float64", seed=seed, optimizer=npc.Adam(lr=0.01))
    inf = npc.Inference(steps=6, rate=0.1, temperature=temperature, init="amortised",
                        collect=collect, burn_in=2 if collect != "last" else 0)  # fmt: skip
    for i in range(steps):
        sim.learn(_binary(seed=i), inference=inf)
    return sim


def test_numba_and_torch_learn_the_same_encoder_and_decoder() -> None:
    """Deterministic chains (temperature 0; the warm start's draw and the reverse-KL draws are
    the host's): every parameter agrees to 1e-10 after 3 batches, encoder included."""
    a = _train({"backend": "numba"}).parameters()
    b = _train({"backend": "torch", "device": "cpu"}).parameters()
    assert a.keys() == b.keys() and any(k.startswith("encoder:") for k in a)
    for k in a:
        assert np.max(np.abs(a[k] - b[k])) < 1e-10, k


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_same_seed_is_bit_identical_and_resume_is_exact(be, tmp_path) -> None:
    a = _train(be, 4, temperature=1.0, collect="mean").parameters()
    assert all(np.array_equal(a[k], v) for k, v in _train(be, 4, 1.0, "mean").parameters().items())
    half = _train(be, 2, temperature=1.0, collect="mean")
    half.save(tmp_path / "c.h5")
    c = npc.load(tmp_path / "c.h5")
    inf = npc.Inference(steps=6, rate=0.1, temperature=1.0, init="amortised", collect="mean",
                        burn_in=2)  # fmt: skip
    for i in (2, 3):
        c.learn(_binary(seed=i), inference=inf)
    for k, v in c.parameters().items():
        assert np.array_equal(v, a[k]), k


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_a_diverging_encoder_step_leaves_every_parameter_as_it_was(be) -> None:
    sim = npc.Simulator(_deep("forward_kl"), **be, dtype="float64", seed=0)
    sim.load_parameters({"encoder:logvar.b": np.full(7, -800.0)})  # 1/s^2 overflows
    before = sim.parameters()
    inf = npc.Inference(steps=4, rate=0.1, init="amortised", init_sample=False)
    with pytest.raises(npc.DivergenceError, match="encoder:"):
        sim.learn(_binary(), inference=inf)
    for k, v in sim.parameters().items():
        assert np.array_equal(v, before[k]), k


def test_encoder_parameters_are_recorded_like_weights(tmp_path) -> None:
    sim = npc.Simulator(_deep(), dtype="float64", seed=0)
    sim.record(tmp_path / "r.h5", [npc.Probe("encoder:mean.W", "weights"),
                                   npc.Probe("encoder:mean.W", "updates")], preset="none")  # fmt: skip
    w0 = sim.parameters()["encoder:mean.W"]
    sim.learn(_binary(), inference=npc.Inference(steps=3, init="amortised"))
    w1 = sim.parameters()["encoder:mean.W"]
    sim.recorder.close()
    r = npc.open(tmp_path / "r.h5")
    row = np.asarray(r["encoder:mean.W:weights"].values)[-1]
    assert np.allclose(row, [np.linalg.norm(w1), w1.mean(), w1.std(), w1.min(), w1.max()])
    upd = np.asarray(r["encoder:mean.W:updates"].values)[-1]
    assert np.isclose(upd[0], np.linalg.norm(w1 - w0)) and np.isnan(upd[1])
    r.close()
    pytest.importorskip("pynwb")  # exported like any per-batch recording
    import pynwb

    from neuropc.record import export

    path = export.to_nwb(tmp_path / "r.h5", tmp_path / "r.nwb")
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        t = io.read().analysis[export.sanitize("encoder:mean.W:weights")].to_dataframe()
        np.testing.assert_allclose(t.to_numpy()[-1, -5:], row)


def test_encoder_declaration_round_trips_and_refuses_bad_settings() -> None:
    net = _deep()
    assert npc.Network.from_spec(net.spec()).spec() == net.spec()
    cases = [
        (dict(source="x", targets=["nope"]), "unknown population 'nope'"),
        (dict(source="x", targets=["x"]), "both a source and a target"),
        (dict(source="x", targets=["z"], objective="kl"), "objective must be one of"),
        (dict(source="x", targets=["z"], hidden=(0,)), "hidden"),
        (dict(source="x", targets=["z"], activation="swish"), "swish"),
    ]
    for kw, msg in cases:
        fresh = npc.Network.from_spec({k: v for k, v in net.spec().items() if k != "encoder"})
        with pytest.raises((ValueError, TypeError), match=msg):
            fresh.encoder(**kw)
    with pytest.raises(ValueError, match="already has an encoder"):
        net.encoder("x", ["z"])
    bern = npc.Network()
    bern.population("z", 2, distribution=npc.Bernoulli(), bias=True)
    bern.population("x", 3, role="input", bias=True)
    bern.connect("z", "x")
    with pytest.raises(ValueError, match="'z' has a Bernoulli distribution"):
        bern.encoder("x", "z")
    noprior = npc.Network()
    noprior.population("z", 2, bias=False)
    noprior.population("x", 3, role="input", bias=True)
    noprior.connect("z", "x")
    with pytest.raises(ValueError, match="'z' has no prior"):
        noprior.encoder("x", "z")


def test_amortised_runs_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="init_sample .* needs init='amortised'"):
        npc.Inference(init_sample=True)
    plain = npc.Simulator(npc.mlp([6, 4, 2]), dtype="float64")
    data = {"input": np.zeros((2, 6)), "output": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="needs an encoder"):
        plain.learn(data, inference=npc.Inference(init="amortised"))
    net = npc.mlp([6, 4, 2])
    net.encoder("input", ["output"])
    sim = npc.Simulator(net, dtype="float64")
    with pytest.raises(ValueError, match="target 'output' is clamped in phase 'train'"):
        sim.learn(data, inference=npc.Inference(init="amortised"))
    partial = npc.Network.from_spec({k: v for k, v in _deep().spec().items() if k != "encoder"})
    partial.encoder("x", ["z"], objective="jeffreys")
    sim = npc.Simulator(partial, dtype="float64")
    with pytest.raises(ValueError, match="'h' is free in phase 'train' but not a target"):
        sim.learn(_binary(), inference=npc.Inference(init="amortised"))
    sim.infer(_binary(), inference=npc.Inference(init="amortised"))  # a warm start alone is fine
    net2 = _deep()
    net2.clamp("h", "train")
    sim2 = npc.Simulator(net2, dtype="float64")
    with pytest.raises(ValueError, match="'h' is clamped"):
        sim2.learn({**_binary(), "h": np.zeros((8, 4))}, inference=npc.Inference(init="amortised"))
    sim3 = npc.Simulator(_deep(), dtype="float64", optimizer=npc.NaturalGradient())
    with pytest.raises(ValueError, match="SGD or npc.Adam"):
        sim3.learn(_binary(), inference=npc.Inference(init="amortised"))
    with pytest.raises(ValueError, match="burn_in must be < steps"):
        npc.Inference(steps=5, burn_in=5, collect="mean", temperature=1.0)
    with pytest.raises(ValueError, match="needs Langevin noise"):
        npc.Inference(collect="mean")
