"""Every model script in ``models/`` runs in its ``--quick`` form, in-process and as a script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import MODELS, load_model, run_model_json

DIGITS_KEYS = ("test_accuracy", "bp_test_accuracy", "train_seconds", "bp_train_seconds")


def _check_digits(m: dict) -> None:
    for k in DIGITS_KEYS:
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m["epochs"] == 2 and m["quick"] is True
    assert 0.0 <= m["test_accuracy"] <= 1.0 and 0.0 <= m["bp_test_accuracy"] <= 1.0
    assert m["test_accuracy"] > 0.3  # well above chance (0.1) even after two small epochs
    assert math.isfinite(m["train_energy"]) and math.isfinite(m["bp_train_loss"])


def test_digits_classifier_quick(tmp_path: Path) -> None:
    mod = load_model("digits_classifier")
    m = mod.main(["--quick", "--out", str(tmp_path / "inproc")])
    _check_digits(m)
    history = json.loads((tmp_path / "inproc" / "history.json").read_text())
    assert len(history["pc"]) == len(history["bp"]) == 2
    _check_digits(run_model_json("digits_classifier", tmp_path / "script"))


@pytest.mark.parametrize("script", sorted(p.stem for p in MODELS.glob("*.py")))
def test_every_model_script_runs_through_the_cli(script: str, tmp_path: Path) -> None:
    """``neuropc run models/NAME.py --quick --json``: no script rots."""
    m = run_model_json(script, tmp_path, cli=True, extra=("--seed", "1"))
    assert m and all(isinstance(k, str) for k in m)
