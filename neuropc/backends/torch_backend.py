"""Batched torch backend (CPU or CUDA): the same plan and the same dynamics as the numba kernels.

Populations are separate contiguous tensors; one batch is a Python loop over the inference steps
issuing a fixed set of batched ops per step (no host synchronisation per step unless ``tol`` is
set). Divergence is detected after the loop from the energy table, before any parameter changes.
Without the read-out (``Schedule.readout``) the table has only each chunk's last row, and a
non-finite one re-runs the batch with the whole table to name the first step.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ..dynamics.natural_gradient import NGDViews
from ..dynamics.optim import Optimizer
from ..dynamics.plan import Plan
from ..dynamics.schedule import AT_END, EACH_STEP, Schedule
from ..model.activations import NAMES, get, shaped_activation
from .base import Backend, RunOutput, TraceSpec, ngd_views
from .torch_operators import Connections
from .torch_precision import FastPrecisions
from .torch_relaxation import Relaxation, predict, stack
from .torch_state import ParameterState
from .torch_trace import TraceBuffers

# steps per call of the step function (eager runs the same chunks). Compiled, one call of 20
# steps took 8% off a batch of the standard task against four calls of 5 (784-128-128-10, CPU:
# each call pays dynamo's and the runtime wrapper's checks, and passes the state between graphs);
# it compiles in about 2.5x the time of 5 steps, and the test suite's compiled cases (whose runs
# are mostly shorter) as fast as before (docs/performance.md, issue 14, seventh round)
COMPILE_CHUNK = 20


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, plan: Plan, dtype: np.dtype, device: str | None = None, compile: bool | str = False
    ) -> None:
        super().__init__(plan, dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        device = device or "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        self.device = torch.device(device)
        if compile not in (False, True) and not isinstance(compile, str):
            raise ValueError(
                f"compile must be False, True or a torch.compile mode; got {compile!r}"
            )
        if compile is not False and not hasattr(torch.compiler, "keep_portable_guards_unsafe"):
            # (the compiled chunks' guard filter, Relaxation.chunk, is new in torch 2.10)
            raise ValueError(
                f"compile={compile!r} needs torch >= 2.10; this is torch {torch.__version__} "
                "(compile=False runs the same steps eagerly)"
            )
        # None: eager; else torch.compile keyword arguments for the inference steps
        self.compile = None if compile is False else {} if compile is True else {"mode": compile}
        self.tdt = torch.float64 if self.dtype == np.float64 else torch.float32
        kw = dict(dtype=self.tdt, device=self.device)
        n = plan.n_params
        # per connection: a flat dense one's weight matrix, else a dict of the operator's
        # parameters (views of the flat vectors)
        self.K = Connections(plan)
        # parameters and the optimiser's two state vectors, double-buffered on the CPU
        self.state = ParameterState(n, self._param_views, self.device.type == "cpu", **kw)
        self.G = torch.zeros(n, **kw)
        self.trainable = torch.as_tensor(plan.trainable, **kw)
        self.all_trainable = bool(np.all(plan.trainable))
        self.opt_t = 0
        self.sizes = sizes = [int(s) for s in plan.sizes]
        self.Gw, self.Gb = self._param_views(self.G)
        # None where the population has no error neurons or unit precision (no multiply)
        pis = [plan.precision[int(e) : int(e) + s] if e >= 0 else None
               for e, s in zip(plan.eoff, sizes)]  # fmt: skip
        # None for a fixed unit precision (no multiply); a tensor updated in place for a
        # Precision parameter (an (n, n) matrix when full), so compiled steps keep their inputs
        self.pi = [
            None if v is None or (np.all(v == 1.0) and k == 0)
            else torch.eye(len(v), **kw) if k == 3 else torch.tensor(v, **kw)  # (a copy)
            for v, k in zip(pis, plan.prec_kind)
        ]  # fmt: skip
        # the slow (parameter) precisions from which each run's fast ones start
        self._fast = FastPrecisions(plan, self.pi)
        self.acts = [
            shaped_activation(
                get(NAMES[int(c)], slope=float(a) if NAMES[int(c)] == "leaky_relu" else None),
                plan.shapes[p], plan.axes[p],
            )
            for p, (c, a) in enumerate(zip(plan.act_code, plan.act_param))
        ]  # fmt: skip
        self.inc = [
            [c for c in range(len(plan.cpre)) if plan.cpost[c] == p] for p in range(len(sizes))
        ]
        self.out = [
            [c for c in range(len(plan.cpre)) if p in plan.cpres[c]] for p in range(len(sizes))
        ]
        self._host: dict[tuple[str, int], np.ndarray] = {}
        self._relax_cache: dict[tuple, Relaxation] = {}

    @property
    def P(self) -> torch.Tensor:  # (the flat parameters, as in the numba backend)
        return self.state.current[0]

    @property
    def S1(self) -> torch.Tensor:
        return self.state.current[1]

    @property
    def S2(self) -> torch.Tensor:
        return self.state.current[2]

    @property
    def W(self) -> list:
        return self.state.W

    @property
    def bias(self) -> list:
        return self.state.bias

    def _param_views(self, flat: torch.Tensor) -> tuple[list, list]:
        """Per connection its parameters in ``flat`` (:meth:`_views`), and per population its
        bias (None without one)."""
        pl = self.plan
        return ([self._views(flat, c) for c in range(len(pl.conn_names))],
                [flat[int(o) : int(o) + s] if o >= 0 else None
                 for o, s in zip(pl.boff, (int(v) for v in pl.sizes))])  # fmt: skip

    def _views(self, flat: torch.Tensor, c: int):
        """Connection ``c``'s parameters in ``flat``: a flat dense one's ``(n_post, n_pre)``
        matrix, else ``{name: tensor}`` in the operator's shapes."""
        views = {
            k: flat[o : o + int(np.prod(shape))].view(shape)
            for k, (_, o, shape) in self.plan.cparams[c].items()
        }
        return views["W"] if self.K.flat[c] else views

    # ---- parameters -------------------------------------------------------------------------
    def get_params(self) -> np.ndarray:
        return self.P.detach().to("cpu", torch.float64).numpy().copy()

    def set_params(self, flat: np.ndarray) -> None:
        self.P.copy_(torch.as_tensor(np.asarray(flat, np.float64), dtype=self.tdt))

    def reset_optimizer(self) -> None:
        self.S1.zero_()
        self.S2.zero_()
        self.opt_t = 0

    def values_buffer(self, batch: int) -> np.ndarray:
        return self._host_buffer("values", batch, self.plan.n_value)

    def _host_buffer(self, kind: str, batch: int, n: int) -> np.ndarray:
        """A ``(batch, n)`` host array kept from run to run (a few batch sizes): a fresh one of
        this size would cost page faults on every batch."""
        key = (kind, batch)
        buf = self._host.get(key)
        if buf is None:
            if len(self._host) >= 8:
                self._host.pop(next(iter(self._host)))
            buf = self._host[key] = np.zeros((batch, n), self.dtype)
        return buf

    def _to_host(self, parts: list, out: np.ndarray) -> np.ndarray:
        """``cat(parts, dim=1)`` written into the host array ``out``; returns ``out``."""
        if not parts:
            return out
        host = torch.from_numpy(out)
        if self.device.type == "cpu":
            torch.cat(parts, dim=1, out=host)
        else:
            host.copy_(torch.cat(parts, dim=1))
        return out

    # ---- running ----------------------------------------------------------------------------
    # inference mode, not no_grad: tensors made here carry no version counter or autograd
    # metadata, which takes about 7% off an eager CPU batch of the standard task (bit-identical
    # results). Such tensors may not be changed in place outside inference mode: the buffers
    # that outlive a run and that other methods write are made as normal tensors (_persistent).
    @torch.inference_mode()
    def run(
        self,
        batch: int,
        sched: Schedule,
        seed: int,
        *,
        learn: Optimizer | None = None,
        trace: TraceSpec | None = None,
    ) -> RunOutput:
        """The schedule's skeleton (:mod:`neuropc.dynamics.schedule`) as batched torch ops."""
        pl = self.plan
        npop = pl.n_pops
        cols = [slice(int(pl.voff[p]), int(pl.voff[p]) + self.sizes[p]) for p in range(npop)]
        host = torch.from_numpy(self.values_buffer(batch)).to(self.device)
        inputs = [host[:, cols[p]] for p in range(npop)]
        scale = sched.grad_scale
        gen = None
        if sched.noise_sd > 0:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed))
        # learning changes the parameters: a diverging step is taken back (ParameterState: a
        # swap of buffers, or a copy where several steps happen during inference)
        each_step = sched.opt_when == EACH_STEP and learn is not None
        if learn is not None:  # (undo_step takes back this batch's steps, not an older one's)
            self.state.release()
            if each_step:
                self.state.hold()

        self._fast.start()
        R = self._relaxation(sched)
        R.start()
        # the free values are the run's own tensors (updated in place): copies of given values;
        # the others Relaxation.initial sets (the columns only lend their shape). A clamped
        # population reads its columns of the values buffer where they are (never written)
        x = [v.clone() if R.given[p] else v for p, v in enumerate(inputs)]
        W = self.W
        if sched.zero_grads:
            self.G.zero_()
        gw = sched.grads_when
        opt_steps = 0
        hooks = sched.steps_each  # something acts between steps: one step per call
        rec = TraceBuffers(self, trace, sched) if trace is not None else None

        mom = [[torch.zeros_like(v), torch.zeros_like(v)] for v in x] if sched.moments else None
        # compiled, the first chunk starts from the values alone (Relaxation.chunk's lead),
        # unless something acts on the initial state (hooks: gradients or moments at step 0; a
        # recording of it)
        lead = self.compile is not None and not hooks and sched.steps > 0 and rec is None
        # the energies of every state; or, where nobody reads them (Schedule.readout) and the
        # steps run in chunks, those of each chunk's last state: a non-finite one re-runs the
        # batch with the trace, to name the first (nothing has changed yet: without hooks no step
        # during inference learns)
        traced = sched.readout or hooks or rec is not None
        fx, dfx, muc, d, eps = ([None] * npop for _ in range(5))
        energies: list = []
        if not lead:
            x, fx, dfx, muc, eps = R.initial(x, W, self.bias, batch)
            d, eps, e = R.errors(x, fx, muc, eps, W, traced or sched.steps == 0)
            if e is not None:
                energies.append(stack([e], x[0]))
        if rec is not None:
            rec.gather(0, x, eps)
        t = 0
        stop = False  # early stop (tol): the value step just taken was small enough
        while True:
            if gw.at_steps:
                self._weight_grads(fx, eps, batch, scale, sched.grads_at(t))
            if gw.collected is not None and sched.collect[t]:  # a sample joins the average
                self._weight_grads(fx, eps, batch, scale * sched.collect_weight, gw.collected, True)
            if mom is not None and sched.collect[t]:  # the free values' moments over the samples
                for p in R.free:
                    mom[p][0].add_(x[p], alpha=sched.collect_weight)
                    mom[p][1].addcmul_(x[p], x[p], value=sched.collect_weight)
            if t == sched.steps or stop:
                break
            if self._fast:  # (a fast precision makes every step a call of its own)
                self._fast.step(d)
            k = 1 if hooks else min(sched.steps - t, COMPILE_CHUNK)
            # a preconditioned step scales its noise: that is what gets recorded (below)
            drec = None if sched.precond else rec
            noise = [self._draw(R.free, sched.noise_sd, gen, batch, drec, t + i) for i in range(k)]
            if hooks:
                R.tick()
                # (a recorded state is gathered below, before the next step writes x in place)
                x, fx1, dfx, eps1, rown = R.relax(x, fx, dfx, d, eps, W, noise[0], owned=True)
                if (
                    sched.precond
                    and rec is not None
                    and noise[0] is not None
                    and t % rec.every == 0
                ):
                    for p in R.free:
                        rec.noise(t // rec.every, p, R.noise_added[p])
                if gw.every is not None:  # gradients from the state the value step started from
                    self._weight_grads(fx, eps, batch, scale, gw.every)
                if each_step:
                    opt_steps += 1
                    self._optimizer_step(learn, self.opt_t + opt_steps)
                    W = self.W  # (the step wrote the spare buffer, now the current one)
                    for p in range(npop):  # the weights changed: so did the constant predictions
                        if R.has_err[p]:
                            muc[p] = R.const_prediction(p, fx, W, self.bias, batch)
                fx = fx1
                d, eps, e = R.errors(x, fx, muc, eps1, W)
                energies.append(stack([e], x[0]))
                states = [(x, eps)]
            else:
                rown = None
                chunk = R.chunk(k, rec is not None, noise[0] is not None, lead and t == 0, traced)
                x, fx, dfx, d, eps, muc, e, states = chunk(
                    x, fx, dfx, d, eps, muc, W, self.bias, noise
                )
                energies.append(e)
            if rec is not None:
                for i, (xs, es) in enumerate(states):
                    if (t + 1 + i) % rec.every == 0:
                        rec.gather((t + 1 + i) // rec.every, xs, es)
            t += k
            stop = sched.tol > 0 and rown is not None and float(rown.max().sqrt()) < sched.tol
        done = t

        if rec is not None:  # after an early stop the remaining rows hold the settled state
            for s_ in range(done // rec.every + 1, rec.n_steps):
                rec.gather(s_, x, eps)
        if sched.nudge != 0.0:  # report what a nudged target holds: mu + beta (y - mu), final mu
            for p in range(npop):
                if sched.nudged[p]:
                    mu = self._with_var(muc[p], R.var_in[p], fx)
                    x[p] = mu + sched.nudge * (x[p] - mu)
        etab, bad_t, bad_p = _energy_table(energies, R.err_pops, npop, 0.5 / batch)
        if not traced:
            if bad_t >= 0:
                return self.run(batch, replace(sched, readout=True), seed, learn=learn)
            etab = etab[-1:]
        out_grads = None
        bad_param = -1
        if bad_t >= 0:
            done = bad_t
            if each_step:  # a non-finite weight from a step during inference came first
                bad_param = self._first_nonfinite()
                if bad_param >= 0:
                    bad_t = bad_p = -1
            if each_step:  # steps during inference learned: undo them
                self.state.undo()
        else:
            if gw.at_end:
                self._weight_grads(fx, eps, batch, scale, gw.end)
            if learn is not None and sched.opt_when == AT_END:
                opt_steps += 1
                self._optimizer_step(learn, self.opt_t + opt_steps)
            if opt_steps:
                bad_param = self._first_nonfinite()
                if bad_param >= 0:  # an optimiser step left a non-finite value: undo the batch
                    self.state.undo()
                    opt_steps = 0
            self.opt_t += opt_steps
            if sched.grads and bad_param < 0:
                out_grads = self.G  # (converted only where read: RunOutput.host_grads)
        values = errors = None  # (Schedule.readout: nobody reads them)
        if sched.readout:  # the values buffer holds this run's inputs: write what it changed
            values = self.values_buffer(batch)
            out = torch.from_numpy(values)
            for p in range(npop):
                if x[p] is not inputs[p]:
                    out[:, cols[p]].copy_(x[p])
            errs = [eps[p] for p in R.err_pops]
            errors = self._to_host(errs, self._host_buffer("errors", batch, self.plan.n_error))
        traces = rec.host() if rec is not None else None
        self._last = (fx, eps)  # for a natural-gradient step after the run
        fast = self._fast.host()
        return RunOutput(
            values, errors, etab[: done + 1], int(done), bad_t, bad_p, out_grads, traces,
            bad_param=bad_param, fast_precision=fast,
            moments=tuple(torch.cat([m[i] for m in mom], 1).cpu().numpy() for i in (0, 1))
            if sched.moments else None,
        )  # fmt: skip

    # ---- optimiser state ----------------------------------------------------------------------
    def optimizer_state(self) -> dict[str, np.ndarray | int]:
        # (copies: on the CPU a float64 tensor .numpy() would share the live buffers)
        host = lambda t: t.detach().to("cpu", torch.float64).numpy().copy()
        return {"m": host(self.S1), "v": host(self.S2), "t": self.opt_t}

    def set_optimizer_state(self, m: np.ndarray, v: np.ndarray, t: int) -> None:
        self.S1.copy_(torch.as_tensor(np.asarray(m), dtype=self.tdt))
        self.S2.copy_(torch.as_tensor(np.asarray(v), dtype=self.tdt))
        self.opt_t = int(t)

    def gradient_tensor(self) -> torch.Tensor:
        return self.G

    def step(self, learn: Optimizer) -> int:
        self.state.release()
        self._optimizer_step(learn, self.opt_t + 1)
        bad = self._first_nonfinite()
        if bad >= 0:
            self.state.undo()
        else:
            self.opt_t += 1
        return bad

    def ngd_views(self) -> NGDViews:
        fx, eps = self._last
        return ngd_views(self.plan, self.P, self.G, self.trainable, self.pi,
                         lambda q: fx[q], lambda p: eps[p])  # fmt: skip

    def set_precision(self, p: int, value: np.ndarray) -> None:
        self.pi[p].copy_(torch.as_tensor(np.asarray(value), dtype=self.tdt))
        self._fast.set_slow(p)

    def undo_step(self) -> None:
        self.state.undo()
        self.opt_t -= 1

    def _first_nonfinite(self) -> int:
        return self.state.first_nonfinite()

    # ---- pieces -----------------------------------------------------------------------------
    def _with_var(self, mu: torch.Tensor, conns, fx: list) -> torch.Tensor:
        return predict(mu, conns, fx, self.W, self.K)

    def _relaxation(self, sched: Schedule):
        """The run's :class:`Relaxation`, one object per static structure, so that the compiled
        chunks it holds (whose guards check its identity) are reused from batch to batch."""
        key = (
            sched.clamped.tobytes(), sched.var_pred.tobytes(), sched.refresh_act.tobytes(),
            sched.leaks.tobytes(), sched.nudged.tobytes(), sched.nudge, sched.rate,
            sched.err_rate, sched.tol > 0, sched.fast_rule.tobytes(), sched.precond, sched.beta2,
            sched.precond_eps, sched.bias_correction, sched.init.tobytes(),
            sched.frozen.tobytes(), sched.is_pre.tobytes(),
        )  # fmt: skip
        R = self._relax_cache.get(key)
        if R is None:
            if len(self._relax_cache) >= 16:
                self._relax_cache.pop(next(iter(self._relax_cache)))
            R = self._relax_cache[key] = Relaxation(self, sched)
        return R

    def _draw(self, free, sd: float, gen, batch: int, rec, t: int) -> list | None:
        """The Langevin noise of step ``t``, ``sqrt(2 rate T) N(0, 1)`` per free population, drawn
        in population order (the same stream whether steps then run eagerly or compiled)."""
        if gen is None:
            return None
        xi = [None] * len(self.sizes)
        for p in free:
            xi[p] = sd * torch.randn(
                (batch, self.sizes[p]), generator=gen, dtype=self.tdt, device=self.device
            )
            if rec is not None and t % rec.every == 0:
                rec.noise(t // rec.every, p, xi[p])
        return xi

    def _weight_grads(self, fx, eps, batch: int, scale=1.0, sel=None, acc=False) -> None:
        """dF/dW_c = -1/B eps_post^T f(x_pre), dF/db = -1/B sum_b eps, times ``scale``; with
        ``sel`` only the connections into (and biases of) the selected populations; with ``acc``
        added to the gradients (a collected sample of Langevin learning)."""
        pl = self.plan
        a = -scale / batch
        for c in range(len(self.W)):
            if (sel is None or sel[pl.cpost[c]]) and not self.K.flat[c]:
                for k, g in self.K.grads(c, eps[pl.cpost[c]], fx, self.W).items():
                    if acc:
                        self.Gw[c][k].add_(g, alpha=a)
                    else:
                        torch.mul(g, a, out=self.Gw[c][k])
                continue
            if sel is None or sel[pl.cpost[c]]:
                if acc:
                    self.Gw[c].addmm_(eps[pl.cpost[c]].T, fx[pl.cpre[c]], alpha=a)
                    continue
                torch.mm(eps[pl.cpost[c]].T, fx[pl.cpre[c]], out=self.Gw[c])
                self.Gw[c].mul_(a)
        for p in range(pl.n_pops):
            if self.Gb[p] is not None and (sel is None or sel[p]):
                if acc:
                    self.Gb[p].add_(eps[p].sum(dim=0), alpha=a)
                    continue
                torch.sum(eps[p], dim=0, out=self.Gb[p])
                self.Gb[p].mul_(a)
        if not self.all_trainable:
            self.G.mul_(self.trainable)

    def _optimizer_step(self, opt: Optimizer, t: int) -> None:
        self.state.step(opt, t, self.G, None if self.all_trainable else self.trainable)


def _energy_table(energies: list, err_pops: list, npop: int, scale: float):
    """The run's energy rows (tensors of ``(rows, P_err)``, one per chunk of steps) as a float64
    ``(rows, P)`` table times ``scale`` (zero where a population has no errors), with the first
    non-finite entry's ``(row, population)``, or ``(-1, -1)``. In Python floats: the table is a
    few dozen numbers, and numpy's calls on them cost about 40 us a batch (each ufunc runs cold
    after the torch kernels), 1.5% of a compiled batch of the standard task. ``v * scale`` in
    float64, as numpy's product: the same bits."""
    rows = (energies[0] if len(energies) == 1 else torch.cat(energies)).tolist()
    table = [[0.0] * npop for _ in rows]
    bad_t = bad_p = -1
    for t, (row, out) in enumerate(zip(rows, table)):
        for p, v in zip(err_pops, row):
            if bad_t < 0 and not math.isfinite(v):  # (a finite v stays finite, scaled)
                bad_t, bad_p = t, p
            out[p] = v * scale
    return np.array(table, dtype=np.float64).reshape(len(rows), npop), bad_t, bad_p
