"""Shared command line of model scripts.

Every script in ``models/`` runs as ``python models/NAME.py`` and as ``neuropc run models/NAME.py``
with the same options::

    --backend NAME   backend to simulate with (default numba)
    --seed N         seed of everything random (default 0)
    --quick          a small, fast version (the test suite runs every script this way)
    --json           print the run's final metrics as one JSON object on the last line
    --out DIR        where figures and files go (default runs/NAME)
    --record PATH    record every simulator of the run to HDF5 (PATH, then PATH-2, ...)
    --record-preset  what --record records: energy, settled (default) or steps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def script_args(
    description: str, argv: Sequence[str] | None = None, *, name: str | None = None
) -> argparse.Namespace:
    """Parse the common options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--backend", default="numba", help="backend (default: numba)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    ap.add_argument("--quick", action="store_true", help="small fast run (used by the test suite)")
    ap.add_argument(
        "--json", action="store_true", help="print final metrics as JSON on the last line"
    )
    ap.add_argument("--out", default=None, help="output directory for figures (default: runs/NAME)")
    ap.add_argument("--record", default=None, help="record the run to this HDF5 file")
    ap.add_argument(
        "--record-preset", default="settled", choices=["energy", "settled", "steps"],
        help="what --record records (default: energies and settled states)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.record:
        from .recording import record_all

        record_all(args.record, args.record_preset)
    stem = name or Path(sys.argv[0]).stem or "model"
    args.out = Path(args.out if args.out is not None else os.path.join("runs", stem))
    return args


def report(metrics: dict, args: argparse.Namespace) -> dict:
    """Print a readable summary, then (with ``--json``) one JSON object as the last line."""
    clean = {k: _plain(v) for k, v in metrics.items()}
    width = max((len(k) for k in clean), default=0)
    for k, v in clean.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    if getattr(args, "record", None):
        from .recording import close_all

        for path in close_all():
            print(f"  recorded to {path}")
    if args.json:
        print(json.dumps(clean, sort_keys=True), flush=True)
    return clean


def _plain(v: object) -> object:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v
