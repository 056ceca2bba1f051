"""A like-for-like VAE (Kingma & Welling 2014) for Langevin PC (Zahid et al. 2023, issue 12).

``VAE.from_simulator(sim)`` takes from a simulator whose network declares an encoder
(``net.encoder(...)``):

* the **same decoder**: the network's generative model, with the same parameters (the
  simulator's current values), priors and likelihoods (a Bernoulli or Categorical data
  population, or a Gaussian of the network's fixed precision, whose variance is ``1/Pi``);
* the **same encoder architecture and initial weights** (``sim.parameters()["encoder:..."]``):
  ``q_phi(z|x) = N(mu_phi(x), diag s_phi(x)^2)`` over the encoder's targets, which must be every
  population free in ``"train"`` (the latents);
* the **same optimiser settings** (``sim.optimizer``, fresh state), and a copy of the simulator's
  shuffling stream, so that ``fit`` sees the same minibatches in the same order as ``sim.fit``.

It trains decoder and encoder jointly on the reparameterised negative ELBO, one sample per data
point (``encoder.reverse_samples`` of them)::

    L(theta, phi) = mean_x [ 1/K sum_k F(x, mu + s xi_k; theta) - H[q_phi(.|x)] ]
                  = -ELBO(x) - C            (C: the constants F leaves out)

which is exactly the encoder's reverse-KL objective (:mod:`neuropc.dynamics.amortised`) with the
decoder learning too. ``elbo`` / ``log_weights`` add ``C`` back (:mod:`neuropc.analysis.likelihood`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..analysis import generative as _gen
from ..analysis import likelihood as _lik
from ..dynamics.amortised import AmortisedEncoder
from ..dynamics.optim import Adam, Optimizer, check_optimizer, torch_optimizer
from ..dynamics.plan import lower
from ..model.network import Network
from ..sampling import ancestral
from .backprop import is_trainable, train_epochs

if TYPE_CHECKING:
    from ..simulator import Simulator


class VAE:
    """A VAE with a network's decoder and encoder (module docstring)."""

    def __init__(
        self,
        network: Network,
        params: Mapping[str, np.ndarray],
        *,
        optimizer: Optimizer | None = None,
        dtype: np.dtype | str = "float64",
        rng: np.random.Generator | None = None,
        seed: int = 0,
    ) -> None:
        import torch

        spec = network.encoder_spec
        if spec is None:
            raise ValueError("VAE needs a network with an encoder (net.encoder(...))")
        clamped = network.clamped("train")
        free = [n for n in network.populations if n not in clamped]
        if sorted(free) != sorted(spec.targets):
            raise ValueError(
                f"VAE: the encoder's targets {list(spec.targets)} must be exactly the populations "
                f"free in 'train' {free}"
            )
        self.network, self.clamped = network, sorted(clamped)
        self.optimizer = optimizer or Adam()
        check_optimizer(self.optimizer, "VAE optimizer")
        self.encoder = AmortisedEncoder(network, spec, np.dtype(dtype), np.random.default_rng(0))
        self.encoder.set({k: self.encoder.check(k, v) for k, v in params.items()
                          if k.startswith("encoder:")})  # fmt: skip
        tdt = self.encoder.tdt
        self.theta = {
            k: torch.tensor(np.asarray(v, np.float64), dtype=tdt,
                            requires_grad=is_trainable(network, k))
            for k, v in params.items() if not k.startswith("encoder:")
        }  # fmt: skip
        learned = [t for t in self.theta.values() if t.requires_grad]
        self._opt = torch_optimizer(self.optimizer, learned + list(self.encoder.params.values()))
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.noise_rng = np.random.default_rng(seed)
        self._plan = lower(network)

    @classmethod
    def from_simulator(cls, sim: Simulator, *, seed: int | None = None) -> VAE:
        """The VAE of ``sim`` as it is now (module docstring)."""
        return cls(sim.network, sim.parameters(), optimizer=sim.optimizer, dtype=sim.dtype,
                   rng=copy.deepcopy(sim.shuffle_rng),
                   seed=sim.seed if seed is None else seed)  # fmt: skip

    def parameters(self) -> dict[str, np.ndarray]:
        """Decoder and encoder parameters, float64 copies keyed like ``Simulator.parameters()``."""
        out = {k: t.detach().double().numpy().copy() for k, t in self.theta.items()}
        out.update(self.encoder.parameters())
        return out

    def loss(self, data: Mapping[str, np.ndarray], seed: int = 0):
        """The reparameterised negative ELBO minus ``C`` (module docstring), a torch scalar."""
        mu, lv = self.encoder.encode(self.encoder.inputs(data))
        return self.encoder.reverse_kl(mu, lv, data, self.clamped, self.theta, seed)

    def step(self, data: Mapping[str, np.ndarray]) -> float:
        """One optimiser step on a batch; returns the loss before it."""
        value = self.loss(data, int(self.noise_rng.integers(0, 2**31 - 1)))
        self._opt.zero_grad()
        value.backward()
        self._opt.step()
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
        """Train for ``epochs`` (one ``self.rng.permutation(n)`` per epoch, as ``Simulator.fit``);
        returns per-epoch records ``{"epoch", "loss", "seconds"}``."""
        arrays = {k: np.asarray(data[k]) for k in self.clamped}
        return train_epochs(self.step, arrays, self.rng, epochs=epochs, batch_size=batch_size,
                            shuffle=shuffle, callback=callback)  # fmt: skip

    def log_weights(self, data: Mapping[str, np.ndarray], k: int, seed: int = 0) -> np.ndarray:
        """``(N, k)`` log importance weights with the encoder as proposal (float64)."""
        return _lik.encoder_log_weights(self.network, self.parameters(), self.encoder, data, k,
                                        seed)  # fmt: skip

    def elbo(self, data: Mapping[str, np.ndarray], k: int = 1, seed: int = 0) -> np.ndarray:
        """Per data point: the ELBO estimated with ``k`` samples."""
        return _gen.elbo(self.log_weights(data, k, seed))

    def sample(
        self, n: int, *, seed: int = 0, mean: bool | Collection[str] = False
    ) -> dict[str, np.ndarray]:
        """``n`` ancestral samples of the decoder (:func:`neuropc.sampling.ancestral`)."""
        return ancestral(self.network, self._plan, self.parameters(), n,
                         np.random.default_rng(seed), mean=mean)  # fmt: skip
