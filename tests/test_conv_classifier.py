"""models/conv_classifier.py on its quick run: a conv net trained by PC and by its backprop twin.

Oracles: the binomial chance threshold of the test labels (both arms must beat it); PC's test
accuracy recomputed from the trained weights by a feed-forward pass written here with torch's
functional conv / gelu / max-pool (forward-initialised test inference starts where every error
is zero, a fixed point with the "KL" label free), up to trials whose top two logits are within
float32 rounding; the architecture's shapes from the convolution and pooling size formulas; the
in-process run reproduced by the script (same seed: identical metrics, timings aside); the
one-line user error with exit status 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import MODELS, ROOT, load_model, quick_twice
from oracles import argmax_accuracy_bounds, chance_threshold

import neuropc as npc

KEYS = ("test_accuracy", "bp_test_accuracy", "ms_per_batch_pc", "ms_per_batch_bp", "data",
        "epochs", "seconds", "train_seconds", "bp_train_seconds")  # fmt: skip
TIMINGS = ("seconds", "train_seconds", "bp_train_seconds", "ms_per_batch_pc", "ms_per_batch_bp")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, dict, npc.Simulator]:
    """``conv_classifier --quick`` in-process (with its PC simulator) and as a script, seed 0."""
    return quick_twice("conv_classifier", tmp_path_factory.mktemp("conv_classifier"))


def _test_set() -> tuple[np.ndarray, np.ndarray]:
    n = load_model("conv_classifier").QUICK.n_test
    x, y = npc.data.mnist("test")
    return x[:n], y[:n]


def test_keys_and_determinism(quick) -> None:
    m, script, _ = quick
    for k in KEYS:
        assert k in m, k
    assert m["data"] == "mnist10k-embedded" and m["quick"] is True
    assert m["ms_per_batch_pc"] > 0 and m["ms_per_batch_bp"] > 0
    same = {k: v for k, v in m.items() if k not in TIMINGS}
    assert same == {k: v for k, v in script.items() if k not in TIMINGS}


def test_both_arms_beat_chance(quick) -> None:
    m, _, _ = quick
    _, y = _test_set()
    chance = chance_threshold(y, alpha=1e-3)
    assert chance > np.bincount(y).max() / len(y)
    assert m["test_accuracy"] >= chance and m["bp_test_accuracy"] >= chance


def test_pc_accuracy_is_the_feedforward_argmax(quick) -> None:
    """gelu (tanh form) after each convolution, 2 x 2 max-pools (padding 1 on an odd side),
    then the flattened last pool times W plus b: the argmax accuracy of these logits."""
    m, _, sim = quick
    x, y = _test_set()
    p = {k: torch.as_tensor(v) for k, v in sim.parameters().items()}
    a = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1, 28, 28)
    prev = "image"
    for i in range(1, len(load_model("conv_classifier").QUICK.channels) + 1):
        c = F.conv2d(a, p[f"{prev}->c{i}"], padding=1)
        c = c + p[f"c{i}:bias"].reshape(1, *c.shape[1:])  # every population: a bias per unit
        a = F.max_pool2d(F.gelu(c, approximate="tanh"), 2, padding=c.shape[-1] % 2)
        a = a + p[f"p{i}:bias"].reshape(1, *a.shape[1:])
        prev = f"p{i}"
    logits = (a.flatten(1) @ p[f"{prev}->label"].T + p["label:bias"]).numpy()
    lo, hi = argmax_accuracy_bounds(logits, y, 1e-5 * np.abs(logits).max())
    assert lo <= m["test_accuracy"] <= hi, (m["test_accuracy"], lo, hi)


def test_architecture_shapes() -> None:
    """VGG-5's four blocks on 28 x 28: 28 -> 14 -> 7 -> 4 -> 2 (floor((H + 2p - 2) / 2) + 1)."""
    mod = load_model("conv_classifier")
    net = mod.build_network(mod.DEFAULT)
    want = {"c1": (8, 28, 28), "p1": (8, 14, 14), "c2": (16, 14, 14), "p2": (16, 7, 7),
            "c3": (32, 7, 7), "p3": (32, 4, 4), "c4": (32, 4, 4), "p4": (32, 2, 2)}  # fmt: skip
    for name, shape in want.items():
        assert net[name].shape == shape, name
    assert net["label"].role == "target" and net["label"].distribution == npc.Categorical("KL")
    assert all(net[f"c{i}"].activation.name == "gelu" for i in range(1, 5))


def test_bad_option_is_one_line_and_status_2(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(MODELS / "conv_classifier.py"), "--data", "cifar",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--data" in r.stderr
