"""The backprop twin of a predictive-coding :class:`~neuropc.model.network.Network`, in torch.

The twin uses the network's own predictions (see :mod:`neuropc.model.network`)::

    mu_post = sum_{pre -> post} W f(x_pre) + b_post,      W: (n_post, n_pre), f of the PRE population

computed feed-forward in topological order, and trains the same parameters by automatic
differentiation of :func:`loss`: the batch-mean energy of the populations clamped in ``"train"``
(the targets), with every other population at its feed-forward value. For a classifier that is
``mean_b 1/2 sum_i Pi_i (y_i - yhat_i)^2``, i.e. precision-weighted squared error.

Relation to predictive coding: forward initialisation (``Inference(init="forward")``) puts every
free population at its prediction, so every hidden error is zero and PC's energy at that state is
exactly :func:`loss` (when, as in a classifier, the targets predict no other population). PC's
local gradients at that state equal backprop's for the parameters of the targets' own predictions
(the last layer); the deeper layers receive their error only through inference, which is what
makes PC approximate backprop (Whittington & Bogacz 2017).

Public API: :func:`feedforward`, :func:`loss`, :func:`gradients`, :func:`torch_optimizer` and
:class:`BackpropModel` (whose ``optimizer=npc.NaturalGradient(...)`` steps with the K-FAC of
:mod:`neuropc.reference.natural_gradient`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..analysis import metrics as _metrics
from ..dynamics.natural_gradient import NaturalGradient
from ..dynamics.optim import Adam, Optimizer, torch_optimizer
from ..model import energy as _energy
from ..model.distributions import Precision
from ..model.network import Network

if TYPE_CHECKING:
    from ..simulator import Simulator

Tensors = Mapping[str, torch.Tensor]


# ---- parameters -------------------------------------------------------------------------------
def parameter_names(net: Network) -> list[str]:
    """Names of the network's parameters in the order of ``Simulator.parameters()``:
    ``"pre->post"`` weights (by post, then pre, in topological order), then ``"pop:bias"``."""
    order = {n: i for i, n in enumerate(net.topological_order())}
    conns = sorted(net.connections, key=lambda c: (order[c.post], *(order[q] for q in c.pres)))
    return (
        [key for c in conns for key, _, _ in _energy.connection_params(net, c)]
        + [f"{n}:bias" for n in order if net[n].bias]
        + [f"{n}:precision" for n in order if _has_precision_parameter(net, n)]
    )


def _has_precision_parameter(net: Network, name: str) -> bool:
    return isinstance(getattr(net[name].distribution, "precision", None), Precision)


def is_trainable(net: Network, key: str) -> bool:
    """Whether parameter ``key`` (``"pre->post"`` or ``"pop:bias"``) is learned by backprop (a
    ``"pop:precision"`` is not: the simulator's precision rules learn it)."""
    if key.endswith(":precision"):
        return False
    if key.endswith(":bias"):
        return net[key[: -len(":bias")]].trainable_bias
    return net.connection(key.split(":")[0]).trainable


def _check_params(net: Network, params: Mapping[str, object]) -> None:
    expected = parameter_names(net)
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        raise ValueError(
            f"parameters do not match the network (missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(extra) or 'none'}); expected: {', '.join(expected)}"
        )


# ---- the forward pass and the loss -----------------------------------------------------------
def _batch_data(net: Network, data: Mapping[str, object], need: Iterable[str], dtype) -> dict:
    """Data as tensors of ``dtype``, checking names, the required populations and batch sizes."""
    out: dict[str, torch.Tensor] = {}
    for name, arr in data.items():
        net[name]  # unknown names raise with the valid list
        out[name] = torch.as_tensor(arr, dtype=dtype)
    for name in need:
        if name not in out:
            raise ValueError(f"population {name!r} is clamped but no data was given for it")
    if len({int(t.shape[0]) for t in out.values()}) > 1:
        raise ValueError("the data arrays have different batch sizes")
    return out


def _dtype_of(params: Tensors, data: Mapping[str, object]) -> torch.dtype:
    for p in params.values():
        return p.dtype
    for d in data.values():
        if isinstance(d, torch.Tensor) and d.is_floating_point():
            return d.dtype
    return torch.get_default_dtype()


def feedforward(
    net: Network, params: Tensors, data: Mapping[str, torch.Tensor], phase: str = "test"
) -> dict[str, torch.Tensor]:
    """Values of every population, in topological order: the populations clamped in ``phase``
    take their data, every other population its prediction ``mu = sum W f(x_pre) + b``.

    ``params`` are tensors keyed like ``Simulator.parameters()``; ``data`` holds a ``(B, n)``
    array for every population clamped in ``phase`` (other entries are ignored). Data are cast to
    the parameters' dtype. A free population with neither an incoming connection nor a bias (prior
    mean) has no prediction: ``ValueError``.
    """
    _check_params(net, params)
    clamped = net.clamped(phase)
    dtype = _dtype_of(params, data)
    arrays = _batch_data(net, data, sorted(clamped), dtype)
    if not arrays:
        raise ValueError("feedforward needs data for at least one population (the batch size)")
    batch = int(next(iter(arrays.values())).shape[0])
    values: dict[str, torch.Tensor] = {}
    for name in net.topological_order():
        if name in clamped:
            values[name] = arrays[name]
            continue
        mu = _energy.prediction(net, params, values, name)
        if mu is None:
            raise ValueError(
                f"population {name!r} is free in phase {phase!r} but has no incoming connection and "
                "no bias (prior mean), so it cannot be computed feed-forward; clamp it or give it "
                "bias=True"
            )
        values[name] = mu.expand(batch, net[name].size) if mu.dim() == 1 else mu
    return values


def loss(net: Network, params: Tensors, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Backprop loss: batch-mean energy of the populations clamped in ``"train"`` that receive a
    prediction (their distribution's negative log-likelihood of the data, e.g.
    ``1/2 (x - mu)^T Pi (x - mu)`` for a Gaussian, the cross-entropy for a Categorical), with
    ``mu`` from the feed-forward values computed with only the ``"test"``-phase clamps (the
    inputs). For a Gaussian classifier: ``mean_b 1/2 sum_i Pi_i (y_i - yhat_i)^2``.

    This is exactly the PC energy when every hidden error is zero, i.e. PC's energy at the
    forward-initialised state of phase ``"train"`` (``Inference(init="forward")``, before any
    inference step), provided the populations clamped only in training (the targets) predict no
    other population, as in a classifier.
    """
    values = feedforward(net, params, data, phase="test")
    dtype = _dtype_of(params, data)
    clamped = net.clamped("train")
    arrays = _batch_data(net, data, sorted(clamped), dtype)
    total = torch.zeros((), dtype=dtype)
    for name in net.topological_order():
        if name not in clamped or not net.has_error(name):
            continue
        mu = _energy.prediction(net, params, values, name)
        key = f"{name}:precision"
        pi = (
            torch.as_tensor(params[key], dtype=dtype).expand(mu.shape[1])
            if key in params and np.ndim(params[key]) == 0
            else torch.as_tensor(params[key], dtype=dtype)
            if key in params
            else torch.as_tensor(np.array(net[name].precision), dtype=dtype)
        )
        total = total + _energy.population_energy(net, name, arrays[name], mu, True, pi).mean()
    return total


def gradients(
    net: Network,
    params_np: Mapping[str, np.ndarray],
    data_np: Mapping[str, np.ndarray],
    dtype: torch.dtype = torch.float64,
) -> dict[str, np.ndarray]:
    """Autograd gradients ``dL/dtheta`` of :func:`loss` w.r.t. every parameter (keys as in
    ``Simulator.parameters()``), as float64 numpy arrays; frozen parameters included."""
    _check_params(net, params_np)
    params = {
        k: torch.tensor(np.asarray(v, np.float64), dtype=dtype, requires_grad=True)
        for k, v in params_np.items()
    }
    data = {k: torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in data_np.items()}
    value = loss(net, params, data)
    keys = list(params)
    if not value.requires_grad:  # the loss depends on no parameter
        return {k: np.zeros(params[k].shape) for k in keys}
    grads = torch.autograd.grad(value, [params[k] for k in keys], allow_unused=True)
    return {
        k: np.zeros(params[k].shape) if g is None else g.detach().numpy().astype(np.float64)
        for k, g in zip(keys, grads)
    }


# ---- optimisers -------------------------------------------------------------------------------
def train_epochs(step: Callable[[dict], float], arrays: Mapping, rng: np.random.Generator, *,
                 epochs: int, batch_size: int, shuffle: bool = True,
                 callback: Callable[[dict], None] | None = None) -> list[dict]:  # fmt: skip
    """Minibatch training as ``Simulator.fit`` orders it: per epoch one ``rng.permutation(n)``
    (when ``shuffle``), then ``step(batch)`` on consecutive slices of ``batch_size`` (arrays or
    tensors, indexed alike). Returns ``{"epoch", "loss", "seconds"}`` per epoch (loss: the mean
    of the steps' returned losses); ``callback(record)`` after each epoch."""
    n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
    history = []
    for ep in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(n) if shuffle else np.arange(n)
        losses = [step({k: v[order[s : s + batch_size]] for k, v in arrays.items()})
                  for s in range(0, n, batch_size)]  # fmt: skip
        rec = {"epoch": ep, "loss": float(np.mean(losses)) if losses else float("nan")}
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if callback is not None:
            callback(rec)
    return history


# ---- the trainable twin -----------------------------------------------------------------------
class BackpropModel:
    """A network's predictions as a torch model, trained by backprop on :func:`loss`.

    >>> sim = Simulator(net, optimizer=Adam(1e-3), seed=0)
    >>> bp = BackpropModel.from_simulator(sim)   # before sim.fit: same weights, order, optimiser
    >>> sim.fit(data, epochs=5, batch_size=128); bp.fit(data, epochs=5, batch_size=128)

    "Trained the same way" as a simulator means: the same initial parameters, the same optimiser
    (fresh state, same hyper-parameters, see :func:`torch_optimizer`), and the same minibatches in
    the same order for the same ``epochs`` and ``batch_size``. :meth:`fit` draws one
    ``rng.permutation(n)`` per epoch, as ``Simulator.fit`` does from ``sim.shuffle_rng`` (a stream
    used for nothing else); ``from_simulator`` copies ``sim.shuffle_rng``. Frozen parameters
    (``trainable=False``, ``trainable_bias=False``) are not learned.

    ``optimizer=npc.NaturalGradient(...)`` trains with :class:`neuropc.reference.natural_gradient.
    KFAC` (``self.kfac``; ``self.torch_optimizer`` is None): the twin's side of a PC-vs-BP
    natural-gradient comparison with one settings object.
    """

    def __init__(
        self,
        network: Network,
        params: Mapping[str, np.ndarray],
        *,
        optimizer: Optimizer | None = None,
        dtype: torch.dtype = torch.float32,
        rng: np.random.Generator | None = None,
    ) -> None:
        _check_params(network, params)
        self.network = network
        self.dtype = dtype
        self.params = {
            k: torch.tensor(
                np.asarray(params[k], np.float64),
                dtype=dtype,
                requires_grad=is_trainable(network, k),
            )
            for k in parameter_names(network)
        }
        self.optimizer = optimizer or Adam()
        learned = [p for p in self.params.values() if p.requires_grad]
        self.kfac = None
        self.torch_optimizer = None
        if isinstance(self.optimizer, NaturalGradient):
            from .natural_gradient import KFAC

            self.kfac = KFAC(network, self.optimizer)
        elif learned:
            self.torch_optimizer = torch_optimizer(self.optimizer, learned)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    @classmethod
    def from_simulator(cls, sim: Simulator, *, dtype: torch.dtype | None = None) -> BackpropModel:
        """Twin of ``sim`` as it is now: its network, parameters, optimiser, dtype (unless given)
        and a copy of its shuffling generator (for the minibatch order)."""
        if dtype is None:
            dtype = torch.float64 if sim.dtype == np.float64 else torch.float32
        return cls(
            sim.network,
            sim.parameters(),
            optimizer=sim.optimizer,
            dtype=dtype,
            rng=copy.deepcopy(sim.shuffle_rng),
        )

    def parameters(self) -> dict[str, np.ndarray]:
        """All parameters as float64 numpy copies, keyed like ``Simulator.parameters()``."""
        return {k: p.detach().numpy().astype(np.float64) for k, p in self.params.items()}

    def step(self, data: Mapping[str, np.ndarray]) -> float:
        """One optimiser step on a batch (arrays for every population clamped in ``"train"``);
        returns the loss before the step."""
        if self.kfac is not None:
            return self.kfac.step(self.params, data)
        value = loss(self.network, self.params, data)
        if self.torch_optimizer is not None and value.requires_grad:
            self.torch_optimizer.zero_grad()
            value.backward()
            self.torch_optimizer.step()
        return float(value.detach())

    def fit(
        self,
        data: Mapping[str, np.ndarray],
        *,
        epochs: int = 1,
        batch_size: int = 64,
        shuffle: bool = True,
        callback: Callable[[dict], None] | None = None,
    ) -> list[dict]:
        """Train for ``epochs`` over ``data`` in minibatches; one ``self.rng.permutation(n)`` per
        epoch when ``shuffle``. Returns per-epoch records ``{"epoch", "loss", "seconds"}`` (loss:
        mean minibatch loss before each step)."""
        arrays = _batch_data(self.network, data, sorted(self.network.clamped("train")), self.dtype)
        return train_epochs(self.step, arrays, self.rng, epochs=epochs, batch_size=batch_size,
                            shuffle=shuffle, callback=callback)  # fmt: skip

    def predict(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed-forward values of the populations free at test time (targets are never clamped)."""
        with torch.no_grad():
            values = feedforward(self.network, self.params, data, phase="test")
        free = [n for n in values if n not in self.network.clamped("test")]
        return {n: values[n].numpy() for n in free}

    def accuracy(
        self,
        data: Mapping[str, np.ndarray],
        labels: np.ndarray,
        *,
        target: str | None = None,
        batch_size: int = 1000,
    ) -> float:
        """Fraction of samples whose argmax of the target's prediction equals ``labels``."""
        return _metrics.accuracy(
            self.predict, data, labels, target or _metrics.target_name(self.network), batch_size
        )
