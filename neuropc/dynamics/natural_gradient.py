"""Natural-gradient weight updates for predictive coding (Ofner et al. 2021), in Kronecker form.

For a dense connection ``pre -> post`` with weights ``W`` ``(n_post, n_pre)`` and the local
gradient ``G = dF/dW = -<eps_post f(x_pre)^T>`` (batch mean), one step is::

    W <- W - lr [ (C_out + damping_out I)^-1  G  (C_in + damping_in I)^-1  +  weight_decay W ]

* ``C_in = E[f(x_pre) f(x_pre)^T]``, the presynaptic second moment, one per presynaptic population
  (shared by its outgoing connections): the first learning batch sets it to that batch's
  ``<f f^T>``, later ones move it by ``C_in <- (1 - decay) C_in + decay <f f^T>``.
* ``C_out``, the output factor, one per postsynaptic population (``c_out``):

  - ``"precision"`` (default): the post population's precision ``Pi`` (fixed, or its learned
    ``Precision``, scalar / diag / full), read locally. This is the output factor of the Fisher
    information of a Gaussian layer ``N(x_post; mu, Pi^-1)``, ``F = E[f f^T] (x) Pi``
    (``E[eps eps^T] = Pi Sigma Pi = Pi`` for errors drawn from the model), so with no damping
    the step is ``-lr Sigma G C_in^-1 = lr <d f^T> C_in^-1`` in the prediction errors
    ``d = Sigma eps``: the precision weighting of the PC gradient is undone and replaced by the
    input whitening. (Inverting the error *covariance* ``Sigma`` instead would weight the
    gradient by ``Pi`` twice and is not the natural gradient: the exact-Fisher test in
    ``tests/test_natural_gradient.py`` pins this choice.)
  - ``"empirical"``: an EMA (same rule and ``decay`` as ``C_in``) of ``<eps eps^T>``, the second
    moment of the post's own error neurons; local too. This is PredProp's ``C_err`` and, under
    the fixed-prediction assumption (errors = backprop's deltas), standard K-FAC.
  - ``"identity"``: ``C_out = I``, input whitening only.

* A bias is a connection from a constant input 1 (``C_in = 1``):
  ``b <- b - lr [(C_out + damping_out I)^-1 g_b / (1 + damping_in) + weight_decay b]``.
* ``refresh = k`` recomputes the inverses every k learning batches (the factors themselves move
  every batch); ``k = 1`` is exact.

Frozen parameters (``trainable=False``) keep their values: the preconditioned update is masked.
The step runs in the backend's own array library (numpy for numba, torch on its device), from
the gradient state's ``f(x_pre)`` and errors; :class:`NGDState` holds the factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import validation as _v
from ..errors import DivergenceError
from .plan import Plan

OPT_NGD = 3
C_OUT = ("precision", "empirical", "identity")


@dataclass(frozen=True)
class NaturalGradient:
    """Natural-gradient optimiser for PC's local weight gradients (see the module docstring for
    the exact update). ``damping_in`` / ``damping_out`` > 0 (PredProp's defaults 0.005 / 0.1),
    ``decay`` in (0, 1], ``refresh`` >= 1 batches between inversions, ``c_out`` one of
    ``"precision"``, ``"empirical"``, ``"identity"``; ``require_learned=True`` (with
    ``c_out="precision"``) refuses a post population without a learned ``Precision``.
    Usable as ``Simulator(optimizer=...)`` on both backends and as the optimiser of the backprop
    twin (``neuropc.reference.natural_gradient``)."""

    lr: float = 0.1
    damping_in: float = 0.005
    damping_out: float = 0.1
    decay: float = 0.05
    refresh: int = 20
    c_out: str = "precision"
    require_learned: bool = False
    weight_decay: float = 0.0
    kind: int = OPT_NGD

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f, bounds in (
            ("lr", {"low": 0.0}),
            ("damping_in", {"low": 0.0, "low_open": True}),
            ("damping_out", {"low": 0.0, "low_open": True}),
            ("decay", {"low": 0.0, "low_open": True, "high": 1.0}),
            ("weight_decay", {}),
        ):
            object.__setattr__(self, f, _v.number(getattr(self, f), f"{name}.{f}", **bounds))
        _v.integer(self.refresh, f"{name}.refresh", low=1)
        if self.c_out not in C_OUT:
            raise ValueError(f"{name}.c_out must be one of {', '.join(C_OUT)}; got {self.c_out!r}")
        object.__setattr__(
            self, "require_learned", _v.flag(self.require_learned, f"{name}.require_learned")
        )
        if self.kind != OPT_NGD:
            raise ValueError(f"{name}.kind is fixed to {OPT_NGD}; got {self.kind!r}")

    def check(self, plan: Plan) -> None:
        """Refuse what the update is not defined for: connections without a Kronecker-factored
        Fisher block, and (``require_learned``) posts without a learned precision."""
        from ..model import operators

        for conn, kind in zip(plan.conn_names, plan.conn_kinds):
            if not getattr(operators.get(kind), "kronecker", False):
                raise ValueError(
                    f"NaturalGradient: connection {conn!r} is of kind {kind!r}, whose Fisher "
                    "block has no Kronecker form; natural-gradient kinds: "
                    + ", ".join(k for k, op in operators.OPERATORS.items() if op.kronecker)
                )
        for c, conn in enumerate(plan.conn_names):
            if not plan.flat_connection(c):  # a per-token dense map: not one outer product
                raise ValueError(
                    f"NaturalGradient: connection {conn!r} joins shaped populations; the "
                    "Kronecker-factored update runs flat populations only"
                )
        if self.require_learned and self.c_out == "precision":
            for p in sorted({int(q) for q in plan.cpost}):
                if not plan.prec_rule[p]:
                    raise ValueError(
                        f"NaturalGradient(require_learned=True): population {plan.names[p]!r} "
                        "has no learned precision (give it npc.Gaussian(precision="
                        "npc.Precision(..., learn='gradient' or 'ema')))"
                    )


class ArrayOps:
    """The few operations the update needs, for numpy or torch arrays."""

    def __init__(self, like) -> None:
        self.torch = not isinstance(like, np.ndarray)
        if self.torch:
            import torch

            self._torch = torch
        self.dtype = like.dtype
        self.device = getattr(like, "device", None)

    # numpy arrays (the numba backend) go through scipy's BLAS and LAPACK, the library the numba
    # kernels call: numpy's own OpenBLAS would start a second thread pool that fights the first
    # one for the cores (on 2 cores a batch then took 20x longer)
    def inv(self, a):
        """The inverse of a symmetric positive definite ``a`` (a damped factor), by Cholesky;
        row-major, as a restored checkpoint's copy is, so that the products that use it run the
        same BLAS call and a resumed run stays bit-identical."""
        if self.torch:
            t = self._torch
            return t.cholesky_inverse(t.linalg.cholesky(a)).contiguous()
        from scipy.linalg import lapack

        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
        c, info = potrf(a, lower=False, clean=False)
        if info == 0:
            c, info = potri(c, lower=False)
        if info != 0:  # not positive definite (a non-finite factor): let the check report it
            return np.full_like(a, np.nan)
        upper = np.triu(c)  # potri fills the upper triangle
        return np.ascontiguousarray(upper + np.triu(c, 1).T)

    def moment(self, a, old, decay: float):
        """``<a a^T>`` of the rows of ``a`` ``(B, n)``, or its EMA step
        ``(1 - decay) old + decay <a a^T>``, as one gemm into a new array (``old`` is kept)."""
        alpha = (1.0 if old is None else decay) / a.shape[0]
        beta = 0.0 if old is None else 1.0 - decay
        if self.torch:
            if old is None:
                return (a.T @ a) * alpha
            return self._torch.addmm(old, a.T, a, beta=beta, alpha=alpha)
        import scipy.linalg.blas as blas

        # a symmetric rank-k update fills the upper triangle only (half a gemm's work): the
        # factor is only ever read through a Cholesky factorisation of its upper triangle
        # (inv), and state() symmetrises it
        syrk = blas.dsyrk if a.dtype == np.float64 else blas.ssyrk
        if old is None:
            return syrk(alpha, a.T)
        return syrk(alpha, a.T, beta=beta, c=old, overwrite_c=False)

    def matmul(self, a, b):
        """``a @ b``; ``a`` and ``b`` may be transposed views."""
        if self.torch:
            return a @ b
        import scipy.linalg.blas as blas

        gemm = blas.dgemm if a.dtype == np.float64 else blas.sgemm
        # row-major C = A B is column-major C^T = B^T A^T: pass the transposed views (no copy)
        return gemm(1.0, b.T, a.T).T

    def eye(self, n: int):
        if self.torch:
            return self._torch.eye(n, dtype=self.dtype, device=self.device)
        return np.eye(n, dtype=self.dtype)

    def asarray(self, a):
        if self.torch:
            return self._torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)
        return np.asarray(a, dtype=self.dtype)


@dataclass
class NGDViews:
    """What a backend lends the update, in its own array library: writable views of every
    connection's weights and gradient (``W[c]``, ``Gw[c]``, ``(n_post, n_pre)``) and of every
    population's bias and its gradient (``b[p]``, ``Gb[p]``, None without a bias), the gradient
    state's ``fx[p]`` ``(B, n)`` (presynaptic populations) and errors ``eps[p]`` (posts), each
    post's precision ``pi[p]`` (``(n,)``, ``(n, n)`` or None for 1), and the trainable masks
    (``mask_w[c]``, ``mask_b[p]``, None when all trainable)."""

    W: list
    Gw: list
    b: list
    Gb: list
    fx: dict
    eps: dict
    pi: list
    mask_w: list
    mask_b: list


class NGDState:
    """The factors of one simulator's natural-gradient optimiser: ``C_in`` per presynaptic
    population, ``C_out`` (empirical) per post, their damped inverses and the batch count."""

    def __init__(self, spec: NaturalGradient, plan: Plan) -> None:
        spec.check(plan)
        self.spec = spec
        self.plan = plan
        self.c_in: dict[int, object] = {}
        self.c_out: dict[int, object] = {}
        self.inv_in: dict[int, object] = {}
        self.inv_out: dict[int, object] = {}
        self.count = 0
        self.pres = sorted({int(q) for q in plan.cpre})
        # posts: populations with an incoming connection or a bias
        self.posts = sorted(
            {int(p) for p in plan.cpost} | set(np.flatnonzero(plan.boff >= 0).tolist())
        )

    def _tables(self) -> tuple[tuple[str, dict], ...]:
        """The factor tables by their checkpoint tag."""
        return (("in", self.c_in), ("out", self.c_out), ("inv_in", self.inv_in),
                ("inv_out", self.inv_out))  # fmt: skip

    def snapshot(self) -> tuple:
        """The factors as they are (the tables hold new arrays after every step, so shallow
        copies suffice), for :meth:`restore`."""
        return tuple(dict(d) for _, d in self._tables()), self.count

    def restore(self, snap: tuple) -> None:
        tables, self.count = snap
        for (_, d), saved in zip(self._tables(), tables):
            d.clear()
            d.update(saved)

    def step(self, v: NGDViews) -> None:
        """One natural-gradient step, in place through the views."""
        s, pl = self.spec, self.plan
        some = v.W[0] if v.W else next(b for b in v.b if b is not None)
        ops = ArrayOps(some)
        pres, posts = self.pres, self.posts
        for q in pres:
            self.c_in[q] = ops.moment(v.fx[q], self.c_in.get(q), s.decay)
        if s.c_out == "empirical":
            for p in posts:
                self.c_out[p] = ops.moment(v.eps[p], self.c_out.get(p), s.decay)
        if self.count % s.refresh == 0:
            for q in pres:
                n = self.c_in[q].shape[0]
                self.inv_in[q] = ops.inv(self.c_in[q] + s.damping_in * ops.eye(n))
            for p in posts:
                self.inv_out[p] = self._out_inverse(p, v, ops)
        self.count += 1
        for c, (q, p) in enumerate(zip(pl.cpre, pl.cpost)):
            u = ops.matmul(_left(self.inv_out[int(p)], v.Gw[c], ops), self.inv_in[int(q)])
            _apply(v.W[c], u, s, v.mask_w[c])
        for p, b in enumerate(v.b):
            if b is not None:
                u = _left(self.inv_out[p], v.Gb[p], ops) * (1.0 / (1.0 + s.damping_in))
                _apply(b, u, s, v.mask_b[p])

    def _out_inverse(self, p: int, v: NGDViews, ops: ArrayOps):
        """``(C_out + damping_out I)^-1``: a number, a per-unit vector or a matrix."""
        s = self.spec
        if s.c_out == "empirical":
            n = self.c_out[p].shape[0]
            return ops.inv(self.c_out[p] + s.damping_out * ops.eye(n))
        pi = v.pi[p] if s.c_out == "precision" else None
        if pi is None:  # unit precision, or the identity factor
            return 1.0 / (1.0 + s.damping_out)
        if pi.ndim == 2:
            return ops.inv(pi + s.damping_out * ops.eye(pi.shape[0]))
        return 1.0 / (pi + s.damping_out)

    # ---- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The factors as float64 host arrays (``"in/<pop>"``, ``"out/<pop>"``, inverses as
        ``"inv_in/<pop>"``, ``"inv_out/<pop>"``) and ``"count"``."""
        out: dict[str, np.ndarray] = {"count": np.array(self.count)}
        for tag, d in self._tables():
            for p, a in d.items():
                out[f"{tag}/{self.plan.names[p]}"] = _host(a)
        return out

    def load(self, state: dict[str, np.ndarray], like) -> None:
        """Restore :meth:`state` (arrays converted like ``like``, a backend array)."""
        ops = ArrayOps(like)
        self.count = int(state["count"])
        for tag, d in self._tables():
            d.clear()
            for k, a in state.items():
                if k.startswith(tag + "/"):
                    d[self.plan.index(k[len(tag) + 1 :])] = (
                        float(a) if np.ndim(a) == 0 else ops.asarray(a)
                    )


def _left(inv, m, ops: ArrayOps):
    """``inv @ m`` for a matrix, a per-row scaling for a vector, a product for a number."""
    if isinstance(inv, float):
        return m * inv
    if inv.ndim == 1:
        return m * (inv[:, None] if m.ndim == 2 else inv)
    return ops.matmul(inv, m if m.ndim == 2 else m[:, None]).reshape(m.shape)


def _apply(p, u, s: NaturalGradient, mask) -> None:
    if s.weight_decay != 0.0:
        u = u + s.weight_decay * p
    if mask is not None:
        u = u * mask
    p -= s.lr * u


def _finite(a) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.isfinite(a.sum()))  # a NaN or inf anywhere makes the sum non-finite
    return bool(a.isfinite().all()) if a.numel() < 4096 else bool(a.sum().isfinite())


def _host(a) -> np.ndarray:
    if isinstance(a, float):
        return np.array(a)
    if isinstance(a, np.ndarray):
        if a.ndim == 2:  # a factor kept as its upper triangle (ArrayOps.moment): symmetrise
            a = np.triu(a) + np.triu(a, 1).T
        return a.astype(np.float64)
    return a.detach().to("cpu").double().numpy()


def host_step(state: NGDState, backend, phase: str):
    """Apply one natural-gradient step to ``backend``'s parameters (its ``ngd_views``, from the
    batch it just ran with gradients). A step that leaves a parameter non-finite is undone and
    raises :class:`~neuropc.errors.DivergenceError` (``source="optimizer"``) naming it, with the
    factors as before. Returns a function that undoes the step (for a later failure)."""
    saved, factors = backend.get_params(), state.snapshot()

    def undo() -> None:
        backend.set_params(saved)
        state.restore(factors)

    views = backend.ngd_views()
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging step is reported below
        state.step(views)
    # a quick test of what the step wrote (a sum per array), then the exact one if it fails (a
    # sum of finite values can overflow)
    if not all(_finite(p) for p in (*views.W, *(b for b in views.b if b is not None))):
        bad = np.flatnonzero(~np.isfinite(backend.get_params()))
        if len(bad):
            undo()
            name, index = state.plan.locate(int(bad[0]))
            raise DivergenceError(None, None, phase, parameter=name, index=index)
    return undo
