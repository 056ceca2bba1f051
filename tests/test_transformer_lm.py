"""The transformer language model (issue 13, item 5): the readouts of
:mod:`neuropc.analysis.language` against closed forms and an independent path (the torch
backend's forward-initialised state), and ``models/transformer_lm.py --quick``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_model

import neuropc as npc
from neuropc import text
from neuropc.analysis import language


def test_uniform_logits_have_the_vocabulary_as_perplexity() -> None:
    targets = np.random.default_rng(0).integers(0, 37, (5, 8))
    assert language.perplexity(np.zeros((5, 8, 37)), targets) == pytest.approx(37.0, rel=1e-12)


def test_fitted_temperature_recovers_the_scale_of_the_logits() -> None:
    """Tokens drawn from softmax(z) and read through logits 3 z: the likelihood is maximal at
    temperature 3 (20,000 draws: the estimate is within a few percent)."""
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.5, (400, 50, 10))
    p = torch.softmax(torch.tensor(z), -1).numpy()
    u = rng.random((400, 50, 1))
    targets = (p.cumsum(-1) < u).sum(-1).clip(0, 9)
    assert language.fit_temperature(3.0 * z, targets) == pytest.approx(3.0, rel=0.05)


@pytest.fixture(scope="module")
def trained():
    net = npc.transformer(vocab=13, seq=6, d=8, ff=8)
    sim = npc.Simulator(net, backend="torch", dtype="float64", seed=0,
                        inference=npc.Inference(steps=5, rate=0.05), optimizer=npc.Adam(1e-2))  # fmt: skip
    rng = np.random.default_rng(2)
    ids = np.tile(np.arange(13), 40)  # a cycle: 0 1 2 ... 12 0 1 ...
    for _ in range(60):
        x, y = text.windows(ids, 6, 16, rng)
        sim.learn({"tokens": x.astype(float), "next": np.eye(13)[y].reshape(16, -1)})
    return net, sim


def test_logits_are_the_forward_state_of_the_simulator(trained) -> None:
    net, sim = trained
    ids = np.random.default_rng(3).integers(0, 13, (4, 6))
    lg = language.logits(net, sim.parameters(), ids)
    st = sim.infer({"tokens": ids.astype(float)}, inference=npc.Inference(steps=0))
    np.testing.assert_allclose(lg, st["next"].reshape(4, 6, 13), rtol=0, atol=1e-5)  # float32


def test_generate_continues_a_learned_cycle(trained) -> None:
    net, sim = trained
    out = language.generate(net, sim.parameters(), np.array([3, 4]), 10,
                            rng=np.random.default_rng(0), temperature=0)  # fmt: skip
    assert out.tolist() == [(3 + i) % 13 for i in range(12)]  # greedy: the next of the cycle
    sampled = language.generate(net, sim.parameters(), np.array([5]), 20,
                                rng=np.random.default_rng(4), temperature=1.0)  # fmt: skip
    assert len(sampled) == 21 and sampled.min() >= 0 and sampled.max() < 13
    again = language.generate(net, sim.parameters(), np.array([5]), 20,
                              rng=np.random.default_rng(4), temperature=1.0)  # fmt: skip
    np.testing.assert_array_equal(sampled, again)
    with pytest.raises(ValueError, match="prompt is empty"):
        language.generate(net, sim.parameters(), np.array([], int), 3, rng=np.random.default_rng())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    mod = load_model("transformer_lm")
    out = tmp_path_factory.mktemp("tlm")
    return mod, mod.main(["--quick", "--out", str(out)]), out


def test_quick_run_reports_every_key_and_beats_uniform(quick) -> None:
    mod, m, out = quick
    for kind in ("char", "bpe"):
        for arm in mod.ARMS:
            assert np.isfinite(m[f"ppl_{arm}_{kind}"]) and m[f"ms_batch_{arm}_{kind}"] > 0
        vocab = mod.tokenizer(kind, mod.QUICK).vocab_size
        # better than the uniform model (perplexity = vocabulary size, closed form)
        assert m[f"ppl_bp_{kind}"] < vocab and m[f"ppl_pc_kl_{kind}"] < vocab
        assert isinstance(m[f"order_holds_{kind}"], bool)
    assert (m["fabricpc_char_pc"], m["fabricpc_char_bp"]) == (9.12, 6.60)
    assert (out / "samples.txt").read_text().count("== ") == 6


def test_quick_run_is_deterministic(quick, tmp_path) -> None:
    mod, m, _ = quick
    again = mod.main(["--quick", "--out", str(tmp_path), "--tokens", "char"])
    for arm in mod.ARMS:
        assert again[f"ppl_{arm}_char"] == m[f"ppl_{arm}_char"]
