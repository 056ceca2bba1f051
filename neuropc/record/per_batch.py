"""Per-batch variables (``precision``, ``weights``, ``updates``, ``alignment`` probes): what the
simulator computes for them around a batch, outside the recording's I/O.

:func:`batch_context` runs before the batch (it keeps the parameters for ``updates`` and computes
PC-vs-BP alignment with the pre-update parameters), :func:`batch_rows` after it; the rows go to
:meth:`Recorder.consume <neuropc.record.recording.Recorder.consume>` with the batch's traces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import RunOutput
from ..dynamics.inference import Inference

if TYPE_CHECKING:
    from .recording import Recorder


def batch_context(rec: Recorder, sim, arrays, phase: str, cfg: Inference, seed: int,
                  learned: bool) -> dict:  # fmt: skip
    """What per-batch probes need from before the batch runs: the parameters (for ``updates``)
    and PC-vs-BP alignment (computed on the batch with the pre-update parameters and the batch's
    noise seed, so the simulator's random streams are untouched)."""
    rec.check_run(phase, int(cfg.steps))  # before the batch runs: nothing to undo
    ctx: dict = {}
    due = [b for b in rec.per_batch if phase in b.probe.phases
           and rec.n_batches % b.probe.every == 0]  # fmt: skip
    if not due:
        return ctx
    ctx["due"] = due
    if any(b.probe.variable == "updates" for b in due):
        ctx["P0"] = sim.backend.get_params()
        if sim._encoder is not None:
            ctx["E0"] = sim._encoder.parameters()
    if learned and any(b.probe.variable == "alignment" for b in due):
        if cfg.mode == "ipc":
            raise ValueError(
                "alignment probes need an end-of-inference gradient; mode 'ipc' has none"
            )
        from ..analysis.alignment import gradient_alignment

        with sim._recording_paused():
            al = gradient_alignment(sim, arrays, inference=cfg.replace(seed=seed),
                                    steps=[cfg.steps])  # fmt: skip
        ctx["alignment"] = al
    return ctx


def batch_rows(rec: Recorder, sim, ctx: dict, out: RunOutput, learned: bool) -> dict:
    """One row per due per-batch probe, from the state after the batch."""
    rows: dict = {}
    if not ctx:
        return rows
    pl = sim.plan
    P1 = sim.backend.get_params() if any(b.probe.variable in ("weights", "updates")
                                        for b in ctx["due"]) else None  # fmt: skip
    grads = out.host_grads() if any(b.probe.variable == "updates" for b in ctx["due"]) else None
    for b in ctx["due"]:
        p = b.probe
        if p.variable == "precision":  # the current (possibly learned) value, per unit
            pi = np.asarray(sim.precision(p.target), np.float64)
            per_unit = (
                np.diag(pi)
                if pi.ndim == 2
                else np.broadcast_to(pi, (pl.sizes[pl.index(p.target)],))
            )
            rows[p.name] = per_unit[b.units]
            continue
        encoder = p.target in pl.encoder_params
        if b.conn < 0 and not encoder:
            continue
        if encoder:  # an encoder parameter: its values live with the simulator's encoder
            w1, w0 = sim._encoder.parameters()[p.target], ctx.get("E0", {}).get(p.target)
            g = np.full(1, np.nan)  # (the encoder's objective gradient is not kept)
        else:
            sl, _ = pl.weight_slice(p.target)
            w1, w0 = P1[sl], ctx["P0"][sl] if "P0" in ctx else None
            g = grads[sl] if grads is not None else np.full(1, np.nan)
        if p.variable == "weights":
            w = w1
            rows[p.name] = [np.linalg.norm(w), w.mean(), w.std(), w.min(), w.max()]
        elif p.variable == "updates" and learned:
            dw = w1 - w0
            nw = np.linalg.norm(w0)
            rows[p.name] = [np.linalg.norm(dw), np.linalg.norm(g),
                            np.linalg.norm(dw) / nw if nw > 0 else np.nan]  # fmt: skip
        elif p.variable == "alignment" and "alignment" in ctx:
            al = ctx["alignment"]
            j = al.names.index(p.target)
            rows[p.name] = [al.cosine[-1, j], al.rel_error[-1, j], al.norm_ratio[-1, j]]
    return rows
