"""The declaration of an amortised recognition network (an *encoder*, Zahid et al. 2023).

``net.encoder(source="image", targets=["z"], hidden=(256,), activation="tanh")`` declares

    q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2),
    h_0 = x,   h_l = a(A_l h_{l-1} + c_l)   (l = 1..L, the ``hidden`` layers, activation ``a``)
    mu = A_mu h_L + c_mu,   log sigma^2 = A_s h_L + c_s

over the concatenated values ``x`` of the ``source`` populations (data, clamped where the
encoder is used) and the concatenated values ``z`` of the ``targets`` (free Gaussian
populations, in the order given). With ``Inference(init="amortised")`` it starts their chains
(:mod:`neuropc.dynamics.amortised` trains it). Its parameters are named ``"encoder:0.W"``,
``"encoder:0.b"``, ... ``"encoder:mean.W"``, ``"encoder:mean.b"``, ``"encoder:logvar.W"``,
``"encoder:logvar.b"``, with ``W`` of shape ``(n_out, n_in)`` as the network's weights.

``objective`` is what the encoder learns from each training batch (the chain's samples ``S`` of
the targets, the decoder ``theta`` frozen):

* ``"forward_kl"``: ``-1/|S| sum_{z in S} log q_phi(z|x)`` (samples detached; fits q to the
  chain, mass-covering);
* ``"reverse_kl"``: ``E_{q_phi}[F(z, x; theta) + log q_phi(z|x)]`` by the reparameterisation
  ``z = mu + sigma xi`` (``reverse_samples`` draws of ``xi`` per data point), i.e. the negative
  ELBO of a VAE in ``phi``, which is ``KL(q || p(z|x)) - log p(x)`` up to the constants F omits;
* ``"jeffreys"`` (default, the ICML paper's Algorithm 1): their sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import validation as _v
from . import activations as _act

if TYPE_CHECKING:
    from .network import Network

OBJECTIVES = ("forward_kl", "reverse_kl", "jeffreys")
PREFIX = "encoder:"


@dataclass(frozen=True)
class Encoder:
    """A recognition network's settings (see the module docstring); build with
    :meth:`Network.encoder <neuropc.model.network.Network.encoder>`."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    hidden: tuple[int, ...] = (256,)
    activation: str = "tanh"
    objective: str = "jeffreys"
    reverse_samples: int = 1
    init_logvar: float = 0.0

    def layer_shapes(self, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape, given the population sizes."""
        n_in = sum(int(sizes[s]) for s in self.sources)
        n_out = sum(int(sizes[t]) for t in self.targets)
        shapes: dict[str, tuple[int, ...]] = {}
        for i, h in enumerate(self.hidden):
            shapes[f"{PREFIX}{i}.W"], shapes[f"{PREFIX}{i}.b"] = (h, n_in), (h,)
            n_in = h
        for head in ("mean", "logvar"):
            shapes[f"{PREFIX}{head}.W"], shapes[f"{PREFIX}{head}.b"] = (n_out, n_in), (n_out,)
        return shapes

    def spec(self) -> dict:
        return {"sources": list(self.sources), "targets": list(self.targets),
                "hidden": list(self.hidden), "activation": self.activation,
                "objective": self.objective, "reverse_samples": self.reverse_samples,
                "init_logvar": self.init_logvar}  # fmt: skip


def declare(
    net: Network,
    source: str | Sequence[str],
    targets: str | Sequence[str],
    *,
    hidden: Sequence[int] = (256,),
    activation: str = "tanh",
    objective: str = "jeffreys",
    reverse_samples: int = 1,
    init_logvar: float = 0.0,
) -> Encoder:
    """Validate an encoder declaration against ``net`` (see :class:`Encoder`)."""
    sources = _names(net, source, "source")
    tgts = _names(net, targets, "targets")
    both = sorted(set(sources) & set(tgts))
    if both:
        raise ValueError(f"encoder: population {both[0]!r} is both a source and a target")
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"encoder hidden must be a sequence of layer sizes; got {hidden!r}")
    hid = tuple(_v.integer(h, f"encoder hidden[{i}]", low=1) for i, h in enumerate(hidden))
    _act.get(activation)  # names the valid activations when unknown
    if objective not in OBJECTIVES:
        raise ValueError(f"encoder objective must be one of {', '.join(OBJECTIVES)}; got "
                         f"{objective!r}")  # fmt: skip
    enc = Encoder(
        sources=sources, targets=tgts, hidden=hid, activation=str(activation),
        objective=objective,
        reverse_samples=_v.integer(reverse_samples, "encoder reverse_samples", low=1),
        init_logvar=_v.number(init_logvar, "encoder init_logvar"),
    )  # fmt: skip
    check(net, enc)
    return enc


def check(net: Network, enc: Encoder) -> None:
    """Raise ``ValueError`` unless every target is a Gaussian population that receives a
    prediction (a prior or an incoming connection): q is a Gaussian over its values."""
    for t in enc.targets:
        if t not in net.populations:
            raise ValueError(f"encoder target {t!r} is not a population of the network")
        dist = net[t].distribution
        if type(dist).__name__ != "Gaussian":
            raise ValueError(
                f"encoder target {t!r} has a {type(dist).__name__} distribution; the encoder's "
                "q(z|x) is Gaussian and needs Gaussian targets"
            )
        if not net.has_error(t):
            raise ValueError(
                f"encoder target {t!r} has no prior (no bias and no incoming connection): the "
                "chain it starts would have no energy to sample; give it bias=True"
            )
    for s in enc.sources:
        if s not in net.populations:
            raise ValueError(f"encoder source {s!r} is not a population of the network")


def from_spec(net: Network, spec: Mapping) -> Encoder:
    """The encoder that :meth:`Encoder.spec` describes, validated against ``net``."""
    return declare(
        net, spec["sources"], spec["targets"], hidden=spec["hidden"],
        activation=spec["activation"], objective=spec["objective"],
        reverse_samples=spec.get("reverse_samples", 1), init_logvar=spec.get("init_logvar", 0.0),
    )  # fmt: skip


def _names(net: Network, v: str | Sequence[str], what: str) -> tuple[str, ...]:
    names = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, Sequence) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"encoder {what} must be a population name or a list of them; got {v!r}")
    for n in names:
        if n not in net.populations:
            raise ValueError(f"encoder {what}: unknown population {n!r}; valid: "
                             f"{', '.join(net.populations) or '(none)'}")  # fmt: skip
    if len(set(names)) != len(names):
        raise ValueError(f"encoder {what} lists a population twice: {list(names)}")
    return names
