"""``neuropc`` command line: ``run`` a model script, ``bench`` the PC training step, and
``inspect``, ``plot`` and ``export`` recordings.

A user error (a bad option value, a missing file, a directory where a file is expected, an
unwritable output path, a setting neuropc rejects) is one line on stderr, ``neuropc CMD:
message``, and exit status 2; other exceptions are bugs and keep their traceback
(``NEUROPC_TRACEBACK=1`` shows it for user errors too)."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .backends import BACKENDS
from .model.activations import NAMES as ACTIVATIONS
from .runner import (
    USER_ERRORS,
    ArgumentParser,
    add_script_options,
    check_input_file,
    check_output_dir,
    check_output_file,
    exit_status,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    script_argv,
)


def _sizes(s: str) -> list[int]:
    """argparse type of ``--sizes``: at least two comma-separated integers >= 1."""
    try:
        sizes = [int(v) for v in s.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least two comma-separated integers >= 1 (e.g. 784,128,10); got {s!r}"
        )
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for a user error, printed as one line)."""
    ap = ArgumentParser(prog="neuropc", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a model script (same as python SCRIPT ...)")
    r.add_argument("script")
    r.add_argument(
        "--nproc", type=positive_int, default=1,
        help="data-parallel training in N processes on this machine (torch.distributed, gloo; "
        "see neuropc.distributed)",
    )  # fmt: skip
    script_options = add_script_options(r, pass_through=True)

    i = sub.add_parser(
        "inspect", help="describe a recording (tree, shapes, units, metadata) or a checkpoint"
    )
    i.add_argument("file")

    p = sub.add_parser("plot", help="save PNG figures of a recording")
    p.add_argument("file")
    p.add_argument("--out", default=None, help="directory (default: FILE's stem + _plots)")

    e = sub.add_parser("export", help="export a recording to NWB or a SONATA report view")
    e.add_argument("file")
    e.add_argument("--nwb", default=None, metavar="OUT", help="write NWB (needs neuropc[nwb])")
    e.add_argument("--sonata", default=None, metavar="DIR", help="write SONATA report views")

    b = sub.add_parser("bench", help="time a PC training minibatch on an MLP (or the LM)")
    b.add_argument(
        "--model", default="mlp", choices=["mlp", "transformer"],
        help="mlp (default: --sizes) or transformer (the one-block PC language model, torch "
        "backend; times PC-F_KL against backprop of the same network; --vocab, --seq)",
    )  # fmt: skip
    b.add_argument("--vocab", type=positive_int, default=85, help="transformer: vocabulary")
    b.add_argument("--seq", type=positive_int, default=32, help="transformer: sequence length")
    b.add_argument("--sizes", type=_sizes, default=[784, 128, 128, 10])
    b.add_argument("--activation", default="tanh", choices=ACTIVATIONS)
    b.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (default 128; 32 sequences for the transformer)")  # fmt: skip
    b.add_argument("--steps", type=nonnegative_int, default=20)
    b.add_argument("--rate", type=nonnegative_float, default=0.1)
    b.add_argument("--backend", default="numba", choices=BACKENDS)
    b.add_argument("--device", default=None, help="cpu or cuda (torch backend)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--timed", type=positive_int, default=50, help="timed batches (default 50)")
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
    b.add_argument(
        "--output", default="gaussian", choices=["gaussian", "categorical", "bernoulli"],
        help="the output population's distribution (default: gaussian)",
    )  # fmt: skip
    b.add_argument(
        "--precision", default="fixed", choices=["fixed", "scalar", "diag", "full"],
        help="a learned precision (EMA rule) on every Gaussian population (default: fixed)",
    )  # fmt: skip
    b.add_argument(
        "--optimizer", default="adam", choices=["adam", "sgd", "ngd"],
        help="adam (default), sgd or ngd (natural gradient); other than adam, also times the "
        "same network learning with Adam and reports over_adam",
    )  # fmt: skip
    b.add_argument(
        "--temperature", type=float, default=0.0,
        help="Langevin inference at this temperature; reports over_plain (against plain PC)",
    )  # fmt: skip
    b.add_argument(
        "--precondition", action="store_true",
        help="precondition inference (npc.Preconditioner()); reports over_plain",
    )  # fmt: skip
    b.add_argument(
        "--timescale", default="slow", choices=["slow", "fast"],
        help="with --precision: learned across batches, or also re-estimated at every step",
    )  # fmt: skip
    b.add_argument(
        "--with-torch-load", action="store_true",
        help="also time batches right after torch work in the same process (over_without_torch)",
    )  # fmt: skip
    b.add_argument(
        "--profile", action="store_true",
        help="also print where a batch's time goes: gemm, elementwise, optimizer, python",
    )  # fmt: skip
    b.add_argument("--json", action="store_true")

    try:
        args, rest = ap.parse_known_args(argv)
        if rest and args.cmd != "run":
            sub.choices[args.cmd].error(f"unrecognized arguments: {' '.join(rest)}")
    except SystemExit as stop:  # usage errors (one line, status 2) and --help (status 0)
        return _status(stop.code)
    prog = f"neuropc {args.cmd}"
    if args.cmd == "run":
        return exit_status(prog, lambda: _run(args, rest, script_options))
    if args.cmd == "bench":
        return exit_status(prog, lambda: _bench(args))
    # a missing optional dependency (matplotlib, pynwb, libsonata) is one line too
    return exit_status(prog, lambda: _recording_command(args), (*USER_ERRORS, ImportError))


def _status(code: object) -> int:
    """The exit status of ``SystemExit(code)``; a message (a str) is printed to stderr, as the
    interpreter would, and gives 1."""
    if code is None or isinstance(code, int):
        return int(code or 0)
    print(code, file=sys.stderr)
    return 1


def _print_paths(paths: Iterable[str | os.PathLike]) -> None:
    """The files a command wrote, one absolute path per line."""
    for path in paths:
        print(os.path.abspath(path))


def _recording_command(args: argparse.Namespace) -> int:
    """inspect / plot / export a recording (a bad file raises a one-line error)."""
    check_input_file(args.file)
    if args.cmd == "inspect":
        from . import checkpoint
        from .record.export import describe

        # checkpoints and recordings are both HDF5; the root attribute "format" tells them apart
        is_ck = checkpoint.is_checkpoint(args.file)
        print(checkpoint.describe(args.file) if is_ck else describe(args.file))
    elif args.cmd == "plot":
        from .analysis.plotting import plot_file

        out = args.out or str(Path(args.file).with_suffix("")) + "_plots"
        check_output_dir(out, "--out")
        _print_paths(plot_file(args.file, out))
    else:
        if not (args.nwb or args.sonata):
            raise ValueError("give --nwb OUT and/or --sonata DIR")
        if args.nwb:
            check_output_file(args.nwb, "--nwb")
        if args.sonata:
            check_output_dir(args.sonata, "--sonata")
        from .record import export

        if args.nwb:
            _print_paths([export.to_nwb(args.file, args.nwb)])
        if args.sonata:
            _print_paths(export.to_sonata(args.file, args.sonata))
    return 0


def _run(args: argparse.Namespace, rest: list[str], options: list[argparse.Action]) -> int:
    """Run the script as ``__main__`` with the given options (and any others it defines)."""
    script = check_input_file(args.script, "script")
    argv = [str(script), *script_argv(args, options), *rest]
    if args.nproc > 1:
        from .distributed import launch

        return launch(argv, args.nproc)
    old = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return _status(e.code)
    finally:
        sys.argv = old
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import NOTES, run, run_transformer

    if args.model == "transformer":
        res = run_transformer(
            vocab=args.vocab, seq=args.seq, batch=args.batch or 32, steps=args.steps,
            rate=args.rate, device=args.device, dtype=args.dtype, timed=args.timed,
            compile=args.compile,
        )  # fmt: skip
        return _print_bench(res, args.json, NOTES)
    res = run(
        args.sizes, activation=args.activation, batch=args.batch or 128, steps=args.steps,
        rate=args.rate, backend=args.backend, device=args.device, dtype=args.dtype, timed=args.timed,
        bp=not args.no_bp, record=args.record, compile=args.compile, output=args.output,
        precision=args.precision, timescale=args.timescale, optimizer=args.optimizer,
        temperature=args.temperature, precondition=args.precondition,
        profile_batch=args.profile, torch_load=args.with_torch_load,
    )  # fmt: skip
    return _print_bench(res, args.json, NOTES)


def _print_bench(res: dict, as_json: bool, notes: dict) -> int:
    if as_json:
        print(json.dumps(res, sort_keys=True))
    else:
        for k, v in res.items():
            text = f"{v:.4g}" if isinstance(v, float) else f"{v}"
            note = f"  ({notes[k]})" if k in notes else ""
            print(f"{k:>27}: {text}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
