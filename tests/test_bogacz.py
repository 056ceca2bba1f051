"""Reproduction of Bogacz (2017), exercises 1, 2, 3, 5 and Langevin posterior sampling
(``models/bogacz_tutorial.py``), against the paper's numbers and independent references."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_model, run_model_json
from scipy.integrate import quad

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "models" / "bogacz_tutorial.py"
FIGURES = (
    "ex1_posterior.png",
    "ex2_map.png",
    "ex3_error_nodes.png",
    "posterior_samples.png",
    "ex5_variance.png",
)


def _load():
    return load_model("bogacz_tutorial")


@pytest.fixture(scope="module")
def bt():
    return _load()


@pytest.fixture(scope="module")
def quick(bt, tmp_path_factory):
    out = tmp_path_factory.mktemp("bogacz_quick")
    return bt.main(["--quick", "--seed", "0", "--out", str(out)]), out


# ---- independent references ------------------------------------------------------------------
def _exact_moments() -> tuple[float, float]:
    """Posterior mean and sd on the real line from the closed-form unnormalised density."""

    def dens(v):
        return math.exp(-((v - 3.0) ** 2) / 2 - (2.0 - v * v) ** 2 / 2)

    kw = dict(points=[0.0, 1.5], limit=200, epsabs=1e-13)
    z = quad(dens, -10, 10, **kw)[0]
    m = quad(lambda v: v * dens(v), -10, 10, **kw)[0] / z
    var = quad(lambda v: (v - m) ** 2 * dens(v), -10, 10, **kw)[0] / z
    return m, math.sqrt(var)


def _tutorial_ex2(n: int) -> float:
    """The tutorial's MATLAB loop of exercise 2, written out."""
    phi = 3.0
    for _ in range(n):
        phi = phi + 0.01 * ((3.0 - phi) + (2.0 - phi**2) * 2 * phi)
    return phi


def _tutorial_ex3(n: int) -> tuple[float, float, float]:
    """The tutorial's MATLAB loop of exercise 3 (eqs 12-14), written out."""
    phi, ep, eu = 3.0, 0.0, 0.0
    for _ in range(n):
        phi, ep, eu = (
            phi + 0.01 * (-ep + eu * 2 * phi),
            ep + 0.01 * (phi - 3.0 - ep),
            eu + 0.01 * (2.0 - phi**2 - eu),
        )
    return phi, ep, eu


# ---- exercise 1 ------------------------------------------------------------------------------
def test_exact_posterior_matches_quadrature(bt):
    ex1 = bt.exercise1()
    m, s = _exact_moments()
    assert ex1["exact_mean"] == pytest.approx(m, abs=1e-6)
    assert ex1["exact_sd"] == pytest.approx(s, abs=1e-6)
    assert m == pytest.approx(1.480, abs=1e-3)
    assert s == pytest.approx(0.342, abs=1e-3)
    # the tutorial's grid 0.01:0.01:5
    assert ex1["mode_grid"] == pytest.approx(1.57, abs=1e-9)
    assert ex1["mean_grid"] == pytest.approx(1.485, abs=1e-3)
    assert np.sum(ex1["p"]) * 0.01 == pytest.approx(1.0)


# ---- exercises 2 and 3 -----------------------------------------------------------------------
def test_ex2_map(quick):
    m, _ = quick
    assert m["phi_ex2"] == pytest.approx(1.567, abs=0.002)
    assert m["phi_ex2_t5"] == pytest.approx(1.567, abs=0.002)
    assert m["phi_ex2"] == pytest.approx(_tutorial_ex2(499), abs=1e-9)
    # one call of 499 steps and 499 calls of one step continue the same trajectory
    assert m["ex2_chunked_vs_direct"] < 1e-12


def test_ex3_error_nodes(quick):
    m, _ = quick
    assert m["phi_ex3"] == pytest.approx(1.552, abs=0.005)
    assert m["eps_p_ex3"] == pytest.approx(-1.430, abs=0.005)
    assert m["eps_u_ex3"] == pytest.approx(-0.442, abs=0.005)
    assert m["phi_ex3_t5"] == pytest.approx(1.552, abs=0.005)
    assert m["eps_p_ex3_t5"] == pytest.approx(-1.430, abs=0.005)
    assert m["eps_u_ex3_t5"] == pytest.approx(-0.442, abs=0.005)
    ref = _tutorial_ex3(499)
    got = (m["phi_ex3"], m["eps_p_ex3"], m["eps_u_ex3"])
    np.testing.assert_allclose(got, ref, atol=1e-9)
    np.testing.assert_allclose(
        (m["phi_ex3_t5"], m["eps_p_ex3_t5"], m["eps_u_ex3_t5"]), _tutorial_ex3(500), atol=1e-9
    )
    # phi overshoots to about 0.89 at t = 0.84 before recovering
    assert m["ex3_phi_min"] == pytest.approx(0.89, abs=0.01)
    assert m["ex3_t_min"] == pytest.approx(0.84, abs=0.03)


def test_ex3_trajectory_starts_at_prior(bt):
    ex3 = bt.exercise3()
    assert ex3["phi_traj"][0] == pytest.approx(3.0)
    assert ex3["eps_p_traj"][0] == 0.0 and ex3["eps_u_traj"][0] == 0.0
    ref = _tutorial_ex3(250)
    got = (ex3["phi_traj"][250], ex3["eps_p_traj"][250], ex3["eps_u_traj"][250])
    np.testing.assert_allclose(got, ref, atol=1e-9)


# ---- exercise 5 ------------------------------------------------------------------------------
def test_ex5_variance_learning(quick, bt):
    m, _ = quick
    assert m["sigma_ex5"] == pytest.approx(2.0, abs=0.2)
    sigma = bt.exercise5(0)["sigma"]
    assert sigma.shape == (2000,) and sigma[0] == 1.0


# ---- posterior sampling ----------------------------------------------------------------------
def test_posterior_sampling_quick(quick):
    m, _ = quick
    assert m["posterior_mean"] == pytest.approx(1.480, abs=0.01)
    assert m["posterior_sd"] == pytest.approx(0.342, abs=0.01)
    assert m["posterior_se_mean"] < 0.003
    assert m["posterior_se_sd"] < 0.004


@pytest.mark.slow
def test_posterior_sampling_full(bt):
    post = bt.posterior_sampling(seed=0)  # the full run: 4000 chains, 20 000 steps
    assert post["n_samples"] == 4000 * 180
    assert post["mean"] == pytest.approx(1.480, abs=0.01)
    assert post["sd"] == pytest.approx(0.342, abs=0.01)
    assert post["se_mean"] < 0.0015 and post["se_sd"] < 0.002


# ---- outputs ---------------------------------------------------------------------------------
def test_figures_written(quick):
    pytest.importorskip("matplotlib")
    m, out = quick
    assert sorted(m["figures"]) == sorted(FIGURES)
    for name in FIGURES:
        f = out / name
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_skipped_without_matplotlib(bt, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bt.make_plots(tmp_path / "figs", {}, {}, {}, {}, {}) == []
    assert "matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "figs").exists()


def test_required_metric_keys(quick):
    m, _ = quick
    for k in (
        "phi_ex2",
        "phi_ex3",
        "eps_p_ex3",
        "eps_u_ex3",
        "sigma_ex5",
        "posterior_mean",
        "posterior_sd",
    ):
        assert isinstance(m[k], float) and math.isfinite(m[k])


def test_script_prints_json_last_line(tmp_path):
    m = run_model_json("bogacz_tutorial", tmp_path)
    assert m["phi_ex2"] == pytest.approx(1.567, abs=0.002)
    assert m["posterior_mean"] == pytest.approx(1.480, abs=0.01)
