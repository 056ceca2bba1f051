"""One batch through a simulator's backend: the inputs written, the schedule built and run, the
run checked, and the learning that follows it on the host (a natural-gradient step, learned
precisions, an amortised encoder's step). :class:`~neuropc.simulator.Simulator`'s ``infer``,
``learn``, ``gradients`` and ``fit`` all end here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import inputs as _in
from .backends.base import RunOutput
from .dynamics import natural_gradient as _ngd
from .dynamics import precision as _precision
from .dynamics import schedule as _schedule
from .dynamics.inference import Inference
from .dynamics.natural_gradient import NaturalGradient
from .dynamics.optim import Optimizer
from .errors import DivergenceError
from .record import recording as _recording

if TYPE_CHECKING:
    from .simulator import Simulator


def run(sim: Simulator, arrays, phase, vals, cfg: Inference, learn: Optimizer | None,
        grads: bool = False, b: int | None = None, trials=None,
        weight: int | None = None, readout: bool = True) -> RunOutput:  # fmt: skip
    """Run one batch (``arrays``: the clamped data, ``vals``: given values) and learn from it.
    ``readout=False``: the caller reads only the final energy (:attr:`Schedule.readout`; a
    recording, learned precisions and an amortised encoder still get the state). Data-parallel
    (``sim.distributed``), a learning batch is this rank's shard, of ``weight`` samples in the
    minibatch's mean (default: all of them; :mod:`neuropc.distributed`)."""
    if sim.network.version != sim._version:
        raise ValueError(
            "the network changed after the Simulator was built; build a new Simulator "
            "(parameters can be carried over with sim.parameters() / load_parameters())"
        )
    pl = sim.plan
    b = b or _in.batch_len(arrays)
    buf = sim.backend.values_buffer(b)
    clamped = sim._masks.get(phase)
    if clamped is None:
        clamped = sim._masks[phase] = pl.clamped_mask(phase)
    keep = clamped.copy()
    for name, a in arrays.items():
        buf[:, pl.value_slice(name)] = a
    seed = cfg.seed if cfg.seed is not None else int(sim.noise_rng.integers(0, 2**31 - 1))
    dp = sim.distributed
    if dp is not None:  # shards never share noise
        seed = dp.seed(seed)
    dp_learn = dp if learn is not None else None
    if dp_learn is not None:
        dp.check(sim, cfg, learn)
        weight = b if weight is None else weight
    amortised = cfg.init == "amortised"
    enc_x = None
    if amortised:  # the encoder's warm start: given values of its targets
        enc = check_amortised(sim, phase, clamped, learn)
        enc_x = enc.inputs(arrays)
        vals = enc.warm_start(enc_x, seed, cfg.init_sample is not False)
    for name, a in (vals or {}).items():
        buf[:, pl.value_slice(name)] = a
        keep[pl.index(name)] = True
    enc_learns = amortised and learn is not None
    objective = sim.network.encoder_spec.objective if enc_learns else None
    moments = objective in ("forward_kl", "jeffreys")  # fitted to the chain's samples
    # the decoder before the batch, for the objectives that evaluate the energy at q's samples
    theta = sim.parameters() if objective in ("reverse_kl", "jeffreys") else None
    # a natural-gradient step, and a data-parallel one (after the all-reduce), run after the
    # kernels' gradients
    kernel_learn = None if isinstance(learn, NaturalGradient) or dp_learn else learn
    rec = sim._recorder
    recording = rec is not None and rec.active(phase)
    ctx = None
    if recording:
        ctx = _recording.batch_context(rec, sim, arrays, phase, cfg, seed, learn is not None)
        grads = grads or "P0" in ctx
    # (the state's readers besides the caller: the recorder, precision and encoder steps)
    readout = readout or recording or bool(sim._precisions) or amortised
    # (a natural-gradient step needs the kernels' gradients without their optimiser step)
    sched = schedule(sim, clamped, keep, cfg, kernel_learn is not None, grads or learn is not None,
                     moments, readout)  # fmt: skip
    trace = rec.trace_spec(phase, b) if recording else None
    out = sim.backend.run(b, sched, seed, learn=kernel_learn, trace=trace)
    total = check_run(sim, out, phase, dp_learn, weight)
    if learn is not None:
        reduce = None
        if dp_learn is not None:
            reduce = _data_parallel_step(sim, out, learn, weight, total, phase)
        undo_encoder = None
        if enc_learns:
            undo_encoder = _encoder_step(sim, out, arrays, enc_x, sched, theta, learn, seed,
                                         phase, reduce)  # fmt: skip
        learned(sim, out, phase, learn, undo_encoder, reduce)
    if recording:
        rows = _recording.batch_rows(rec, sim, ctx, out, learn is not None)
        rec.consume(out, phase, b, cfg, seed, trials, learn is not None, rows)
    return out


def schedule(sim: Simulator, clamped: np.ndarray, keep: np.ndarray, cfg: Inference,
             learning: bool, grads: bool, moments: bool,
             readout: bool = True) -> _schedule.Schedule:  # fmt: skip
    """:func:`neuropc.dynamics.schedule.build` for this batch, from the simulator's cache: a run
    depends only on these arguments (the plan is fixed for the simulator's life, ``Inference`` and
    ``Schedule`` are frozen), and building one (validating ``cfg`` against the plan) cost about
    0.05 ms of a 2.2 ms numba batch. A configuration that fails to build is not cached, so it
    raises again every time."""
    key = (clamped.tobytes(), keep.tobytes(), cfg, learning, grads, moments, readout)
    sched = sim._schedules.get(key)
    if sched is None:
        sched = _schedule.build(sim.plan, clamped, keep, cfg, learning=learning, grads=grads,
                                moments=moments, readout=readout)  # fmt: skip
        if len(sim._schedules) >= 32:  # a few configurations alternate (train, test, ...)
            sim._schedules.pop(next(iter(sim._schedules)))
        sim._schedules[key] = sched
    return sched


def check_amortised(sim: Simulator, phase: str, clamped: np.ndarray, learn):
    """The simulator's encoder, after checking that ``Inference(init="amortised")`` can use it
    in ``phase``: one is declared, its targets are free and its sources clamped, and (to learn
    with a reverse-KL part) its targets are every free population."""
    enc = sim._encoder
    if enc is None:
        raise ValueError(
            "Inference(init='amortised') needs an encoder: declare one with "
            "net.encoder(source=..., targets=[...]) before building the Simulator"
        )
    pl, spec = sim.plan, enc.spec
    for t in spec.targets:
        if clamped[pl.index(t)]:
            raise ValueError(
                f"encoder target {t!r} is clamped in phase {phase!r}: an amortised warm start "
                "initialises free latent populations only"
            )
    for s in spec.sources:
        if not clamped[pl.index(s)]:
            raise ValueError(
                f"encoder source {s!r} is not clamped in phase {phase!r}: the encoder reads data "
                "(clamp it, e.g. role='input')"
            )
    if learn is not None and isinstance(learn, NaturalGradient):
        raise ValueError(
            "the encoder learns with npc.SGD or npc.Adam; npc.NaturalGradient applies to the "
            "network's connections only"
        )
    if learn is not None and spec.objective != "forward_kl":
        others = [n for i, n in enumerate(pl.names) if not clamped[i] and n not in spec.targets]
        if others:
            raise ValueError(
                f"encoder objective {spec.objective!r} evaluates the energy at samples of q, so "
                f"the encoder's targets must be every free population; {others[0]!r} is free in "
                f"phase {phase!r} but not a target (add it to targets, or use objective="
                "'forward_kl')"
            )
    return enc


def _data_parallel_step(sim: Simulator, out, learn, weight: int, total: int, phase: str):
    """The optimiser step on the minibatch's gradients (:func:`check_run` all-reduced them), and
    the reductions for the host's learning after it (:mod:`neuropc.distributed`)."""
    dp, backend = sim.distributed, sim.backend
    bad = backend.step(learn)  # (out.grads, the backend's buffer, now holds the minibatch's)
    if bad >= 0:
        name, index = sim.plan.locate(bad)
        raise DivergenceError(None, None, phase, parameter=name, index=index)
    return {"array": lambda a: dp.mean_array(a, weight, total),
            "tensors": lambda ts: dp.mean_tensors(ts, weight, total)}  # fmt: skip


def _encoder_step(sim, out, arrays, x, sched, theta, learn, seed, phase, reduce=None):
    """The encoder's optimiser step after the batch's run; returns its undo. If it diverges, the
    batch's decoder step is undone too before the error propagates."""
    enc, pl = sim._encoder, sim.plan
    cols = np.concatenate([np.arange(pl.value_slice(t).start, pl.value_slice(t).stop)
                           for t in enc.spec.targets])  # fmt: skip
    if out.moments is not None:
        m1, m2 = out.moments[0][:, cols], out.moments[1][:, cols]
    else:  # S = {the final state}
        z = np.asarray(out.values[:, cols], np.float64)
        m1, m2 = z, z * z
    clamped = [n for i, n in enumerate(pl.names) if sched.clamped[i]]
    try:
        enc.learn(x, m1, m2, arrays, clamped, theta, learn, seed, phase,
                  reduce["tensors"] if reduce else None)  # fmt: skip
    except DivergenceError:
        sim.backend.undo_step()
        raise
    return enc.undo


def learned(sim: Simulator, out, phase: str, learn: Optimizer, undo_encoder=None,
            reduce=None) -> None:  # fmt: skip
    """After a learning batch's run: a natural-gradient step (the kernels ran none), then the
    learned precisions' steps; a diverging precision undoes the batch's weight (and encoder)
    update. ``reduce``: data-parallel training's reductions (:func:`_data_parallel_step`)."""
    undo = sim.backend.undo_step
    if isinstance(learn, NaturalGradient):  # its factors, kept per settings
        state = sim._ngd.setdefault(learn, _ngd.NGDState(learn, sim.plan))
        undo = _ngd.host_step(state, sim.backend, phase)
    if undo_encoder is not None:
        undo_weights = undo

        def undo() -> None:
            undo_weights()
            undo_encoder()

    _precision.learn(sim._precisions, out, sim.plan, sim.backend, undo, phase,
                     reduce["array"] if reduce else None)  # fmt: skip


def check_run(sim: Simulator, out, phase: str, dp=None, weight: int = 0) -> int | None:
    """Raise :class:`DivergenceError` for a non-finite energy (inference) or an optimiser step
    that would have made a parameter non-finite (the backend left it unapplied). Adds the
    ``-1/2 log det Pi`` of Precision parameters to the reported energies. With ``dp`` (a
    data-parallel learning batch) the ranks first all-reduce the gradients: any rank's
    divergence raises on all, ``out.mean_energy`` becomes the minibatch's, and the total weight
    is returned."""
    for st in sim._precisions.values():
        if st.spec.timescale == "slow":  # (the kernels add a fast precision's, per step)
            out.energies[:, st.index] -= 0.5 * st.logdet()
    total = None
    if dp is not None:
        failed = out.bad_step >= 0
        energy = 0.0 if failed else float(np.sum(out.energies[-1]))
        grads = sim.backend.gradient_tensor()
        total, out.mean_energy = dp.reduce_batch(weight, failed, energy, grads, phase)
    if out.bad_step >= 0:
        raise DivergenceError(out.bad_step, sim.plan.names[out.bad_pop], phase,
                              rank=dp.rank if dp is not None else None)  # fmt: skip
    if out.bad_param >= 0:
        name, index = sim.plan.locate(out.bad_param)
        raise DivergenceError(None, None, phase, parameter=name, index=index)
    return total
