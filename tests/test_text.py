"""Tests for neuropc.text: the embedded Shakespeare corpus, its splits, tokenizers and windows."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from neuropc import text
from neuropc.text import (
    SPLITS,
    BPETokenizer,
    CharTokenizer,
    eval_windows,
    perplexity,
    shakespeare,
    shakespeare_works,
    split_titles,
    windows,
)

VALIDATION = [
    "Antony and Cleopatra",
    "King Henry VI, Part 2",
    "Much Ado About Nothing",
    "The Rape of Lucrece",
]
TEST = ["Coriolanus", "King Henry VIII", "Pericles", "The Tempest"]
PASSAGE = (
    "To be, or not to be, that is the question:\n  Whether 'tis nobler in the mind to suffer\n\n"
)


def test_works_count_titles_and_normalised_text():
    works = shakespeare_works()
    titles = [t for t, _ in works]
    assert len(works) == 42
    assert len(set(titles)) == 42
    assert titles == sorted(titles)
    assert "Hamlet" in titles and "Sonnets" in titles
    for title, body in works:
        assert "\r" not in body, title
        assert body.endswith("\n") and not body.endswith("\n\n"), title
        assert not body.startswith("\n"), title
        assert "gutenberg" not in body.lower(), title


def test_splits_disjoint_cover_all_and_near_80_10_10():
    titles = {s: split_titles(s) for s in SPLITS}
    assert titles["validation"] == VALIDATION
    assert titles["test"] == TEST
    all_titles = [t for t, _ in shakespeare_works()]
    joined = titles["train"] + titles["validation"] + titles["test"]
    assert sorted(joined) == sorted(all_titles)  # covers everything, no work twice
    lengths = dict(shakespeare_works())
    chars = {s: sum(len(lengths[t]) for t in titles[s]) for s in SPLITS}
    total = sum(chars.values())
    assert abs(chars["train"] / total - 0.8) < 0.01
    assert abs(chars["validation"] / total - 0.1) < 0.01
    assert abs(chars["test"] / total - 0.1) < 0.01
    # the concatenation is the works in title order, joined by "\n"
    for s in SPLITS:
        assert shakespeare(s) == "\n".join(lengths[t] for t in titles[s])
    with pytest.raises(ValueError, match="unknown split"):
        shakespeare("valid")


def test_missing_data_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROPC_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"shakespeare\.jsonl\.xz"):
        text._read_data("shakespeare.jsonl.xz")


def test_char_tokenizer_round_trips_test_split_and_maps_unknowns():
    tok = CharTokenizer.shakespeare()
    train_chars = sorted(set(shakespeare("train")))
    assert tok.chars == train_chars
    assert tok.vocab_size == len(train_chars) + 1
    assert tok.unk_id == len(train_chars)
    test_text = shakespeare("test")
    ids = tok.encode(test_text)
    assert ids.dtype == np.int64 and ids.shape == (len(test_text),)
    expected = "".join(c if c in train_chars else "<unk>" for c in test_text)
    assert tok.decode(ids) == expected
    # oracle for ids: position in the sorted training alphabet
    lookup = {c: i for i, c in enumerate(train_chars)}
    assert ids[:2000].tolist() == [lookup.get(c, tok.unk_id) for c in test_text[:2000]]
    assert "~" not in train_chars and "é" not in train_chars
    odd = tok.encode("a~é b")
    assert odd.tolist() == [lookup["a"], tok.unk_id, tok.unk_id, lookup[" "], lookup["b"]]
    assert tok.decode(odd) == "a<unk><unk> b"
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("vocab_size", [2000, 8001])
def test_shipped_bpe_loads_and_round_trips(vocab_size):
    pytest.importorskip("tokenizers")
    tok = BPETokenizer.load(vocab_size)
    assert tok.vocab_size == vocab_size
    passage = shakespeare("test")[:20000] + PASSAGE + "unseen: ~é€ 😀\t\r\n"
    ids = tok.encode(passage)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert 0 <= ids.min() and ids.max() < vocab_size
    assert len(ids) < len(passage) / 2  # BPE actually merges
    assert tok.decode(ids) == passage  # byte-level: exact


def test_bpe_train_is_deterministic():
    pytest.importorskip("tokenizers")
    corpus = shakespeare("validation")[:50000]
    a = BPETokenizer.train(corpus, 400)
    b = BPETokenizer.train(corpus, 400)
    assert a.to_json() == b.to_json()
    assert a.vocab_size == 400
    assert a.decode(a.encode(PASSAGE)) == PASSAGE
    c = BPETokenizer.from_json(a.to_json())
    assert c.encode(PASSAGE).tolist() == a.encode(PASSAGE).tolist()


def test_windows_shapes_and_shift():
    ids = np.arange(1000, dtype=np.int64) * 7 % 101
    rng = np.random.default_rng(0)
    x, y = windows(ids, 16, 32, rng)
    assert x.shape == y.shape == (32, 16)
    assert x.dtype == ids.dtype
    # oracle: each row is a direct slice of ids, and the target slice starts one later
    rng2 = np.random.default_rng(0)
    starts = rng2.integers(0, len(ids) - 16, size=32)
    for row, s in enumerate(starts):
        np.testing.assert_array_equal(x[row], ids[s : s + 16])
        np.testing.assert_array_equal(y[row], ids[s + 1 : s + 17])
    # the last possible window is reachable and never runs off the end
    short = np.arange(5)
    x, y = windows(short, 4, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(x, np.tile(short[:4], (50, 1)))
    np.testing.assert_array_equal(y, np.tile(short[1:], (50, 1)))
    with pytest.raises(ValueError):
        windows(np.arange(4), 4, 1, rng)


@pytest.mark.parametrize("n", [101, 100, 99, 11])
def test_eval_windows_cover_text(n):
    ids = np.arange(n, dtype=np.int64)
    x, y = eval_windows(ids, 10)
    k = (n - 1) // 10  # every window needs seq_len + 1 tokens (its last target)
    assert x.shape == y.shape == (k, 10)
    np.testing.assert_array_equal(x.ravel(), ids[: k * 10])
    np.testing.assert_array_equal(y.ravel(), ids[1 : k * 10 + 1])


def test_perplexity_of_uniform_model_is_vocab_size():
    for v in (2, 85, 8001):
        n = 1234
        assert perplexity(n * math.log(v), n) == pytest.approx(v, rel=1e-12)
    assert perplexity(0.0, 10) == 1.0
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_bpe_without_tokenizers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError, match=r"pip install neuropc\[text\]"):
        BPETokenizer.train("abc", 300)
