"""K-FAC natural gradient for the backprop twin (:mod:`neuropc.reference.backprop`), in torch.

:class:`KFAC` applies, to the twin's parameters, the update that :class:`~neuropc.dynamics.
natural_gradient.NaturalGradient` documents for PC, written independently here. For every dense
connection ``pre -> post`` (``W`` ``(n_post, n_pre)``)::

    W <- W - lr [ (C_out + damping_out I)^-1  G  (C_in + damping_in I)^-1  +  weight_decay W ]
    b <- b - lr [ (C_out + damping_out I)^-1  g_b / (1 + damping_in)      +  weight_decay b ]

* ``G = dL/dW``, ``g_b = dL/db``: autograd of the twin's loss :func:`~neuropc.reference.backprop.
  loss` (a batch mean).
* ``C_in`` (one per presynaptic population): the second moment of the twin's feed-forward
  activations ``a = f(x_pre)`` (``(B, n_pre)``), ``<a a^T> = a^T a / B``; the first batch sets
  it, later ones move it by ``C_in <- (1 - decay) C_in + decay <a a^T>``.
* ``C_out`` (one per post population, i.e. every population with an incoming connection or a
  bias), by ``spec.c_out``:

  - ``"precision"``: the post's precision ``Pi`` as an ``(n, n)`` matrix: its ``"pop:precision"``
    parameter if it has one (a scalar times ``I``, ``diag`` of a vector, or the full matrix),
    else the network's fixed per-unit precision (1 for non-Gaussians);
  - ``"empirical"``: the EMA (same rule and ``decay``) of ``<delta delta^T>``, with
    ``delta_b = -B dL/dmu_b`` the per-sample backprop delta at the post's prediction ``mu`` (so
    ``delta_b = -d loss_b / d mu_b`` of sample ``b``'s own energy; for a Gaussian output
    ``Pi (y_b - mu_b)``). Under the fixed-prediction assumption this is PC's error ``eps``;
  - ``"identity"``: ``I``.

* The damped inverses are recomputed when ``count % refresh == 0`` (``count`` = learning batches
  before this one, so the first batch computes them) from the factors *after* this batch's EMA
  step; in between, the factors keep moving but the stored inverses are used.
* Frozen parameters (:func:`~neuropc.reference.backprop.is_trainable` false) are not touched.

Signs: ``G`` is the gradient of the loss, so every step above is a descent step.

:func:`exact_natural_gradient` is the oracle for tiny networks: the exact Fisher natural-gradient
direction ``(F + damping I)^-1 g`` over all trainable weights and biases.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..dynamics.natural_gradient import NaturalGradient
from ..model import energy as _energy
from ..model import operators
from ..model.distributions import Gaussian, Precision, energy_torch
from ..model.network import Network
from . import backprop as _bp

__all__ = ["KFAC", "exact_natural_gradient", "precision_matrix"]


class KFAC:
    """The K-FAC optimiser of the backprop twin with the settings of ``spec`` (see the module
    docstring for the exact update). :meth:`step` updates a parameter dict in place.

    Factors, keyed by population name (all ``(n, n)`` matrices of the parameters' dtype):
    ``c_in`` (presynaptic populations), ``c_out`` (posts, ``"empirical"`` only), ``inv_in`` =
    ``(C_in + damping_in I)^-1`` and ``inv_out`` = ``(C_out + damping_out I)^-1`` (posts, always a
    matrix, also for ``"precision"`` / ``"identity"``); ``count`` = learning batches so far."""

    def __init__(self, network: Network, spec: NaturalGradient) -> None:
        if not isinstance(spec, NaturalGradient):
            raise TypeError(f"KFAC needs an npc.NaturalGradient; got {type(spec).__name__}")
        for c in network.connections:
            if not getattr(operators.get(c.kind), "kronecker", False):
                raise ValueError(
                    f"KFAC: connection {c.name!r} is of kind {c.kind!r}, whose Fisher block has "
                    "no Kronecker form"
                )
            if any(len(network[q].shape) > 1 for q in (*c.pres, c.post)):
                raise ValueError(
                    f"KFAC: connection {c.name!r} joins shaped populations; the Kronecker-"
                    "factored update runs flat populations only"
                )
        if spec.require_learned and spec.c_out == "precision":
            for post in sorted({c.post for c in network.connections}):
                prec = getattr(network[post].distribution, "precision", None)
                if not (isinstance(prec, Precision) and prec.learn is not None):
                    raise ValueError(
                        f"KFAC(require_learned=True): population {post!r} has no learned precision"
                    )
        self.network = network
        self.spec = spec
        order = network.topological_order()
        self.pres = [n for n in order if any(c.pre == n for c in network.connections)]
        self.posts = [n for n in order if network.has_error(n)]
        self.c_in: dict[str, torch.Tensor] = {}
        self.c_out: dict[str, torch.Tensor] = {}
        self.inv_in: dict[str, torch.Tensor] = {}
        self.inv_out: dict[str, torch.Tensor] = {}
        self.count = 0

    def step(self, params: dict[str, torch.Tensor], data: Mapping[str, object]) -> float:
        """One K-FAC step on a batch: ``params`` (tensors keyed like ``Simulator.parameters()``)
        are updated in place (trainable weights and biases only); ``data`` holds an array for
        every population clamped in ``"train"``. Returns the loss before the step."""
        net, s = self.network, self.spec
        _bp._check_params(net, params)
        dtype = next(iter(params.values())).dtype
        leaves = {
            k: p.detach().clone().requires_grad_(not k.endswith(":precision"))
            for k, p in params.items()
        }
        value, values, probes = _forward(net, leaves, data, dtype)
        learnable = [k for k in leaves if not k.endswith(":precision")]
        targets = [leaves[k] for k in learnable] + [probes[p] for p in self.posts]
        if value.requires_grad:
            grads = torch.autograd.grad(value, targets, allow_unused=True)
        else:  # no population contributes to the loss
            grads = (None,) * len(targets)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]
        grad = dict(zip(learnable, grads[: len(learnable)]))
        batch = next(iter(probes.values())).shape[0] if probes else 1
        with torch.no_grad():
            for q in self.pres:
                a = net[q].activation.torch(values[q])
                self.c_in[q] = self._ema(self.c_in.get(q), a.T @ a / a.shape[0])
            if s.c_out == "empirical":
                for p, dl_dmu in zip(self.posts, grads[len(learnable) :]):
                    delta = -batch * dl_dmu
                    self.c_out[p] = self._ema(self.c_out.get(p), delta.T @ delta / batch)
            if self.count % s.refresh == 0:
                for q in self.pres:
                    self.inv_in[q] = _damped_inverse(self.c_in[q], s.damping_in)
                for p in self.posts:
                    self.inv_out[p] = _damped_inverse(self._c_out(p, leaves, dtype), s.damping_out)
            self.count += 1
            for c in net.connections:
                if _bp.is_trainable(net, c.name):
                    u = self.inv_out[c.post] @ grad[c.name] @ self.inv_in[c.pre]
                    self._apply(params[c.name], u)
            for p in self.posts:
                key = f"{p}:bias"
                if key in params and _bp.is_trainable(net, key):
                    self._apply(params[key], self.inv_out[p] @ grad[key] / (1.0 + s.damping_in))
        return float(value.detach())

    def state(self) -> dict[str, np.ndarray]:
        """The factors as float64 numpy arrays, keys ``"in/<pop>"``, ``"out/<pop>"``,
        ``"inv_in/<pop>"``, ``"inv_out/<pop>"`` (always matrices), and ``"count"``."""
        out: dict[str, np.ndarray] = {"count": np.array(self.count)}
        for tag, d in (("in", self.c_in), ("out", self.c_out), ("inv_in", self.inv_in),
                       ("inv_out", self.inv_out)):  # fmt: skip
            for name, a in d.items():
                out[f"{tag}/{name}"] = a.detach().cpu().double().numpy()
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _ema(self, old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        return new if old is None else (1.0 - self.spec.decay) * old + self.spec.decay * new

    def _c_out(self, post: str, params: Mapping[str, torch.Tensor], dtype) -> torch.Tensor:
        n = self.network[post].size
        if self.spec.c_out == "empirical":
            return self.c_out[post]
        if self.spec.c_out == "identity":
            return torch.eye(n, dtype=dtype)
        return precision_matrix(self.network, params, post, dtype)

    def _apply(self, p: torch.Tensor, u: torch.Tensor) -> None:
        if self.spec.weight_decay != 0.0:
            u = u + self.spec.weight_decay * p
        p.sub_(self.spec.lr * u.to(p.dtype))


def precision_matrix(
    net: Network, params: Mapping[str, object], name: str, dtype: torch.dtype
) -> torch.Tensor:
    """``Pi`` of population ``name`` as an ``(n, n)`` matrix: its ``"name:precision"`` parameter
    (scalar -> ``pi I``, vector -> ``diag``, matrix as is) if ``params`` has one, else the
    network's fixed per-unit precision on the diagonal."""
    n = net[name].size
    key = f"{name}:precision"
    if key in params:
        pi = torch.as_tensor(params[key], dtype=dtype).detach()
    else:
        pi = torch.as_tensor(np.array(net[name].precision, np.float64), dtype=dtype)
    if pi.ndim == 2:
        return pi.clone()
    return torch.diag(pi.expand(n).clone())


def _damped_inverse(c: torch.Tensor, damping: float) -> torch.Tensor:
    return torch.linalg.inv(c + damping * torch.eye(c.shape[0], dtype=c.dtype))


def _forward(
    net: Network, params: Mapping[str, torch.Tensor], data: Mapping[str, object], dtype
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The twin's forward pass and loss, with a zero probe ``z_p`` ``(B, n_p)`` added to every
    prediction ``mu_p`` so that ``dL/dz_p = dL/dmu_p`` per sample. Returns ``(loss, values,
    probes)``: ``values`` the feed-forward values (``"test"`` clamps: the data; every other
    population its prediction), ``loss`` the same number as :func:`backprop.loss`."""
    clamped_test, clamped_train = net.clamped("test"), net.clamped("train")
    arrays = _bp._batch_data(net, data, sorted(clamped_train | clamped_test), dtype)
    if not arrays:
        raise ValueError("KFAC needs data for at least one population (the batch size)")
    batch = int(next(iter(arrays.values())).shape[0])
    values: dict[str, torch.Tensor] = {}
    mus: dict[str, torch.Tensor] = {}
    probes: dict[str, torch.Tensor] = {}
    for name in net.topological_order():
        mu = _energy.prediction(net, params, values, name)
        if mu is not None:
            probes[name] = torch.zeros(batch, net[name].size, dtype=dtype, requires_grad=True)
            mus[name] = mu.expand(batch, net[name].size) + probes[name]
        if name in clamped_test:
            values[name] = arrays[name]
        elif mu is None:
            raise ValueError(
                f"population {name!r} is free at test time but has no incoming connection and no "
                "bias (prior mean), so it cannot be computed feed-forward"
            )
        else:
            values[name] = mus[name]
    total = torch.zeros((), dtype=dtype)
    for name in net.topological_order():
        if name in clamped_train and name in mus:
            pi = _loss_precision(net, params, name, dtype)
            e = energy_torch(net[name].distribution, arrays[name], mus[name], True, pi)
            total = total + e.mean()
    return total, values, probes


def _loss_precision(net: Network, params: Mapping[str, object], name: str, dtype):
    """``Pi`` in the form the energy takes it (per-unit vector or full matrix), as in
    :func:`backprop.loss`."""
    key = f"{name}:precision"
    if key in params:
        pi = torch.as_tensor(params[key], dtype=dtype).detach()
        return pi.expand(net[name].size) if pi.ndim == 0 else pi
    return torch.as_tensor(np.array(net[name].precision, np.float64), dtype=dtype).expand(
        net[name].size
    )


# ---- the oracle -------------------------------------------------------------------------------
def exact_natural_gradient(
    net: Network,
    params: Mapping[str, object],
    data: Mapping[str, object],
    *,
    damping: float = 0.0,
) -> dict[str, np.ndarray]:
    """The exact Fisher natural-gradient direction ``(F + damping I)^-1 g`` of the twin's loss
    (float64), for tiny networks.

    ``theta`` is the concatenation of every trainable weight and bias (flattened row-major, in
    the order of :func:`backprop.parameter_names`; precisions and frozen parameters are
    constants). The outputs are the populations whose energy :func:`backprop.loss` counts (clamped
    in ``"train"``, with a prediction); all must be Gaussian. With ``mu(x; theta)`` their
    concatenated predictions and ``Pi`` their block-diagonal precision, the model's likelihood is
    ``N(y; mu(x; theta), Pi^-1)``, whose score is ``s = J^T Pi (y - mu)`` with
    ``J = d mu / d theta``; for ``y`` drawn from the model ``E_y[s s^T] = J^T Pi Sigma Pi J =
    J^T Pi J`` exactly (``Sigma = Pi^-1``), so::

        F = mean_b J_b^T Pi J_b,     J_b = d mu(x_b) / d theta  (per-sample, torch autograd)

    (also the Gauss-Newton matrix of the loss), and ``g = dL/dtheta``
    (:func:`backprop.gradients`). ``damping = 0`` needs ``F`` invertible (a singular ``F`` gives
    the least-squares solution). Returns the direction per parameter (shaped like it), keyed by
    name, trainable weights and biases only; the natural-gradient step is ``-lr`` times it."""
    _bp._check_params(net, params)
    p64 = {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in params.items()}
    d64 = {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in data.items()}
    keys = [k for k in _bp.parameter_names(net) if _bp.is_trainable(net, k)]
    clamped = net.clamped("train")
    outputs = [n for n in net.topological_order() if n in clamped and net.has_error(n)]
    for n in outputs:
        if not isinstance(net[n].distribution, Gaussian):
            raise ValueError(
                f"exact_natural_gradient: output {n!r} is {type(net[n].distribution).__name__}; "
                "only Gaussian outputs are defined"
            )
    if not keys or not outputs:
        raise ValueError("exact_natural_gradient: no trainable parameter or no output")
    batch = int(next(iter(d64.values())).shape[0])
    shapes = [tuple(p64[k].shape) for k in keys]
    sizes = [int(np.prod(s)) for s in shapes]
    theta0 = torch.cat([p64[k].reshape(-1) for k in keys])

    def mean_outputs(theta: torch.Tensor) -> torch.Tensor:
        par = dict(p64)
        for k, piece, shape in zip(keys, torch.split(theta, sizes), shapes):
            par[k] = piece.reshape(shape)
        values = _bp.feedforward(net, par, d64, phase="test")
        mus = [_energy.prediction(net, par, values, n) for n in outputs]
        return torch.cat([m.expand(batch, net[n].size) for m, n in zip(mus, outputs)], dim=1)

    jac = torch.autograd.functional.jacobian(mean_outputs, theta0)  # (B, m, P)
    pi = torch.block_diag(*[precision_matrix(net, p64, n, torch.float64) for n in outputs])
    fisher = torch.einsum("bmp,mn,bnq->pq", jac, pi, jac).numpy() / batch
    g_all = _bp.gradients(net, {k: v.numpy() for k, v in p64.items()}, data)
    g = np.concatenate([g_all[k].reshape(-1) for k in keys])
    a = fisher + damping * np.eye(len(g))
    direction = np.linalg.lstsq(a, g, rcond=None)[0]
    return {
        k: piece.reshape(shape)
        for k, piece, shape in zip(keys, np.split(direction, np.cumsum(sizes)[:-1]), shapes)
    }
