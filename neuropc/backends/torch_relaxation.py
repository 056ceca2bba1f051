"""The torch backend's inference dynamics as pure functions of torch tensors
(:class:`Relaxation`): the errors of a state and one value step, and chunks of steps run eagerly
or through ``torch.compile`` (with CUDA graphs made safe to chain)."""

from __future__ import annotations

import types

import torch

from ..dynamics.schedule import FORWARD, KEEP, ZERO, Schedule
from ..model.distributions import by_code, error_own_torch, from_rows, to_rows


def predict(mu, conns, fx: list, W: list, K) -> torch.Tensor:
    """``mu + sum_c op_c(f(x_pre_c); W_c)`` over the connections ``conns`` (from free
    populations); ``K`` the backend's :class:`~.torch_operators.Connections`."""
    for c in conns:
        mu = K.add(mu, c, fx, W)
    return mu


class Relaxation:
    """One run's inference dynamics as pure functions of torch tensors (no host synchronisation,
    no in-place change of an argument): the static structure (free populations, the connections
    that feed variable predictions and back-projections, the mode's switches) and the two halves
    of an inference step, :meth:`relax` (values) and :meth:`errors`. :meth:`chunk` runs k steps
    with the same code, eagerly or through ``torch.compile`` when the backend was built with
    ``compile``: that is the only difference between the two paths."""

    def __init__(self, be, sched: Schedule):
        pl = be.plan
        n = pl.n_pops
        cl = sched.clamped
        self.acts, self.pi = be.acts, be.pi
        self.K = be.K
        self.sizes, self.tdt, self.device = be.sizes, be.tdt, be.device
        # the initial state (schedule.py): per population its init code, whether it has errors,
        # a frozen (FPA) prediction, feeds a prediction, and the connections from clamped pres
        # (its constant prediction) and from free ones (what a frozen prediction adds once)
        self.init_code = [int(v) for v in sched.init]
        self.given = [not cl[p] and self.init_code[p] == KEEP for p in range(n)]
        self.has_err = [bool(v) for v in pl.has_err]
        self.frozen = [bool(v) for v in sched.frozen]
        self.is_pre = [bool(v) for v in sched.is_pre]
        self.const_in = [tuple(c for c in be.inc[p] if all(cl[q] for q in pl.cpres[c]))
                         for p in range(n)]  # fmt: skip
        self.free_in = [tuple(c for c in be.inc[p] if sched.backproj[c]) for p in range(n)]
        self.err_pops = [p for p in range(n) if pl.has_err[p]]
        self.free = [p for p in range(n) if not cl[p]]
        self.clamped = [bool(cl[p]) for p in range(n)]
        # None for Gaussians (errors Pi (x - mu)), else the population's distribution
        self.dist = [None if int(c) == 0 else by_code(int(c)) for c in pl.dist]
        # the connections recomputed every step (from free pres, where the prediction varies)
        self.var_in = [self.free_in[p] if sched.var_pred[p] else () for p in range(n)]
        # per free population: (post, connection, input index) whose errors it receives
        self.bp_in = [
            tuple((int(pl.cpost[c]), c, pl.cpres[c].index(q)) for c in be.out[q]
                  if sched.backproj[c]) for q in range(n)
        ]  # fmt: skip
        # a shaped Categorical's (shape, axis): its energy is one distribution per row
        self.rows = [
            (pl.shapes[p], pl.axes[p])
            if len(pl.shapes[p]) > 1 and self.dist[p] is not None
            and self.dist[p].name == "categorical" else None for p in range(n)
        ]  # fmt: skip
        self.refresh = [bool(v) for v in sched.refresh_act]
        self.beta = float(sched.nudge)
        self.nudged = [bool(v) for v in sched.nudged]
        self.leaks = [p for p in range(n) if sched.leaks[p]]
        self.leaky = bool(self.leaks)
        self.rate = float(sched.rate)
        self.err_rate = float(sched.err_rate)
        self.tol = sched.tol > 0
        self.fast = [bool(v) for v in sched.fast_rule]
        self.precond = bool(sched.precond)
        self.beta2, self.peps = float(sched.beta2), float(sched.precond_eps)
        self.bias_correction = bool(sched.bias_correction)
        self.noise_added: dict = {}
        self.compile = be.compile
        self.cudagraphs = be.device.type == "cuda" and _uses_cudagraphs(be.compile)
        self.cpu = be.device.type == "cpu"
        self._chunks: dict[tuple[int, bool, bool, bool, bool], object] = {}
        self.start()

    def start(self) -> None:
        """A new run: the preconditioner's statistics start at 0 (and its step count at 1)."""
        self._v: dict = {}
        self._t = 0
        self._bc = 1.0

    def tick(self) -> None:
        """Before a value step: the preconditioner's bias correction ``1 / (1 - beta2^t)``."""
        self._t += 1
        self._bc = 1.0 / (1.0 - self.beta2**self._t) if self.bias_correction else 1.0

    def const_prediction(self, p: int, fx: list, W: list, bias: list, batch: int):
        """``b_p + sum_c f(x_pre) W_c^T`` over the connections from clamped populations."""
        b = bias[p]
        if b is not None:
            m = b.expand(batch, -1)
        else:
            m = torch.zeros((batch, self.sizes[p]), dtype=self.tdt, device=self.device)
        for c in self.const_in[p]:
            m = self.K.add(m, c, fx, W)
        return m

    def initial(self, x, W, bias, batch: int):
        """The state a run starts from, in topological order (schedule.py's ``init``): ``x_p``
        zeroed (ZERO) or set to its prediction (FORWARD); each population's constant prediction
        ``muc_p`` (the whole of it where frozen, FPA); ``f(x_p), f'(x_p)`` of presynaptic ones;
        zero errors where they leak. Returns new lists ``(x, fx, dfx, muc, eps)`` and writes no
        argument (the values it sets are new tensors)."""
        n = len(x)
        x = list(x)
        fx, dfx, muc = [None] * n, [None] * n, [None] * n
        for p in range(n):
            if self.init_code[p] == ZERO:
                x[p] = torch.zeros_like(x[p])
            if self.has_err[p]:
                muc[p] = self.const_prediction(p, fx, W, bias, batch)
                if self.frozen[p]:  # the whole prediction, once (FPA)
                    muc[p] = predict(muc[p], self.free_in[p], fx, W, self.K)
                if self.init_code[p] == FORWARD:  # (a clone: mu may be muc itself)
                    x[p] = predict(muc[p], self.var_in[p], fx, W, self.K).clone()
            if self.is_pre[p]:
                fx[p], dfx[p] = self.acts[p].torch_forward(x[p])
        eps = [torch.zeros_like(x[p]) if p in self.leaks else None for p in range(n)]
        return x, fx, dfx, muc, eps

    def errors(self, x, fx, muc, eps, W, energy: bool = True):
        """Gaussian populations: ``d_p = x_p - mu_p`` with ``mu_p = muc_p + sum_c f(x_pre) W_c^T``
        (times ``beta`` where nudged), ``eps_p = Pi_p d_p`` (instant errors; leaky ones keep their
        own state) and ``d . Pi d`` summed over the batch. Other distributions: ``eps_p =
        -dF/dmu_p``, ``d_p`` their own term ``dF/dx_p`` and twice their energy (so that every
        entry of the stack, populations with errors, is twice the batch's energy). The energies
        come as a list of 0-d tensors (:func:`stack` makes rows of them: once per chunk), or
        None without ``energy`` (their dot products cost 13% of an eager value step of the
        standard task)."""
        d = [None] * len(x)
        eps = list(eps)
        e = []
        for p in self.err_pops:
            if self.dist[p] is not None:
                mu = predict(muc[p], self.var_in[p], fx, W, self.K)
                eps[p], d[p], f = self._error_own(p, x[p], mu)
                if energy:
                    e.append(2.0 * f)
                continue
            # (x - muc) - sum_c op_c: a product subtracted from a fresh difference, in place,
            # costs less than addmm with a broadcast bias (eager), and compiled it leaves the
            # subtraction to the fused elementwise kernel instead of a copy inside addmm
            dp = x[p] - muc[p]
            for c in self.var_in[p]:
                dp = self.K.sub_(dp, c, fx, W)
            if self.nudged[p]:  # the target follows mu + beta (y - mu)
                dp = self.beta * dp
            pi = self.pi[p]
            pe = dp if pi is None else dp @ pi if pi.ndim == 2 else pi * dp
            if not self.leaky:
                eps[p] = pe
            d[p] = dp
            if not energy:
                continue
            ep = torch.vdot(dp.reshape(-1), pe.reshape(-1))
            if self.fast[p]:  # the normaliser of a precision that changes per step
                ep = ep - dp.shape[0] * (torch.logdet(pi) if pi.ndim == 2 else torch.log(pi).sum())
            e.append(ep)
        return d, eps, e if energy else None

    def _error_own(self, p: int, x, mu):
        """A non-Gaussian population's ``(eps, dF/dx own term, energy)``, row by row for a
        shaped Categorical (one distribution per row of its normalisation axis)."""
        if self.rows[p] is None:
            return error_own_torch(self.dist[p], x, mu, self.clamped[p])
        shape, axis = self.rows[p]
        b = x.shape[0]
        eps, own, f = error_own_torch(
            self.dist[p], to_rows(x, shape, axis), to_rows(mu, shape, axis), self.clamped[p]
        )
        own = None if own is None else from_rows(own, b, shape, axis)
        return from_rows(eps, b, shape, axis), own, f

    def relax(self, x, fx, dfx, d, eps, W, xi, owned: bool = False):
        """One value step of the free populations, ``x <- x - rate dF/dx (+ xi)`` with
        ``dF/dx = eps - f'(x) * sum_post eps_post W`` (the error term only where the population
        has errors), then ``f(x)``; leaky errors step ``eps <- eps + err_rate (d - eps / Pi)`` from
        the same state. With ``tol``, also the per-sample squared norm of the value step.
        ``owned``: nothing but the caller refers to the free values' tensors (no recorded state
        holds them), so the step writes them in place (eager runs: 5% of the standard task's
        batch); otherwise the step makes new tensors, as a compiled chunk needs."""
        fx0 = fx  # the state the step starts from (a bilinear vjp reads the other inputs' f)
        vjps: dict = {}  # an operator's vjps from that state, computed once for all its inputs
        x, fx, dfx = list(x), list(fx), list(dfx)
        rown = None
        for p in self.free:
            bp = None
            for post, c, i in self.bp_in[p]:
                bp = self.K.back(bp, c, i, eps[post], fx0, W, vjps)
            own = eps[p] if self.dist[p] is None else d[p]  # dF/dx's own term
            # not where f(x) is x itself (linear): the step's starting f must stay as it was
            inplace = owned and fx0[p] is not x[p]
            # g = dF/dx times sign: the step is x + sign rate g. With a back-projection g is
            # -dF/dx = f'(x) * bp - own (sign +1), computed in place in the vjp's fresh output
            # (a linear activation passes bp itself through); exactly the negated gradient, so
            # the step is bit-identical to x - rate dF/dx
            g, sign = None, 1.0
            if bp is not None:
                fb = self.acts[p].torch_vjp(dfx[p], bp)
                g = fb if own is None else fb - own if fb is bp else fb.sub_(own)
            elif own is not None:
                g, sign = own, -1.0
            m = None
            if g is not None:
                if self.precond:  # RMSprop-like statistics per chain and unit
                    v = self._v.get(p)
                    v = (1.0 - self.beta2) * g * g if v is None else v * self.beta2 + (
                        1.0 - self.beta2) * g * g  # fmt: skip
                    self._v[p] = v
                    m = 1.0 / (self.peps + (v * self._bc).sqrt())
                    g = m * g
                if self.tol:
                    rn = (g * g).sum(dim=1) * (self.rate * self.rate)
                    rown = rn if rown is None else rown + rn
                step = x[p].add_ if inplace else x[p].add
                x[p] = step(g, alpha=sign * self.rate)
            if xi is not None:
                noise = xi[p] if m is None else xi[p] * m.sqrt()
                self.noise_added[p] = noise
                x[p] = x[p].add_(noise) if inplace else x[p] + noise
            if self.refresh[p]:
                fx[p], dfx[p] = self.acts[p].torch_forward(x[p])
        if self.leaky:
            eps = list(eps)
            for p in self.leaks:
                pi_e = eps[p] if self.pi[p] is None else eps[p] / self.pi[p]
                eps[p] = eps[p] + self.err_rate * (d[p] - pi_e)
        return x, fx, dfx, eps, rown

    def chunk(self, k: int, collect: bool, noisy: bool, lead: bool = False, trace: bool = True):
        """``steps(x, fx, dfx, d, eps, muc, W, bias, noise) -> (x, fx, dfx, d, eps, muc,
        energies (k, P_err), states)``: k whole steps (value step, then the errors of the new
        state); ``states`` holds each new ``(x, eps)`` when ``collect`` (for the recorder), else is
        empty; ``noisy``: the noise entries are tensors, not None. ``lead``: the chunk starts the
        run, from the values alone: :meth:`initial` and the errors of step 0 come first (their
        energies are the first of k + 1 rows; ``fx``, ``dfx``, ``d``, ``muc`` may be None), so a
        compiled run also fuses its initialisation (eager runs call the same two methods).
        Without ``trace`` only the last state's energies come back (one row). Compiled once per
        (k, collect, noisy, lead, trace) and structure when the backend compiles.

        The compiled function keeps only dynamo's guards on tensors (shape, stride, dtype,
        device) and on the global state (grad mode), not those on Python values: everything
        else it reads is fixed for this object and key (the structure, the rates, k, which
        entries are None), and checking the Python guards cost about 40 us per call on the CPU
        (dynamo's cache lookup: 49 -> 9 us per chunk call of the standard task)."""
        fn = self._chunks.get((k, collect, noisy, lead, trace))
        if fn is None:
            # eager and recording nothing, the steps update the run's values in place
            owned = self.compile is None and not collect

            def steps(x, fx, dfx, d, eps, muc, W, bias, noise):
                es, states = [], []
                if lead:
                    x, fx, dfx, muc, eps = self.initial(x, W, bias, x[0].shape[0])
                    d, eps, e = self.errors(x, fx, muc, eps, W, trace)
                    if trace:
                        es.append(e)
                for i in range(k):
                    x, fx, dfx, eps, _ = self.relax(x, fx, dfx, d, eps, W, noise[i], owned)
                    d, eps, e = self.errors(x, fx, muc, eps, W, trace or i == k - 1)
                    if e is not None:
                        es.append(e)
                    if collect:
                        states.append((x, eps))
                return x, fx, dfx, d, eps, muc, stack(es, x[0]), states

            fn = steps
            if self.compile is not None:
                # a code object of its own: dynamo caches (and limits recompilations) per code
                # object, and every structure and chunk length is a separate graph
                own = types.FunctionType(
                    steps.__code__.replace(), steps.__globals__, steps.__name__, None,
                    steps.__closure__,
                )  # fmt: skip
                fn = torch.compile(own, dynamic=False, fullgraph=True, options=self._options())
                if self.cudagraphs:
                    fn = _graph_safe(fn)
            self._chunks[(k, collect, noisy, lead, trace)] = fn
        return fn

    def _options(self) -> dict:
        """The inductor options of the backend's compile mode (torch.compile takes a mode or
        options, not both), with the guard filter of :meth:`chunk`. On the CPU the graph's
        wrapper is C++ (``cpp_wrapper``): a chunk of the standard task calls some 20 gemms and
        15 fused kernels, and the Python wrapper's calls cost about 5% of a batch."""
        mode = self.compile.get("mode")
        opts = dict(torch._inductor.list_mode_options(mode)) if mode else {}
        if self.cpu:
            opts["cpp_wrapper"] = True
        return {**opts, **self.compile.get("options", {}),
                "guard_filter_fn": torch.compiler.keep_portable_guards_unsafe}  # fmt: skip


def stack(rows: list, like: torch.Tensor) -> torch.Tensor:
    """The ``(len(rows), P_err)`` energies of :meth:`Relaxation.errors`'s lists ``rows``, in one
    call."""
    flat = [v for r in rows for v in r]
    if not flat:
        return like.new_zeros((len(rows), 0))
    return torch.stack(flat).view(len(rows), -1)


def _uses_cudagraphs(compile_kw: dict | None) -> bool:
    """Whether ``torch.compile(**compile_kw)`` replays CUDA graphs on a CUDA device: the modes
    ``reduce-overhead`` and ``max-autotune``, or the inductor option ``triton.cudagraphs``."""
    if compile_kw is None:
        return False
    opts = compile_kw.get("options") or {}
    return compile_kw.get("mode") in ("reduce-overhead", "max-autotune") or bool(
        opts.get("triton.cudagraphs", False)
    )


def _graph_safe(fn):
    """A CUDA-graph chunk whose outputs survive the next replay. The relaxation feeds each chunk's
    outputs into the next call; CUDA graphs write their outputs into memory that the next replay
    overwrites, so reading them then raises ("accessing tensor output of CUDAGraphs that has been
    overwritten"). Marking a new step and cloning the outputs (a few batch x width copies per
    chunk of steps) keeps the chained calls correct."""
    from torch.utils._pytree import tree_map

    def run(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, fn(*args))

    return run
