"""Shared command line of model scripts, and the one-line error rule of every command.

Every script in ``models/`` runs as ``python models/NAME.py`` and as ``neuropc run models/NAME.py``
with the same options::

    --backend NAME   backend to simulate with: numba (default) or torch
    --seed N         seed of everything random, an integer >= 0 (default 0)
    --quick          a small, fast version (the test suite runs every script this way)
    --json           print the run's final metrics as one JSON object on the last line
    --out DIR        where figures and files go (default runs/NAME)
    --record PATH    record the run's simulators to HDF5 (PATH, then PATH-2, ...)
    --record-preset  what --record records: energy, settled (default) or steps

``neuropc run SCRIPT --nproc N`` runs it as N data-parallel ranks (:mod:`neuropc.distributed`):
rank 0 prints and writes to ``--out``; rank ``r > 0`` writes to ``--out``'s ``rank<r>`` folder and
records to ``PATH-rank<r>``.

``--record`` arms nothing process-wide: :func:`script_args` puts a :class:`ScriptRecordings` in
``args.recordings``, and the script hands it each simulator it builds
(``args.recordings.attach(sim)``); :func:`report` closes those recordings. A script that records
with its own probes takes the path instead (``args.recordings.next_path()``).

A user error (a bad option value, a missing or unwritable path, a bad setting that neuropc
rejects with a ``ValueError``) is one line on stderr, ``PROG: message``, and exit status 2
(:class:`ArgumentParser`, :func:`exit_status`, :func:`run_main`); other exceptions are bugs and
keep their traceback. ``NEUROPC_TRACEBACK=1`` shows the traceback of user errors too.

Scripts report progress with :func:`progress_line` (e.g. ``epoch 3/10  energy=0.41
seconds=1.2``, through :func:`epoch_printer` as a ``fit`` callback) and name every file they
write by its absolute path (:func:`wrote`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from .backends import BACKENDS
from .distributed import env_rank
from .errors import DivergenceError, RecordingError

# the progress helpers, re-exported for model scripts
from .progress import epoch_printer, print_progress, progress_bars, progress_line  # noqa: F401

#: Exceptions that signal a user error (bad settings, paths or files; a diverging run): one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, OSError, RecordingError, DivergenceError,
)  # fmt: skip


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line on stderr,
    ``PROG: message``, with exit status 2 (sub-parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)}\n")


def one_line(err: BaseException | str) -> str:
    """The message of ``err`` on one line; an ``OSError`` as ``reason: path``."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename is not None else "")
        if err.filename2 is not None:
            text += f" -> {err.filename2}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def exit_status(
    prog: str,
    fn: Callable[[], object],
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
) -> int:
    """Call ``fn``: its result when it is an int, else 0. A user error (one of ``errors``) is
    printed as one line ``PROG: message`` on stderr and gives 2; other exceptions propagate
    (bugs keep their traceback), as do user errors when ``NEUROPC_TRACEBACK`` is set."""
    try:
        rc = fn()
    except errors as err:
        if os.environ.get("NEUROPC_TRACEBACK"):
            raise
        print(f"{prog}: {one_line(err)}", file=sys.stderr, flush=True)
        return 2
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


def run_main(main: Callable[[], object]) -> NoReturn:
    """A model or analysis script's entry point: ``if __name__ == "__main__": run_main(main)``.
    Exits with :func:`exit_status` of ``main`` under the script's file name."""
    sys.exit(exit_status(Path(sys.argv[0]).name or "neuropc", main))


def _integer(s: str, low: int, what: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}; got {s!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"expected {what}; got {s!r}")
    return v


def positive_int(s: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(s, 1, "an integer >= 1")


def nonnegative_int(s: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(s, 0, "an integer >= 0")


def nonnegative_float(s: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {s!r}")
    return v


def _existing_ancestor(p: Path) -> Path:
    """``p`` or its nearest ancestor that exists."""
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is a directory that exists or can be
    created there and written to; else a ``ValueError`` naming ``option`` and the path."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option}: expected a directory; {str(p)!r} is a file")
    _check_writable(p, option)
    return p


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` when a file can be written there (it is not a
    directory and its folder exists or can be created, writable); else a ``ValueError``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option}: expected a file; {str(p)!r} is a directory")
    _check_writable(p.parent, option, for_file=p)
    return p


def _check_writable(d: Path, option: str, for_file: Path | None = None) -> None:
    base = _existing_ancestor(d)
    shown = repr(str(for_file if for_file is not None else d))
    if not base.is_dir():
        raise ValueError(f"{option}: cannot create {shown}: {str(base)!r} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: cannot write {shown}: {str(base)!r} is not writable")


def check_input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is an existing file; else a one-line
    ``ValueError`` (no such file, or a directory given where a file is expected)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"expected a {what}; {str(p)!r} is a directory")
    if not p.is_file():
        raise ValueError(f"no such {what}: {str(p)!r}")
    return p


def add_script_options(
    ap: argparse.ArgumentParser, *, pass_through: bool = False
) -> list[argparse.Action]:
    """Add the common options of model scripts (see the module docstring) to ``ap``; returns
    their actions. ``pass_through``: no defaults (an option not given is absent from the
    namespace), for ``neuropc run``, which hands the given ones on with :func:`script_argv`."""

    def d(value: object) -> object:
        return argparse.SUPPRESS if pass_through else value

    return [
        ap.add_argument("--backend", default=d("numba"), choices=BACKENDS,
                        help="backend (default: numba)"),
        ap.add_argument("--seed", type=nonnegative_int, default=d(0), help="seed (default: 0)"),
        ap.add_argument("--quick", action="store_true", default=d(False),
                        help="small fast run (used by the test suite)"),
        ap.add_argument("--json", action="store_true", default=d(False),
                        help="print final metrics as JSON on the last line"),
        ap.add_argument("--out", default=d(None), metavar="DIR",
                        help="output directory for figures and files (default: runs/NAME)"),
        ap.add_argument("--record", default=d(None), metavar="PATH",
                        help="record the run to this HDF5 file"),
        ap.add_argument("--record-preset", default=d("settled"),
                        choices=["energy", "settled", "steps"],
                        help="what --record records (default: energies and settled states)"),
    ]  # fmt: skip


def script_argv(args: argparse.Namespace, actions: Sequence[argparse.Action]) -> list[str]:
    """The command-line form of the options of ``actions`` present in ``args``."""
    out: list[str] = []
    for act in actions:
        if hasattr(args, act.dest):
            v = getattr(args, act.dest)
            if act.nargs == 0:  # a flag
                out += [act.option_strings[0]] if v else []
            elif v is not None:
                out += [act.option_strings[0], str(v)]
    return out


def script_args(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    name: str | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse the common options (see the module docstring), plus the script's own ones that
    ``extra(parser)`` adds. A bad option, an ``--out`` that is not a writable directory or a
    ``--record`` that cannot be written is one line on stderr and exit status 2.
    ``args.recordings`` is the :class:`ScriptRecordings` of ``--record`` (empty without it)."""
    ap = ArgumentParser(description=description)
    add_script_options(ap)
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    stem = name or Path(sys.argv[0]).stem or "model"
    out = args.out if args.out is not None else os.path.join("runs", stem)
    rank = env_rank()
    if rank > 0:  # a data-parallel rank's own files (neuropc.distributed): beside rank 0's
        out = os.path.join(out, f"rank{rank}")
        if args.record:
            base, ext = os.path.splitext(args.record)
            args.record = f"{base}-rank{rank}{ext}"
    try:
        args.out = check_output_dir(out, "--out")
        if args.record:
            check_output_file(args.record, "--record")
    except ValueError as err:
        ap.error(str(err))
    args.recordings = ScriptRecordings(args.record or None, args.record_preset)
    return args


class ScriptRecordings:
    """The recordings that ``--record PATH`` asks of a model script, owned by its ``args``
    (``args.recordings``). The script hands each simulator it builds to :meth:`attach`: the first
    records to ``PATH``, the n-th to ``<stem>-<n><suffix>`` beside it, with ``preset``. Without
    ``--record`` (``path`` None) nothing is recorded. :meth:`close` (called by :func:`report`,
    and at exit if the script stops early) closes them."""

    def __init__(self, path: str | os.PathLike | None, preset: str = "settled") -> None:
        if preset not in ("energy", "settled", "steps"):
            raise ValueError(f"record preset must be energy, settled or steps; got {preset!r}")
        self.path = None if path is None else os.fspath(path)
        self.preset = preset
        self.count = 0  # paths handed out
        self.open: list = []  # the Recorders attached and not closed yet

    def __bool__(self) -> bool:
        return self.path is not None

    def next_path(self) -> str | None:
        """The path of the next recording (``PATH``, then ``PATH-2``, ...), for a simulator the
        script records itself, with its own probes; None without ``--record``."""
        if self.path is None:
            return None
        self.count += 1
        # --record was checked to be creatable (check_output_file): create its folder now
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self.count == 1:
            return self.path
        stem, ext = os.path.splitext(self.path)
        return f"{stem}-{self.count}{ext or '.h5'}"

    def attach(self, sim):
        """Record ``sim``'s runs from now on to :meth:`next_path` with the preset; returns the
        :class:`~neuropc.record.recording.Recorder`, or None without ``--record`` or when
        ``sim`` already records (the script chose its probes: that recording is kept)."""
        if self.path is None or sim.recorder is not None:
            return None
        rec = sim.record(self.next_path(), preset=self.preset)
        if not self.open:
            atexit.register(self.close)
        self.open.append(rec)
        return rec

    def close(self) -> list[str]:
        """Close the recordings made by :meth:`attach`; returns their paths."""
        open_, self.open = self.open, []
        atexit.unregister(self.close)
        for rec in open_:
            rec.close()
        return [rec.path for rec in open_]


def wrote(path: str | os.PathLike) -> Path:
    """Print ``wrote /absolute/path`` for a file a script has written; returns the absolute
    path."""
    p = Path(os.path.abspath(path))
    print(f"wrote {p}", flush=True)
    return p


def report(metrics: dict, args: argparse.Namespace) -> dict:
    """Print a readable summary, then (with ``--json``) one JSON object as the last line."""
    clean = {k: _plain(v) for k, v in metrics.items()}
    width = max((len(k) for k in clean), default=0)
    for k, v in clean.items():
        print(f"  {k:<{width}}  {v:.6g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    recordings = getattr(args, "recordings", None)
    if recordings:
        paths = recordings.close()
        for path in paths:
            print(f"  recorded to {os.path.abspath(path)}")
        if not recordings.count:  # the script never asked for the --record path: say so
            print(f"warning: --record {recordings.path}: this script attached no simulator, "
                  "nothing was recorded", file=sys.stderr, flush=True)  # fmt: skip
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


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, for a script's figures; None, after saying so,
    when matplotlib is not installed (a script then writes its numbers but no figure)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return None
    return plt


def save_figure(fig, path: str | os.PathLike, *, tight: bool = True) -> str:
    """Save a script's pyplot figure at 110 dpi (after ``tight_layout`` unless ``tight=False``),
    close it, and return the path."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block, or decorate a script's ``main``, with torch on ``n`` threads, restoring the
    previous count afterwards: a script run in-process (tests) must not change the pool of the
    code that runs after it. One thread where a script's torch work is small or shares the
    machine with numba's BLAS (two pools spinning against each other on 2 cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
