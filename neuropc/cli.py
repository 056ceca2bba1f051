"""``neuropc`` command line: ``run`` a model script, ``bench`` the PC training step."""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path


def _sizes(s: str) -> list[int]:
    try:
        sizes = [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes must be comma-separated integers; got {s!r}"
        ) from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs at least two positive sizes; got {s!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="neuropc", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a model script (same as python SCRIPT ...)")
    r.add_argument("script")
    r.add_argument("--backend", default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--json", action="store_true")
    r.add_argument("--out", default=None)

    b = sub.add_parser("bench", help="time a PC training minibatch on an MLP")
    b.add_argument("--sizes", type=_sizes, default=[784, 128, 128, 10])
    b.add_argument("--activation", default="tanh")
    b.add_argument("--batch", type=int, default=128)
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--rate", type=float, default=0.1)
    b.add_argument("--backend", default="numba")
    b.add_argument("--device", default=None, help="cpu or cuda (torch backend)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--timed", type=int, default=50, help="timed batches (default 50)")
    b.add_argument("--no-bp", action="store_true", help="skip the torch backprop reference")
    b.add_argument(
        "--record", default="none", choices=["none", "settled", "steps"],
        help="also time recording energies + settled states, or full per-step traces",
    )  # fmt: skip
    b.add_argument("--json", action="store_true")

    args, rest = ap.parse_known_args(argv)
    if args.cmd == "run":
        return _run(args, rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return _bench(args)


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    script = Path(args.script)
    if not script.is_file():
        print(f"neuropc run: no such script: {script}", file=sys.stderr)
        return 2
    argv = [str(script)]
    for flag in ("backend", "seed", "out"):
        v = getattr(args, flag)
        if v is not None:
            argv += [f"--{flag}", str(v)]
    argv += [f"--{f}" for f in ("quick", "json") if getattr(args, f)]
    old = sys.argv
    sys.argv = argv + rest
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        sys.argv = old
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run

    res = run(
        args.sizes, activation=args.activation, batch=args.batch, steps=args.steps,
        rate=args.rate, backend=args.backend, device=args.device, dtype=args.dtype, timed=args.timed,
        bp=not args.no_bp, record=args.record,
    )  # fmt: skip
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        for k, v in res.items():
            print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
