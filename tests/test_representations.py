"""models/representations.py (quick) and analysis/representations.py: decoding and RSA of the
value and error populations of a PC digit classifier, checked against the recording."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import ROOT, load_model

import neuropc as npc

TIMINGS = ("train_seconds", "record_seconds", "analysis_seconds", "recording")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = load_model("representations")
    out = tmp_path_factory.mktemp("representations")
    metrics = model.main(["--quick", "--json", "--out", str(out), "--seed", "0"])
    return model, metrics, out


def test_value_populations_decode_the_digit(run):
    # Measured quick, seed 0: last-step value decoding h1 0.757, h2 0.770, output 0.810 (chance
    # 0.1); test accuracy 0.79. Thresholds leave a margin of > 0.25 above them.
    _, m, _ = run
    assert m["test_accuracy"] > 0.6
    assert m["settled_accuracy"] > 0.6
    for pop in ("h1", "h2", "output"):
        assert m["decoding"][pop]["value"]["last"] > 0.5, pop
        # step 0 of a zero-initialised state: every value is 0, the decoder can only guess the
        # majority class (12% of the 300 test digits)
        assert m["decoding"][pop]["value"]["step0"] < 0.2, pop
    # h1's error at step 0 is -mu_h1 = -(W x + b): a linear image of the input (measured 0.747)
    assert m["decoding"]["h1"]["error"]["step0"] > 0.5
    # settled representations resemble the pixels' (measured Spearman 0.93 / 0.87 / 0.57)
    assert m["rdm_vs_input"]["h1"] > 0.6


def test_json_equals_recomputation_from_recording(run):
    model, m, _ = run
    A = npc.analysis
    with npc.open(m["recording"]) as rec:
        labels = rec.trials["label"].astype(str)
        assert rec.config["metadata"]["seed"] == 0
        data = {
            (p, v): rec[f"{p}:{v}"].values for p in model.POPULATIONS for v in ("value", "error")
        }
    x, y = npc.data.mnist("test")
    n = m["n_test"]
    assert labels.tolist() == [str(v) for v in y[:n]]
    for (pop, var), a in data.items():
        assert a.shape == (n, model.STEPS + 1, a.shape[2])
        acc = A.decode_over_steps(a, labels, folds=5, seed=0)
        assert m["decoding_curve"][pop][var] == acc.tolist()
        assert m["decoding"][pop][var] == {"step0": acc[0], "last": acc[-1], "mean": acc.mean()}
    pats = {p: A.condition_patterns(data[p, "value"][:, -1], labels)[1] for p in model.POPULATIONS}
    rdm_in = A.rdm(A.condition_patterns(x[:n], labels)[1], "correlation")
    for pop in model.POPULATIONS:
        rdm = A.rdm(pats[pop], "correlation")
        assert m["rdm_vs_input"][pop] == A.compare_rdms(rdm, rdm_in)
    assert m["rdm_between"]["h1~h2"] == A.compare_rdms(
        A.rdm(pats["h1"], "correlation"), A.rdm(pats["h2"], "correlation")
    )
    settled = np.mean(data["output", "value"][:, -1].argmax(axis=1) == y[:n])
    assert m["settled_accuracy"] == settled


def test_deterministic_for_a_seed(run, tmp_path):
    model, m, _ = run
    again = model.main(["--quick", "--out", str(tmp_path), "--seed", "0"])
    assert {k: v for k, v in again.items() if k not in TIMINGS} == {
        k: v for k, v in m.items() if k not in TIMINGS
    }


def test_analysis_writes_pngs(run, tmp_path):
    _, m, _ = run
    spec = importlib.util.spec_from_file_location(
        "representations_analysis", ROOT / "analysis" / "representations.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    paths = mod.main([m["recording"], "--out", str(tmp_path)])
    assert sorted(p.name for p in paths) == ["decoding.png", "generalisation.png", "rdms.png"]
    for p in paths:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
