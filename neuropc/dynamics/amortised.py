"""Amortised warm starts: running and training a network's encoder (Zahid et al. 2023).

The encoder (:mod:`neuropc.model.encoder`) is ``q_phi(z|x) = N(mu, diag s^2)``. With
``Inference(init="amortised")`` every batch does, for every backend alike (the encoder is a small
torch network on the host; the backends see its output as given initial values):

1. ``(mu, log s^2) = enc_phi(x)``; the targets start at ``z_0 = mu + s xi`` (``init_sample``,
   ``xi`` from the batch's noise seed) or at ``mu``.
2. The backend runs the chain and, when learning, the decoder's (the network's) update.
3. When learning, one optimiser step on ``phi`` (the same optimiser settings as the network's,
   with state of its own), with the decoder ``theta`` as it was *before* the batch (both
   gradients come from the same batch, as one autograd pass would give them). The objectives,
   per data point, averaged over the batch:

   * ``forward_kl``: ``L_f = -1/|S| sum_{z in S} log q_phi(z|x)``
     ``= sum_i [1/2 log 2 pi + 1/2 log s_i^2 + (m2_i - 2 m1_i mu_i + mu_i^2) / (2 s_i^2)]``,
     with ``m1``, ``m2`` the mean and mean square of ``z_i`` over the collected samples ``S``
     (``Inference.collect``; the backends gather these moments, or ``S`` is the final state);
   * ``reverse_kl``: ``L_r = 1/K sum_k F(mu + s xi_k, x; theta) - H[q]``,
     ``H[q] = sum_i 1/2 (1 + log 2 pi + log s_i^2)``: the negative ELBO of a VAE with this decoder,
     ``KL(q || p(z|x)) - log p(x)`` up to the constants F leaves out. Its gradient in ``phi`` runs
     by torch autograd through ``z = mu + s xi`` into :func:`neuropc.model.energy.total_energy`
     (the energy the backends are tested against), ``theta`` detached: so ``dL_r/dz`` is the PC
     value gradient ``dF/dz = eps_z - f'(z) sum_c W_c^T eps_post`` at the reparameterised sample;
   * ``jeffreys``: ``L_f + L_r``.

``reverse_kl`` and ``jeffreys`` need the targets to be every free population of the phase (q is
then a distribution over all latent values, and F is defined at its samples).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np

from ..errors import DivergenceError
from ..model import activations as _act
from ..model.encoder import Encoder
from ..model.network import Network
from .optim import Optimizer, torch_optimizer

_LOG2PI = math.log(2.0 * math.pi)


@contextmanager
def _one_thread():
    """The encoder is small: run it on one torch thread, so that torch's pool does not spin
    against the numba backend's BLAS threads on a small machine."""
    import torch

    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


class AmortisedEncoder:
    """The parameters, optimiser state and steps of a network's encoder (module docstring)."""

    def __init__(self, net: Network, spec: Encoder, dtype: np.dtype, rng: np.random.Generator):
        import torch

        self.net, self.spec = net, spec
        sizes = {n: p.size for n, p in net.populations.items()}
        self.shapes = spec.layer_shapes(sizes)
        self.target_sizes = [int(sizes[t]) for t in spec.targets]
        self.act = _act.get(spec.activation)
        self.tdt = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
        self.params = {k: torch.as_tensor(v, dtype=self.tdt).requires_grad_(True)
                       for k, v in _initial(self.shapes, spec, rng).items()}  # fmt: skip
        self._opt = None  # (settings, torch optimiser), made at the first learning batch
        self._saved = None
        self.losses: dict[str, float] = {}  # the last training batch's objective values

    # ---- parameters -------------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """float64 copies of phi, by parameter name."""
        return {k: _host(t) for k, t in self.params.items()}

    def check(self, name: str, value: object) -> np.ndarray:
        """``value`` as a float64 array for parameter ``name``, or a ValueError naming it."""
        if name not in self.shapes:
            raise ValueError(f"unknown encoder parameter {name!r}; valid: {', '.join(self.shapes)}")
        a = np.asarray(value, np.float64)
        if a.shape != self.shapes[name]:
            raise ValueError(f"encoder parameter {name!r}: expected shape {self.shapes[name]}; "
                             f"got {a.shape}")  # fmt: skip
        if not np.all(np.isfinite(a)):
            raise ValueError(f"encoder parameter {name!r}: holds NaN or inf")
        return a

    def set(self, checked: Mapping[str, np.ndarray]) -> None:
        import torch

        with torch.no_grad():
            for k, a in checked.items():
                self.params[k].copy_(torch.as_tensor(a, dtype=self.tdt))

    # ---- running ----------------------------------------------------------------------------
    def inputs(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """The encoder's input ``x``: the source populations' data, concatenated ``(B, n_in)``."""
        return np.concatenate([np.asarray(data[s]) for s in self.spec.sources], axis=1)

    def encode(self, x: np.ndarray):
        """``(mu, log s^2)`` as torch tensors ``(B, n_targets)`` (differentiable in phi)."""
        import torch

        h = torch.as_tensor(np.ascontiguousarray(x), dtype=self.tdt)
        P = self.params
        for i in range(len(self.spec.hidden)):
            h = self.act.torch(h @ P[f"encoder:{i}.W"].T + P[f"encoder:{i}.b"])
        mu = h @ P["encoder:mean.W"].T + P["encoder:mean.b"]
        return mu, h @ P["encoder:logvar.W"].T + P["encoder:logvar.b"]

    def warm_start(self, x: np.ndarray, seed: int, sample: bool) -> dict[str, np.ndarray]:
        """The targets' initial values: ``mu + s xi`` (``sample``) or ``mu``, per target."""
        import torch

        with _one_thread(), torch.no_grad():
            mu, lv = self.encode(x)
            z = mu
            if sample:
                z = mu + torch.exp(0.5 * lv) * _normal(mu.shape, seed, 0, self.tdt)
            parts = torch.split(z, self.target_sizes, dim=1)
            return {t: p.numpy() for t, p in zip(self.spec.targets, parts)}

    # ---- objectives -------------------------------------------------------------------------
    @staticmethod
    def forward_kl(mu, logvar, m1, m2):
        """Batch mean of ``-1/|S| sum_S log q(z|x)`` from the samples' moments (docstring)."""
        quad = (m2 - 2.0 * m1 * mu + mu * mu) * (-logvar).exp()
        return 0.5 * (_LOG2PI + logvar + quad).sum(dim=1).mean()

    def reverse_kl(self, mu, logvar, values: Mapping, clamped, theta: Mapping, seed: int):
        """Batch mean of ``1/K sum_k F(mu + s xi_k) - H[q]`` (docstring), differentiable in
        ``mu`` and ``logvar``; ``values``: the clamped populations' data ``(B, n)``."""
        import torch

        from ..model.energy import total_energy

        k, b = self.spec.reverse_samples, mu.shape[0]
        xi = _normal((k * b, mu.shape[1]), seed, 1, self.tdt)
        z = mu.repeat(k, 1) + torch.exp(0.5 * logvar).repeat(k, 1) * xi
        vals = {n: torch.as_tensor(np.ascontiguousarray(a), dtype=self.tdt).repeat(k, 1)
                for n, a in values.items()}  # fmt: skip
        vals.update(zip(self.spec.targets, torch.split(z, self.target_sizes, dim=1)))
        th = {n: torch.as_tensor(a, dtype=self.tdt) for n, a in theta.items()}
        f = total_energy(self.net, th, vals, clamped).reshape(k, b).mean(0)
        entropy = 0.5 * (1.0 + _LOG2PI + logvar).sum(dim=1)
        return (f - entropy).mean()

    # ---- learning ---------------------------------------------------------------------------
    def learn(self, x, m1, m2, values, clamped, theta, optimizer: Optimizer, seed: int,
              phase: str, reduce=None) -> dict[str, float]:  # fmt: skip
        """One optimiser step on phi (module docstring). ``m1``, ``m2``: the targets' sample
        moments ``(B, n_targets)``; ``theta``: the decoder's parameters (``Simulator.parameters``
        keys) before the batch. A step that leaves a non-finite parameter is undone and raises
        :class:`DivergenceError`; :meth:`undo` takes back the last step. ``reduce`` maps the
        batch's gradients (a list of tensors) to the whole minibatch's (data-parallel
        training)."""
        import torch

        obj = self.spec.objective
        with _one_thread():
            mu, lv = self.encode(x)
            loss = mu.new_zeros(())
            losses = {}
            if obj in ("forward_kl", "jeffreys"):
                m1t, m2t = (torch.as_tensor(np.ascontiguousarray(m), dtype=self.tdt)
                            for m in (m1, m2))  # fmt: skip
                lf = self.forward_kl(mu, lv, m1t, m2t)
                losses["forward_kl"] = float(lf.detach())
                loss = loss + lf
            if obj in ("reverse_kl", "jeffreys"):
                lr = self.reverse_kl(mu, lv, values, clamped, theta, seed)
                losses["reverse_kl"] = float(lr.detach())
                loss = loss + lr
            grads = torch.autograd.grad(loss, list(self.params.values()))
            if reduce is not None:
                grads = reduce(list(grads))
            opt = self._optimizer(optimizer)
            self._saved = ({k: t.detach().clone() for k, t in self.params.items()},
                           copy.deepcopy(opt.state_dict()))  # fmt: skip
            for t, g in zip(self.params.values(), grads):
                t.grad = g
            opt.step()
            for k, t in self.params.items():
                bad = ~torch.isfinite(t.detach())
                if bool(bad.any()):
                    self.undo()
                    index = tuple(int(i) for i in torch.nonzero(bad)[0])
                    raise DivergenceError(None, None, phase, parameter=k, index=index)
        self.losses = losses
        return losses

    def undo(self) -> None:
        """Put back phi and its optimiser state as before the last :meth:`learn` step."""
        if self._saved is None:
            return
        import torch

        params, state = self._saved
        with torch.no_grad():
            for k, t in self.params.items():
                t.copy_(params[k])
        self._opt[1].load_state_dict(state)
        self._saved = None

    def _optimizer(self, optimizer: Optimizer):
        if self._opt is None or self._opt[0] != optimizer:
            self._opt = (optimizer, torch_optimizer(optimizer, self.params.values()))
        return self._opt[1]

    # ---- optimiser state, for checkpoints ----------------------------------------------------
    def optimizer_state(self) -> dict[str, np.ndarray]:
        """``"<param>/<key>"`` -> float64 array of the torch optimiser's per-parameter state."""
        if self._opt is None:
            return {}
        names = list(self.params)
        st = self._opt[1].state_dict()["state"]
        return {f"{names[i]}/{k}": _host(v) for i, s in st.items() for k, v in s.items()}

    def set_optimizer_state(self, optimizer: Optimizer, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`optimizer_state` (for the optimiser settings ``optimizer``)."""
        import torch

        self._opt = None
        if not state:
            return
        opt = self._optimizer(optimizer)
        sd = opt.state_dict()
        names = list(self.params)
        per: dict[int, dict] = {}
        for key, a in state.items():
            name, _, k = key.rpartition("/")
            if name not in names:
                raise ValueError(f"encoder optimiser state for unknown parameter {name!r}")
            v = torch.as_tensor(np.asarray(a), dtype=torch.float32 if k == "step" else self.tdt)
            per.setdefault(names.index(name), {})[k] = v
        sd["state"] = per
        opt.load_state_dict(sd)


def _initial(shapes: Mapping[str, tuple], spec: Encoder, rng: np.random.Generator) -> dict:
    """Xavier-uniform weights and zero biases; the log-variance head starts at
    ``W = 0, b = init_logvar`` (every ``s^2 = exp(init_logvar)``)."""
    out = {}
    for k, shape in shapes.items():
        if k.startswith("encoder:logvar"):
            out[k] = np.zeros(shape) + (spec.init_logvar if k.endswith(".b") else 0.0)
        elif k.endswith(".b"):
            out[k] = np.zeros(shape)
        else:
            a = math.sqrt(6.0 / (shape[0] + shape[1]))
            out[k] = rng.uniform(-a, a, size=shape)
    return out


def _host(t) -> np.ndarray:
    """A float64 numpy copy of a tensor (or number)."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().double().numpy()
    return np.array(t, np.float64)


def _normal(shape, seed: int, stream: int, dtype):
    """Standard normals for the batch with noise seed ``seed`` (``stream`` 0: the warm start,
    1: the reverse-KL draws), independent of the chain's own noise stream."""
    import torch

    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([int(seed), 7919, stream]).generate_state(1)[0]))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64).to(dtype)
