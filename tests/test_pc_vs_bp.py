"""models/pc_vs_bp.py (quick) and analysis/pc_vs_bp.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_model_json


def test_pc_vs_bp_quick_metrics_and_figures(tmp_path: Path) -> None:
    m = run_model_json("pc_vs_bp", tmp_path)
    assert m["fpa_max_abs_err"] <= 1e-10 and m["zil_max_abs_err"] <= 1e-10
    assert set(m["strict_cosine"]) == {"input->h1", "h1->h2", "h2->output"}
    assert all(0.0 < c < 1.0 for c in m["strict_cosine"].values())
    assert m["strict_slope_beta"] == pytest.approx(1.0, abs=0.1)
    r = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "pc_vs_bp.py"), str(tmp_path / "alignment.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("cosine_vs_t.png", "error_vs_beta.png", "error_vs_output_precision.png"):
        png = tmp_path / name
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
