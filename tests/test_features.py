"""The feature classifier of the FID-like metrics (neuropc.analysis.features): deterministic
training, numpy forward pass against an independent torch one, the .npz format, the packaged
weights and the FID-like metric's behaviour on identical, disjoint-real and noisy image sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuropc as npc
from neuropc.analysis import features as F

# 13 of the 128 hidden units never fire on MNIST, so the feature covariances are singular and
# scipy's sqrtm (inside generative.frechet_distance) warns; the values are still accurate.
singular_ok = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")


@pytest.fixture(scope="module")
def mnist_test():
    return npc.data.mnist("test")


@pytest.fixture(scope="module")
def packaged():
    return F.default_weights("mnist10k")


@pytest.fixture(scope="module")
def small_runs():
    x, y = npc.data.mnist("train")
    x, y = x[:500], y[:500]
    kw = dict(epochs=1, batch_size=50)
    return (F.train_classifier(x, y, seed=3, **kw), F.train_classifier(x, y, seed=3, **kw),
            F.train_classifier(x, y, seed=4, **kw))  # fmt: skip


def test_training_is_bit_identical_for_a_seed(small_runs):
    a, b, c = small_runs
    assert sorted(a) == ["W0", "W1", "W2", "b0", "b1", "b2"]
    assert [a[f"W{i}"].shape for i in range(3)] == [(256, 784), (128, 256), (10, 128)]
    for k in a:
        assert a[k].dtype == np.float32
        assert a[k].tobytes() == b[k].tobytes(), k
    assert all(not np.array_equal(a[k], c[k]) for k in a)


def test_training_restores_torch_settings():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = torch.random.get_rng_state()
    x, y = npc.data.mnist("train")
    try:
        torch.set_num_threads(2)
        F.train_classifier(x[:64], y[:64], hidden=(8,), epochs=1, batch_size=32)
        assert torch.get_num_threads() == 2
        assert torch.are_deterministic_algorithms_enabled() == det
        assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is untouched
    finally:
        torch.set_num_threads(threads)


def test_training_rejects_bad_labels():
    x = np.zeros((4, 784), np.float32)
    with pytest.raises(ValueError, match="labels"):
        F.train_classifier(x, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="labels"):
        F.train_classifier(x, np.zeros(4))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_numpy_forward_matches_torch(packaged, mnist_test, dtype, tol):
    w, x = packaged[0], mnist_test[0][:300]
    layers = []
    for i in range(3):
        lin = torch.nn.Linear(*w[f"W{i}"].shape[::-1]).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w[f"W{i}"]))
            lin.bias.copy_(torch.from_numpy(w[f"b{i}"]))
        layers += [lin, torch.nn.ReLU()]
    body, head = torch.nn.Sequential(*layers[:4]), layers[4]
    with torch.no_grad():
        hidden = body(torch.from_numpy(x).to(dtype))
        out = head(hidden).numpy()
    feats = F.features(w, x)
    assert feats.dtype == np.float64 and feats.shape == (300, 128)
    np.testing.assert_allclose(F.logits(w, x), out, rtol=tol, atol=tol)
    np.testing.assert_allclose(feats, hidden.numpy(), rtol=tol, atol=tol)
    # also accepts (N, 28, 28) images
    np.testing.assert_array_equal(F.features(w, x.reshape(-1, 28, 28)), feats)


def test_save_load_round_trip(tmp_path, small_runs):
    w = small_runs[0]
    meta = {"dataset": "mnist10k", "seed": 3, "epochs": 1, "test_accuracy": 0.8125, "ok": True}
    path = F.save(tmp_path / "w.npz", w, **meta)
    w2, meta2 = F.load(path)
    assert sorted(w2) == sorted(w)
    for k in w:
        assert w2[k].dtype == w[k].dtype and w2[k].tobytes() == w[k].tobytes()
    assert meta2 == meta and type(meta2["seed"]) is int and type(meta2["ok"]) is bool
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temporary file left


def test_save_rejects_bad_input(tmp_path, small_runs):
    with pytest.raises(ValueError, match="metadata 'x'"):
        F.save(tmp_path / "w.npz", small_runs[0], x=[1, 2])
    with pytest.raises(ValueError, match="missing"):
        F.save(tmp_path / "w.npz", {"W0": np.zeros((2, 3))})
    assert list(tmp_path.iterdir()) == []


MALFORMED = ["missing key", "wrong shape", "bias shape", "object array", "unknown entry",
             "array metadata"]  # fmt: skip


def _malformed(w: dict) -> dict:
    return {
        "missing key": ({k: v for k, v in w.items() if k != "b1"}, "missing \\['b1'\\]"),
        "wrong shape": ({**w, "W1": w["W1"][:, :-1]}, "W1 has 255 inputs"),
        "bias shape": ({**w, "b2": w["b2"][:-1]}, "b2"),
        "object array": ({**w, "W0": np.array([{"a": 1}], dtype=object)}, "pickle|Object"),
        "unknown entry": ({**w, "extra": np.zeros(2)}, "unexpected entry 'extra'"),
        "array metadata": ({**w, "meta_seed": np.arange(2)}, "metadata 'meta_seed'"),
    }


@pytest.mark.parametrize("case", MALFORMED)
def test_load_rejects_malformed_files(tmp_path, small_runs, case):
    arrays, pattern = _malformed(small_runs[0])[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # allow_pickle=True: the object array is written pickled
    with pytest.raises(ValueError, match=pattern) as err:
        F.load(path)
    assert str(path) in str(err.value)


def test_load_rejects_a_non_npz_file(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable") as err:
        F.load(path)
    assert str(path) in str(err.value)


def test_packaged_weights_classify_mnist(packaged, mnist_test):
    w, meta = packaged
    x, y = mnist_test
    acc = F.accuracy(w, x, y)
    assert acc >= 0.9
    assert meta["dataset"] == "mnist10k" and meta["test_accuracy"] == pytest.approx(acc)
    assert all(v.dtype == np.float32 for v in w.values())


def test_default_weights_lists_the_available_ones():
    assert "mnist10k" in F.available()
    with pytest.raises(ValueError, match="available: .*mnist10k"):
        F.default_weights("cifar10")


@singular_ok
def test_fid_like_is_zero_for_identical_sets(packaged, mnist_test):
    x = mnist_test[0][:1000]
    assert abs(F.fid_like(x, x, packaged[0])) < 1e-6


@singular_ok
def test_fid_like_ranks_noise_above_a_disjoint_real_split(packaged, mnist_test):
    w, x = packaged[0], mnist_test[0]
    a, b = x[:1000], x[1000:]
    noisy = np.clip(a + np.random.default_rng(0).normal(0.0, 0.5, a.shape), 0.0, 1.0)
    real, noise = F.fid_like(a, b, w), F.fid_like(a, noisy, w)
    assert 0 < real < noise / 10
    good, bad = F.prdc_like(a, b, w), F.prdc_like(a, noisy, w)
    assert good["precision"] > bad["precision"] and good["recall"] > bad["recall"]
    assert good["coverage"] > bad["coverage"]
