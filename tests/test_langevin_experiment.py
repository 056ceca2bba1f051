"""models/langevin_pc.py and analysis/lpc_vs_vae.py (issue 12, item 7), on their quick run.

Oracles: the keys the issue names; the summary is the saved per-arm results (the Jeffreys arm is
"LPC", the VAE's last evaluation is its final one, and ``iters_lpc_to_vae_fid`` is the first
Jeffreys evaluation at or below it); FID-like and coverage recomputed from the saved samples'
features agree with the metric functions; the step-size sweep's maxima are read off its rows;
the figures exist."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, load_model, run_model_json

KEYS = ("fid_lpc", "fid_vae", "coverage_lpc", "coverage_vae", "elbo_lpc", "elbo_vae",
        "iters_lpc_to_vae_fid", "iters_vae", "fid_lpc_forward_kl", "fid_lpc_reverse_kl",
        "fid_lpc_jeffreys", "fid_lpc_no_encoder", "eta_max_stable_precond",
        "eta_max_stable_plain")  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("langevin_pc")
    m = run_model_json("langevin_pc", out)
    return m, json.loads((out / "langevin_pc.json").read_text()), out


def test_every_key_is_reported(quick) -> None:
    m = quick[0]
    assert all(k in m for k in KEYS), [k for k in KEYS if k not in m]
    assert m["data"] == "mnist10k-embedded" and m["quick"] is True
    assert set(m["nullable"]) == {"iters_lpc_to_vae_fid", "eta_max_stable_precond",
                                  "eta_max_stable_plain"}  # fmt: skip


def test_summary_is_read_off_the_saved_results(quick) -> None:
    m, saved, _ = quick
    res = saved["results"][0]
    lpc, vae = res["arms"]["jeffreys"], res["vae"]["curve"]
    cfg = saved["config"]
    batches = -(-cfg["n_train"] // cfg["batch_size"])
    assert m["iters_vae"] == vae[-1]["iterations"] == cfg["epochs"] * batches
    assert m["fid_lpc"] == m["fid_lpc_jeffreys"] == lpc["final"]["fid"] == lpc["curve"][-1]["fid"]
    assert m["fid_vae"] == vae[-1]["fid"] and m["coverage_vae"] == vae[-1]["coverage"]
    hit = [r["iterations"] for r in lpc["curve"] if r["fid"] <= vae[-1]["fid"]]
    assert m["iters_lpc_to_vae_fid"] == (hit[0] if hit else None)
    rows = res["sweep"]["rows"]
    for pre, key in ((True, "eta_max_stable_precond"), (False, "eta_max_stable_plain")):
        ok = [r["eta"] for r in rows if r["precondition"] == pre and r["stable"]]
        assert m[key] == (max(ok) if ok else None)
        assert sorted(r["eta"] for r in rows if r["precondition"] == pre) == sorted(
            cfg["sweep_rates"]
        )
    assert m["lpc_over_vae_epoch"] == pytest.approx(m["lpc_epoch_seconds"] / m["vae_epoch_seconds"])


def test_sample_quality_uses_the_packaged_features() -> None:
    """``sample_quality`` is FID / PRDC of the packaged classifier's features: identical sets
    give FID ~0 and coverage 1."""
    mod = load_model("langevin_pc")
    import neuropc as npc

    x = npc.data.mnist("test")[0][:200].astype(np.float64)
    w = npc.analysis.features.default_weights("mnist10k")[0]
    q = mod.sample_quality(x, npc.analysis.features.features(w, x), w)
    assert abs(q["fid"]) < 1e-6 and q["coverage"] == 1.0 and q["precision"] == 1.0


def test_analysis_draws_the_figures(quick, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    _, _, out = quick
    spec = importlib.util.spec_from_file_location("lpc_vs_vae", ROOT / "analysis" / "lpc_vs_vae.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = mod.main([str(out), "--out", str(tmp_path)])
    names = {p.name for p in paths}
    assert names == {"lpc_vs_vae_curves.png", "lpc_objectives.png", "lpc_step_sizes.png",
                     "lpc_samples.png"}  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in paths)
