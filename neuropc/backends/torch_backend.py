"""Batched torch backend (CPU or CUDA): the same plan and the same dynamics as the numba kernels.

Populations are separate contiguous tensors; one batch is a Python loop over the inference steps
issuing a fixed set of batched ops per step (no host synchronisation per step unless ``tol`` is
set). Divergence is detected after the loop from the energy table, before any parameter changes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..activations import NAMES, get
from ..inference import Inference
from ..modes import CODES, ModeSetup
from ..optim import OPT_ADAM, OPT_SGD, Optimizer
from ..plan import Plan
from .base import Backend, RunOutput, TraceSpec

MODE_FPA, MODE_ZIL, MODE_IPC = CODES["fpa"], CODES["zil"], CODES["ipc"]


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, plan: Plan, dtype: np.dtype, device: str | None = None) -> None:
        super().__init__(plan, dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        device = device or "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        self.device = torch.device(device)
        self.tdt = torch.float64 if self.dtype == np.float64 else torch.float32
        kw = dict(dtype=self.tdt, device=self.device)
        n = plan.n_params
        self.P = torch.zeros(n, **kw)
        self.G = torch.zeros(n, **kw)
        self.S1 = torch.zeros(n, **kw)
        self.S2 = torch.zeros(n, **kw)
        self.trainable = torch.as_tensor(plan.trainable, **kw)
        self.all_trainable = bool(np.all(plan.trainable))
        self.opt_t = 0
        sizes = [int(s) for s in plan.sizes]
        self.sizes = sizes
        self.W = [
            self.P[int(o) : int(o) + sizes[q] * sizes[p]].view(sizes[p], sizes[q])
            for o, q, p in zip(plan.cwoff, plan.cpre, plan.cpost)
        ]
        self.Gw = [
            self.G[int(o) : int(o) + sizes[q] * sizes[p]].view(sizes[p], sizes[q])
            for o, q, p in zip(plan.cwoff, plan.cpre, plan.cpost)
        ]
        self.bias = [
            self.P[int(o) : int(o) + s] if o >= 0 else None for o, s in zip(plan.boff, sizes)
        ]
        self.Gb = [
            self.G[int(o) : int(o) + s] if o >= 0 else None for o, s in zip(plan.boff, sizes)
        ]
        # None where the population has no error neurons or unit precision (no multiply)
        pis = [plan.precision[int(e) : int(e) + s] if e >= 0 else None
               for e, s in zip(plan.eoff, sizes)]  # fmt: skip
        self.pi = [None if v is None or np.all(v == 1.0) else torch.as_tensor(v, **kw) for v in pis]
        self.acts = [get(NAMES[int(c)], slope=float(a) if NAMES[int(c)] == "leaky_relu" else None)
                     for c, a in zip(plan.act_code, plan.act_param)]  # fmt: skip
        self.inc = [
            [c for c in range(len(plan.cpre)) if plan.cpost[c] == p] for p in range(len(sizes))
        ]
        self.out = [
            [c for c in range(len(plan.cpre)) if plan.cpre[c] == p] for p in range(len(sizes))
        ]
        self._host: dict[int, np.ndarray] = {}

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
        buf = self._host.get(batch)
        if buf is None:
            if len(self._host) >= 4:
                self._host.pop(next(iter(self._host)))
            buf = self._host[batch] = np.zeros((batch, self.plan.n_value), self.dtype)
        return buf

    # ---- running ----------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        batch: int,
        clamped: np.ndarray,
        keep: np.ndarray,
        cfg: Inference,
        seed: int,
        mode: ModeSetup,
        *,
        learn: Optimizer | None = None,
        grads: bool = False,
        trace: TraceSpec | None = None,
    ) -> RunOutput:
        """The numba kernel's algorithm (see ``_numba_kernels.infer``) as batched torch ops."""
        pl = self.plan
        npop = pl.n_pops
        sizes = self.sizes
        host = torch.from_numpy(self.values_buffer(batch)).to(self.device)
        x = [host[:, int(pl.voff[p]) : int(pl.voff[p]) + sizes[p]].clone() for p in range(npop)]
        cl = [bool(v) for v in clamped]
        has_err = [bool(v) for v in pl.has_err]
        var_in = [[c for c in self.inc[p] if not cl[pl.cpre[c]]] for p in range(npop)]
        bp_out = [[c for c in self.out[q] if not cl[q]] for q in range(npop)]
        is_pre = [bool(self.out[p]) for p in range(npop)]
        fpa, zil, ipc = mode.code == MODE_FPA, mode.code == MODE_ZIL, mode.code == MODE_IPC
        beta = mode.nudge
        scale = 1.0 / beta if beta != 0.0 else 1.0
        leaky = cfg.errors == "leaky"
        rate = float(cfg.rate)
        err_rate = rate if cfg.error_rate is None else float(cfg.error_rate)
        noise_sd = float(np.sqrt(2.0 * rate * cfg.temperature))
        gen = None
        if noise_sd > 0:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(int(seed))
        saved = (self.P.clone(), self.S1.clone(), self.S2.clone()) if ipc and learn else None

        fx: list = [None] * npop
        dfx: list = [None] * npop
        muc: list = [None] * npop
        for p in range(npop):  # initialisation in topological order
            if not keep[p] and (cfg.init == "zero" or not has_err[p]):
                x[p].zero_()
            if has_err[p]:
                muc[p] = self._const_prediction(p, fx, cl, batch)
                if not keep[p] and cfg.init != "zero":
                    x[p] = self._with_var(muc[p], p, var_in, fx).clone()
                elif fpa and var_in[p]:  # freeze the forward prediction
                    muc[p] = self._with_var(muc[p], p, var_in, fx)
            if is_pre[p]:
                fx[p], dfx[p] = self.acts[p].torch_forward(x[p])
        if fpa:  # predictions frozen at the forward pass
            for p in range(npop):
                if has_err[p] and var_in[p]:
                    if not keep[p]:
                        muc[p] = x[p].clone()
                    var_in[p] = []
        eps: list = [
            torch.zeros_like(x[p]) if (leaky and has_err[p]) else None for p in range(npop)
        ]
        if zil:
            self.G.zero_()
        opt_steps = 0

        # few, fused ops per step: torch costs ~5-10 us per op on small CPU tensors
        zero = torch.zeros((), dtype=self.tdt, device=self.device)
        energies: list = []  # per step, one 0-d tensor per population; stacked once at the end
        done = cfg.steps
        stop_next = False
        rec = _Recorder(self, trace, cfg.steps, noise_sd > 0) if trace is not None else None
        for t in range(cfg.steps + 1):
            d = [None] * npop
            e_t = [zero] * npop
            for p in range(npop):
                if not has_err[p]:
                    continue
                d[p] = x[p] - self._with_var(muc[p], p, var_in, fx)
                if beta != 0.0 and mode.nudged[p]:  # the target follows mu + beta (y - mu)
                    d[p] = beta * d[p]
                pe = d[p] if self.pi[p] is None else self.pi[p] * d[p]
                if not leaky:
                    eps[p] = pe
                e_t[p] = torch.vdot(d[p].reshape(-1), pe.reshape(-1))
            energies.append(e_t)
            if rec is not None and t % rec.every == 0:
                rec.gather(t // rec.every, x, eps)
            if zil:
                self._weight_grads(fx, eps, batch, scale, [int(v) == t for v in mode.depth])
            if t == cfg.steps or stop_next:
                done = t
                break
            bp: list = [None] * npop
            for q in range(npop):
                for c in bp_out[q]:
                    e = eps[pl.cpost[c]]
                    bp[q] = e @ self.W[c] if bp[q] is None else torch.addmm(bp[q], e, self.W[c])
            if ipc:
                self._weight_grads(fx, eps, batch, scale)
            rown = None
            for p in range(npop):
                free = not cl[p]
                g = None
                if free:  # dF/dx = eps - f'(x) * back-projected errors
                    fb = None if bp[p] is None else self.acts[p].torch_vjp(dfx[p], bp[p])
                    if has_err[p] and fb is not None:
                        g = eps[p] - fb
                    elif has_err[p]:
                        g = eps[p]
                    elif fb is not None:
                        g = -fb
                if leaky and has_err[p]:  # from the old state, like the value step
                    pi_e = eps[p] if self.pi[p] is None else eps[p] / self.pi[p]
                    eps[p] = eps[p] + err_rate * (d[p] - pi_e)
                if not free:
                    continue
                if g is not None:
                    if cfg.tol > 0:
                        rn = (g * g).sum(dim=1) * (rate * rate)
                        rown = rn if rown is None else rown + rn
                    x[p] = x[p].add(g, alpha=-rate)
                if noise_sd > 0:
                    xi = noise_sd * torch.randn(
                        x[p].shape, generator=gen, dtype=self.tdt, device=self.device
                    )
                    x[p] = x[p] + xi
                    if rec is not None and t % rec.every == 0:
                        rec.noise(t // rec.every, p, xi)
                if is_pre[p] and not fpa:
                    fx[p], dfx[p] = self.acts[p].torch_forward(x[p])
            if ipc and learn is not None:
                opt_steps += 1
                self._optimizer_step(learn, self.opt_t + opt_steps)
                for p in range(npop):  # the weights changed: so did the constant predictions
                    if has_err[p]:
                        muc[p] = self._const_prediction(p, fx, cl, batch)
            if cfg.tol > 0 and rown is not None and float(rown.max().sqrt()) < cfg.tol:
                stop_next = True

        if rec is not None:  # after an early stop the remaining rows hold the settled state
            for s_ in range(done // rec.every + 1, rec.n_steps):
                rec.gather(s_, x, eps)
        if beta != 0.0:  # report what a nudged target holds: mu + beta (y - mu), final mu
            for p in range(npop):
                if mode.nudged[p]:
                    mu = self._with_var(muc[p], p, var_in, fx)
                    x[p] = mu + beta * (x[p] - mu)
        etab_t = torch.stack([torch.stack(e) for e in energies[: done + 1]])
        etab = (etab_t.to(torch.float64) * (0.5 / batch)).cpu().numpy()
        bad = np.argwhere(~np.isfinite(etab))
        bad_t, bad_p = (int(bad[0][0]), int(bad[0][1])) if len(bad) else (-1, -1)
        out_grads = None
        if bad_t >= 0:
            done = bad_t
            if saved is not None:  # iPC learned during inference: undo it
                self.P.copy_(saved[0])
                self.S1.copy_(saved[1])
                self.S2.copy_(saved[2])
        else:
            if (learn is not None or grads) and not (ipc or zil):
                self._weight_grads(fx, eps, batch, scale)
            if learn is not None and not ipc:
                opt_steps += 1
                self._optimizer_step(learn, self.opt_t + opt_steps)
            self.opt_t += opt_steps
            if learn is not None or grads:
                out_grads = self.G.detach().to("cpu", torch.float64).numpy()
        values = torch.cat(x, dim=1).cpu().numpy()
        errs = [eps[p] for p in range(npop) if has_err[p]]
        errors = torch.cat(errs, dim=1).cpu().numpy() if errs else np.zeros((batch, 0), self.dtype)
        traces = rec.host() if rec is not None else None
        return RunOutput(
            values, errors, etab[: done + 1], int(done), bad_t, bad_p, out_grads, traces
        )

    # ---- pieces -----------------------------------------------------------------------------
    def _const_prediction(self, p: int, fx: list, cl: list, batch: int) -> torch.Tensor:
        """b_p + sum over connections from clamped populations of f(x_pre) W^T."""
        b = self.bias[p]
        m = b.expand(batch, -1) if b is not None else None
        for c in self.inc[p]:
            if cl[self.plan.cpre[c]]:
                f = fx[self.plan.cpre[c]]
                m = f @ self.W[c].T if m is None else torch.addmm(m, f, self.W[c].T)
        if m is None:
            m = torch.zeros((batch, self.sizes[p]), dtype=self.tdt, device=self.device)
        return m

    def _with_var(self, mu: torch.Tensor, p: int, var_in: list, fx: list) -> torch.Tensor:
        for c in var_in[p]:
            mu = torch.addmm(mu, fx[self.plan.cpre[c]], self.W[c].T)
        return mu

    def _weight_grads(self, fx, eps, batch: int, scale: float = 1.0, sel=None) -> None:
        """dF/dW_c = -1/B eps_post^T f(x_pre), dF/db = -1/B sum_b eps, times ``scale``; with
        ``sel`` only the connections into (and biases of) the selected populations (Z-IL)."""
        pl = self.plan
        a = -scale / batch
        for c in range(len(self.W)):
            if sel is None or sel[pl.cpost[c]]:
                torch.mm(eps[pl.cpost[c]].T, fx[pl.cpre[c]], out=self.Gw[c])
                self.Gw[c].mul_(a)
        for p in range(pl.n_pops):
            if self.Gb[p] is not None and (sel is None or sel[p]):
                torch.sum(eps[p], dim=0, out=self.Gb[p])
                self.Gb[p].mul_(a)
        self.G.mul_(self.trainable)

    def _optimizer_step(self, opt: Optimizer, t: int) -> None:
        """The same update rules as the numba kernel (torch.optim's definitions)."""
        P, G, tr = self.P, self.G, self.trainable
        hp = opt.hyper()
        if opt.kind == OPT_SGD:
            lr, mom, wd, nest, damp = (float(v) for v in hp[:5])
            g = G + wd * P
            if mom != 0.0:
                if t == 1:
                    self.S1.copy_(g)
                else:
                    self.S1.mul_(mom).add_(g, alpha=1.0 - damp)
                g = g + mom * self.S1 if nest != 0.0 else self.S1
            P.sub_(lr * g * tr)
        elif opt.kind == OPT_ADAM:
            lr, b1, b2, eps, wd, dec = (float(v) for v in hp[:6])
            g = G if (dec != 0.0 or wd == 0.0) else G + wd * P
            self.S1.mul_(b1).add_(g, alpha=1.0 - b1)
            self.S2.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            # torch.optim's order of operations: denom = sqrt(v) / sqrt(1 - b2^t) + eps
            denom = (self.S2.sqrt() / math.sqrt(1.0 - b2**t)).add_(eps)
            m = self.S1 if self.all_trainable else self.S1 * tr
            if dec != 0.0 and wd != 0.0:
                P.sub_(P * tr, alpha=lr * wd)
            P.addcdiv_(m, denom, value=-lr / (1.0 - b1**t))


class _Recorder:
    """Device-side trace buffers of one batch: each recorded step is a few index ops, no host
    transfer; the traces are copied to the host once, after the loop."""

    def __init__(self, be: TorchBackend, trace: TraceSpec, steps: int, noise: bool) -> None:
        pl, dev = be.plan, be.device
        self.every = int(trace.every)
        self.n_steps = trace.n_steps(steps)
        rows = torch.as_tensor(np.asarray(trace.rows, np.int64), device=dev)
        self.rows = rows
        kw = dict(dtype=be.tdt, device=dev)
        r = len(trace.rows)
        self.VT = torch.zeros((r, self.n_steps, len(trace.vcols)), **kw)
        self.ET = torch.zeros((r, self.n_steps, len(trace.ecols)), **kw)
        self.NT = torch.zeros((r, self.n_steps, len(trace.ncols)), **kw)
        self.v = _pieces(trace.vcols, pl.voff, pl.sizes, dev)
        self.e = _pieces(trace.ecols, pl.eoff, pl.sizes, dev)
        self.n = (
            dict((p, a) for p, a in _pieces(trace.ncols, pl.voff, pl.sizes, dev)) if noise else {}
        )

    def _put(self, out, s, pieces, tensors) -> None:
        for p, (a, b, local) in pieces:
            src = tensors[p].index_select(0, self.rows)
            out[:, s, a:b] = src if local is None else src.index_select(1, local)

    def gather(self, s: int, x: list, eps: list) -> None:
        self._put(self.VT, s, self.v, x)
        self._put(self.ET, s, self.e, eps)

    def noise(self, s: int, p: int, xi) -> None:
        if p in self.n:
            a, b, local = self.n[p]
            src = xi.index_select(0, self.rows)
            self.NT[:, s, a:b] = src if local is None else src.index_select(1, local)

    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(t.cpu().numpy() for t in (self.VT, self.ET, self.NT))


def _pieces(cols, off, sizes, dev) -> list:
    """Split sorted buffer columns by population: [(p, (start, stop, local index or None))]."""
    cols = np.asarray(cols, np.int64)
    out = []
    for p, (o, n) in enumerate(zip(off, sizes)):
        if o < 0:
            continue
        a, b = np.searchsorted(cols, [o, o + n])
        if b > a:
            local = cols[a:b] - o
            full = b - a == n
            out.append((p, (int(a), int(b), None if full else torch.as_tensor(local, device=dev))))
    return out
