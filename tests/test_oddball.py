"""models/oddball.py (quick) and analysis/oddball.py: the mismatch ordering DEV > CTR > STD in
every error population, the reported numbers against a plain-numpy recomputation from the HDF5
recording, the torch backend against numba, and the figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, load_model, run_model_json

import neuropc as npc

POPS = ("z", "h1", "obs")
CONDS = ("deviant", "control", "standard")
# Margins. Over seeds 0-7 of the quick run the smallest DEV/CTR peak ratio is 1.37 and the
# smallest CTR/STD 12.8 (full run, seed 0: about 1.5 and 28). 1.2 and 5 leave room for other
# seeds and backends yet are effects far beyond float32 rounding (relative 1e-6).
DEV_OVER_CTR = 1.2
CTR_OVER_STD = 5.0


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("oddball")
    return run_model_json("oddball", out), out


def test_deviant_above_control_above_standard(quick) -> None:
    m, _ = quick
    assert m["ordering_holds"] is True and m["quick"] is True
    for p in POPS:
        pk = m["erp_peak"][p]
        assert pk["deviant"] > DEV_OVER_CTR * pk["control"], (p, pk)
        assert pk["control"] > CTR_OVER_STD * pk["standard"], (p, pk)
        r = m["response"][p]  # the mean over lags orders the same way
        assert r["deviant"] > r["control"] > r["standard"] > 0, (p, r)
        # Parras decomposition: iMM = iPE + iRS, prediction error and adaptation both positive
        assert m["iMM"][p] == pytest.approx(m["iPE"][p] + m["iRS"][p], abs=1e-12)
        assert m["iPE"][p] > 0.05 and m["iRS"][p] > 0.3, p
        assert m["dev_minus_std"][p] > m["dev_minus_ctr"][p] > 0
        assert m["ctr_minus_std"][p] > 0
        # roving: the first tone of a train beats the repeated ones, suppression with repetition
        curve = np.asarray(m["repetition_curve"][p])
        assert m["roving_dev_minus_std"][p] > 0 and curve[-1] < 0.8 * curve[0], p
    # hierarchy of latencies: the sensory error peaks at onset, the latent error last
    lat = m["erp_latency"]
    assert lat["obs"]["deviant"] == 0 < lat["h1"]["deviant"] < lat["z"]["deviant"]
    assert 0.1 <= m["p_deviant"] <= 0.15
    assert min(m["n_trials"].values()) >= 30


def _recompute(path: str) -> dict:
    """ERPs, peaks, responses, indices and the roving curve from the raw recorded errors, with
    plain numpy (selection rules of the model's docstring, parameters from the file)."""
    out: dict = {"waves": {}, "energy_gap": {}}
    with npc.open(path) as r:
        meta = r.config["metadata"]
        tr = r.trials
        block = tr["block"].astype(str)
        cond = tr["condition"].astype(str)
        stim = tr["stimulus"].astype(str)
        late = tr["position"].astype(int) >= meta["skip"]
        odd = np.isin(block, ["oddball_a", "oddball_b"]) & late
        masks = {
            "deviant": odd & (cond == "deviant"),
            "standard": odd & (cond == "standard"),
            "control": (block == "control") & np.isin(stim, ["3", "4"]) & late,
        }
        rov = (block == "roving") & late
        prec = {p["name"]: np.broadcast_to(p["precision"], (p["size"],))
                for p in r.config["network"]["populations"]}  # fmt: skip
        for pop in POPS:
            a = r[f"{pop}:error"]
            assert a.dims == ("trial", "step", "unit")
            assert np.array_equal(a.coords["trial"], tr["trial_id"])
            e = a.values.astype(np.float64)  # (trial, step, unit)
            energy = 0.5 * (e**2 / prec[pop]).sum(axis=2)  # (trial, step)
            out["waves"][pop] = {c: energy[masks[c]].mean(axis=0) for c in CONDS}
            # batches of one tone: the recorded per-step energy is the same quantity
            en = r[f"{pop}:energy"].values[:, :, 0]
            out["energy_gap"][pop] = float(np.max(np.abs(en - energy)) / np.max(energy))
            reps = tr["repetition"].astype(int)[rov]
            per_trial = energy[rov].mean(axis=1)
            out.setdefault("curve", {})[pop] = [
                per_trial[reps == k].mean() for k in np.unique(reps)
            ]
        out["n"] = {c: int(m.sum()) for c, m in masks.items()}
    return out


def test_numbers_match_a_numpy_recomputation_from_the_recording(quick) -> None:
    m, _ = quick
    ref = _recompute(m["recording"])
    assert ref["n"] == m["n_trials"]
    for p in POPS:
        w = ref["waves"][p]
        assert ref["energy_gap"][p] < 1e-5  # float32 rows against float32 energies
        for c in CONDS:
            assert m["erp_peak"][p][c] == pytest.approx(w[c].max(), abs=1e-6)
            assert m["erp_latency"][p][c] == int(np.argmax(w[c]))
            assert m["response"][p][c] == pytest.approx(w[c].mean(), abs=1e-6)
        for key, a, b in (("dev_minus_std", "deviant", "standard"),
                          ("dev_minus_ctr", "deviant", "control"),
                          ("ctr_minus_std", "control", "standard")):  # fmt: skip
            assert m[key][p] == pytest.approx((w[a] - w[b]).max(), abs=1e-6)
        d, c, s = (w[k].mean() for k in CONDS)
        norm = np.sqrt(d * d + s * s + c * c)
        assert m["iMM"][p] == pytest.approx((d - s) / norm, abs=1e-6)
        assert m["iPE"][p] == pytest.approx((d - c) / norm, abs=1e-6)
        assert m["iRS"][p] == pytest.approx((c - s) / norm, abs=1e-6)
        np.testing.assert_allclose(m["repetition_curve"][p], ref["curve"][p], atol=1e-6)


def test_torch_backend_agrees_with_numba(quick, tmp_path: Path) -> None:
    m, _ = quick
    t = load_model("oddball").main(["--quick", "--backend", "torch", "--out", str(tmp_path)])
    assert t["ordering_holds"] is True and t["n_trials"] == m["n_trials"]
    for p in POPS:
        for c in CONDS:
            assert t["erp_peak"][p][c] == pytest.approx(m["erp_peak"][p][c], rel=1e-4)


def test_analysis_writes_the_figures(quick, tmp_path: Path) -> None:
    m, _ = quick
    r = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "oddball.py"), m["recording"], "--out",
         str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("erp.png", "difference_waves.png", "mismatch_indices.png", "repetition.png"):
        png = tmp_path / name
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
