"""models/pc_vae.py on its quick run: a VAE trained by PC (F_KL) against its backprop twin.

Oracles: the trivial reconstruction of every test image by the mean training image (its MSE and
BCE on the test images, computed here), which both arms must beat; the reconstruction metric
recomputed in numpy from the trained PC decoder and PC's own test inference (the deterministic
decoder ``sigmoid(W_hx tanh(W_zh z + b_h) + b_x)``); the twin's loss against the VAE objective
written out here (BCE + KL(N(m, e^s) || N(0, 1))); the in-process run reproduced by the script
(same seed: identical metrics, timings aside); the one-line user error with exit status 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MODELS, ROOT, load_model, quick_twice

import neuropc as npc

KEYS = ("recon_pc", "recon_bp", "recon_ratio", "within_5pct", "bce_pc", "bce_bp", "data",
        "epochs", "seconds", "pc_seconds", "bp_seconds")  # fmt: skip
TIMINGS = ("seconds", "pc_seconds", "bp_seconds")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, dict, npc.Simulator]:
    """``pc_vae --quick`` in-process (with its PC simulator) and as a script, both seed 0."""
    return quick_twice("pc_vae", tmp_path_factory.mktemp("pc_vae"))


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    cfg = load_model("pc_vae").QUICK
    x = npc.data.mnist("train")[0][: cfg.n_train].astype(np.float64)
    xt = npc.data.mnist("test")[0][: cfg.n_test].astype(np.float64)
    return x, xt


def test_keys_and_determinism(quick) -> None:
    m, script, _ = quick
    for k in KEYS:
        assert k in m, k
    assert m["data"] == "mnist10k-embedded" and m["quick"] is True and m["metric"] == "mse"
    assert isinstance(m["within_5pct"], bool)
    assert m["recon_ratio"] == pytest.approx(m["recon_pc"] / m["recon_bp"], rel=1e-12)
    assert m["within_5pct"] == (m["recon_ratio"] <= 1.05)
    same = {k: v for k, v in m.items() if k not in TIMINGS}
    assert same == {k: v for k, v in script.items() if k not in TIMINGS}


def test_both_arms_beat_the_mean_image(quick) -> None:
    """Predicting the mean training image for every test image: both arms reconstruct better,
    in MSE per pixel and in summed BCE (nats per image)."""
    m, _, _ = quick
    x, xt = _test_images()
    p = np.clip(x.mean(axis=0), 1e-7, 1 - 1e-7)
    mse = float(np.mean((xt - p) ** 2))
    bce = float(np.mean(-(xt * np.log(p) + (1 - xt) * np.log1p(-p)).sum(axis=1)))
    for arm in ("pc", "bp"):
        assert m[f"recon_{arm}"] < mse, (arm, m[f"recon_{arm}"], mse)
        assert m[f"bce_{arm}"] < bce, (arm, m[f"bce_{arm}"], bce)


def test_recon_pc_is_the_deterministic_decoder_at_the_inferred_latent(quick) -> None:
    """``recon_pc`` recomputed in numpy: PC inference (the training settings) on the test images
    gives (m, s); ``h = W_zh [m; s] + b_h``, ``x_hat = sigmoid(W_hx tanh(h) + b_x)``; the MSE per
    pixel averaged over the test images."""
    m, _, sim = quick
    _, xt = _test_images()
    z = np.asarray(sim.infer({"image": xt})["z"], np.float64)
    p = sim.parameters()
    h = z @ p["z->h"].T + p["h:bias"]
    x_hat = 1 / (1 + np.exp(-(np.tanh(h) @ p["h->image"].T + p["image:bias"])))
    assert m["recon_pc"] == pytest.approx(float(np.mean((x_hat - xt) ** 2)), rel=1e-6)
    assert np.all(p["z:bias"] == 0)  # the N(0, 1) prior stayed fixed


def test_the_network_and_the_twin_objective() -> None:
    """The PC graph is the documented one, and the twin's loss is the VAE objective with the
    decoder reading (m, s): BCE(x, decoder(m, s)) + 1/2 sum(e^s + m^2 - 1 - s)."""
    mod = load_model("pc_vae")
    cfg = mod.QUICK
    net = mod.build_network(cfg)
    z, img = net["z"], net["image"]
    assert z.shape == (2, cfg.latent) and isinstance(z.distribution, npc.Normal)
    assert z.bias and not z.trainable_bias
    assert img.role == "input" and isinstance(img.distribution, npc.Bernoulli)
    assert dict(net.connection("z->h").options) == {"flatten": True}
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=3)
    twin = mod.AmortisedTwin(sim, cfg.encoder_hidden, 3)
    _, xt = _test_images()
    x = torch.as_tensor(xt[:16])
    with torch.no_grad():
        got = float(twin.loss(x))
        e = twin.encoder
        zz = torch.tanh(x @ e["W1"].T + e["b1"]) @ e["W2"].T + e["b2"]
        mm, s = zz[:, : cfg.latent], zz[:, cfg.latent :]
        d = twin.decoder
        mu = torch.tanh(zz @ d["z->h"].T + d["h:bias"]) @ d["h->image"].T + d["image:bias"]
        bce = (torch.log1p(torch.exp(mu)) - x * mu).sum(1)
        kl = 0.5 * (torch.exp(s) + mm**2 - 1 - s).sum(1)
    assert got == pytest.approx(float((bce + kl).mean()), rel=1e-10)
    init = sim.parameters()
    for k, v in twin.parameters().items():  # the same initial decoder
        np.testing.assert_array_equal(v, init[k], err_msg=k)


def test_bad_option_is_one_line_and_status_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(MODELS / "pc_vae.py"), "--data", "cifar", "--out",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--data" in r.stderr
