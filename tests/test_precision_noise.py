"""models/precision_noise.py: the corruptions (closed forms of their statistics) and the JSON
contract of the quick run (every setting and arm, learning rates from the arms' grids)."""

from __future__ import annotations

import math

import numpy as np
from conftest import load_model, run_model_json

pn = load_model("precision_noise")


def _sets(n: int = 20000):
    rng = np.random.default_rng(0)
    x = rng.random((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return (x, y), (x[:500].copy(), y[:500].copy())


def test_label_noise_is_symmetric_and_flips_to_another_class() -> None:
    train, test = _sets()
    for p in (0.2, 0.4, 0.6):
        (x, y), (_, yt) = pn.corrupt(f"label{int(100 * p)}", train, test, seed=3)
        flipped = y != train[1]
        # binomial(n, p): 5 standard deviations
        assert abs(flipped.mean() - p) < 5 * math.sqrt(p * (1 - p) / len(y))
        # the new class is uniform over the other 9: each offset 1..9 about p / 9
        offsets = np.bincount((y[flipped] - train[1][flipped]) % 10, minlength=10)
        assert offsets[0] == 0
        assert np.all(np.abs(offsets[1:] / flipped.sum() - 1 / 9) < 0.02)
        assert np.array_equal(x, train[0]) and np.array_equal(yt, test[1])  # test labels clean


def test_input_noise_levels_and_the_fixed_corrupted_half() -> None:
    train, test = _sets(4000)
    for name, sd in (("gauss05", 0.5), ("gauss10", 1.0)):
        (x, _), (xt, _) = pn.corrupt(name, train, test, seed=0)
        assert abs(np.std(x - train[0]) - sd) < 0.01 and abs(np.std(xt - test[0]) - sd) < 0.02
    (x, _), (xt, _) = pn.corrupt("hetero", train, test, seed=0)
    sd = np.std(x - train[0], axis=0)
    noisy = sd > 1.0
    assert noisy.sum() == 392 and np.all(sd[~noisy] == 0)
    assert np.all(np.abs(sd[noisy] - 2.0) < 0.15)
    (x2, _), _ = pn.corrupt("hetero", train, test, seed=1)  # other noise, same half
    assert np.array_equal(np.std(x2 - train[0], axis=0) > 1.0, noisy)


def test_quick_run_reports_every_setting_and_arm(tmp_path) -> None:
    m = run_model_json("precision_noise", tmp_path)
    for s in pn.SETTINGS:
        for arm in pn.ARMS:
            assert 0.0 <= m[f"acc_{s}_{arm}"] <= 1.0, (s, arm)
    for arm in pn.ARMS:
        assert m[f"lr_{arm}"] == pn.middle(arm)["lr"]  # --quick searches nothing
    assert m["quick"] is True and m["data"] in ("fashion", "mnist10k-embedded")
    assert (tmp_path / "precision_noise.md").read_text().count("\n| ") == len(pn.ARMS)
