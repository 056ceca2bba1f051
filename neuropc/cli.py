"""``neuropc`` command line: ``run`` a model script, ``bench`` the PC training step, and
``inspect``, ``plot`` and ``export`` recordings."""

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
    r.add_argument("--record", default=None, metavar="PATH", help="record the run to HDF5")
    r.add_argument("--record-preset", default=None, choices=["energy", "settled", "steps"])

    i = sub.add_parser("inspect", help="print a recording's tree, shapes, units and metadata")
    i.add_argument("file")

    p = sub.add_parser("plot", help="save PNG figures of a recording")
    p.add_argument("file")
    p.add_argument("--out", default=None, help="directory (default: FILE's stem + _plots)")

    e = sub.add_parser("export", help="export a recording to NWB or a SONATA report view")
    e.add_argument("file")
    e.add_argument("--nwb", default=None, metavar="OUT", help="write NWB (needs neuropc[nwb])")
    e.add_argument("--sonata", default=None, metavar="DIR", help="write SONATA report views")

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
    b.add_argument(
        "--no-bp", action="store_true",
        help="skip the torch references (backprop and hand-written PC steps)",
    )  # fmt: skip
    b.add_argument(
        "--compile", nargs="?", const=True, default=False, metavar="MODE",
        help="torch backend: inference steps through torch.compile (optionally a mode)",
    )  # fmt: skip
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
    if args.cmd == "bench":
        return _bench(args)
    return _recording_command(args)


def _recording_command(args: argparse.Namespace) -> int:
    """inspect / plot / export; a bad file is one clear line on stderr and exit status 1."""
    from .errors import RecordingError

    try:
        if args.cmd == "inspect":
            from .export import describe

            print(describe(args.file))
        elif args.cmd == "plot":
            from .plotting import plot_file

            out = args.out or str(Path(args.file).with_suffix("")) + "_plots"
            for path in plot_file(args.file, out):
                print(path)
        else:
            if not (args.nwb or args.sonata):
                print("neuropc export: give --nwb OUT and/or --sonata DIR", file=sys.stderr)
                return 2
            from . import export

            if args.nwb:
                print(export.to_nwb(args.file, args.nwb))
            if args.sonata:
                for path in export.to_sonata(args.file, args.sonata):
                    print(path)
    except (RecordingError, ImportError) as err:
        print(f"neuropc {args.cmd}: {err}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace, rest: list[str]) -> int:
    script = Path(args.script)
    if not script.is_file():
        print(f"neuropc run: no such script: {script}", file=sys.stderr)
        return 2
    argv = [str(script)]
    for flag in ("backend", "seed", "out", "record", "record_preset"):
        v = getattr(args, flag)
        if v is not None:
            argv += [f"--{flag.replace('_', '-')}", str(v)]
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
        bp=not args.no_bp, record=args.record, compile=args.compile,
    )  # fmt: skip
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        for k, v in res.items():
            print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
