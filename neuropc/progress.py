"""Progress output shared by the simulator and the model scripts: one line per epoch or stage in
logs, and bars only where someone watches (a terminal or a Jupyter kernel)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping


def progress_line(label: str, metrics: Mapping[str, object]) -> str:
    """``label  key=value  key=value ...``: floats to 4 significant digits."""
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()]
    return "  ".join([label, *parts])


def print_progress(label: str, metrics: Mapping[str, object]) -> None:
    """Print :func:`progress_line` (flushed, so logs show it as it happens)."""
    print(progress_line(label, metrics), flush=True)


def epoch_printer(epochs: int, prefix: str = "") -> Callable[[dict], None]:
    """A ``callback`` for :meth:`Simulator.fit <neuropc.simulator.Simulator.fit>` (or the
    backprop twin's ``fit``) that prints ``[prefix ]epoch i/epochs  energy=...  seconds=...``
    after every epoch, from the epoch's record."""

    def callback(rec: dict) -> None:
        label = f"{prefix} " if prefix else ""
        rest = {k: v for k, v in rec.items() if k != "epoch"}
        print_progress(f"{label}epoch {rec['epoch']}/{epochs}", rest)

    return callback


def progress_bars() -> bool:
    """Whether progress bars should be drawn: stderr is a terminal, or a Jupyter kernel (whose
    bars are widgets); in logs and pipes only the per-epoch lines are printed."""
    stream = sys.stderr
    tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    return tty or "ipykernel" in sys.modules


def batch_bar(it, enabled: bool, desc: str):
    """``it`` wrapped in a tqdm bar of batches when ``enabled``, on a terminal, and tqdm (an
    optional extra) is installed; else ``it`` (logs and pipes get the per-epoch lines only)."""
    if not enabled or not progress_bars():
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, desc=desc, leave=False, unit="batch")
