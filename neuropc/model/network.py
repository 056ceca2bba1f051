"""Declarative description of a predictive-coding network.

A :class:`Network` is a directed acyclic graph of named *populations* joined by dense
*connections*. Every population has a **value** population ``x`` (``"name:value"``). A population
that receives a prediction (it has incoming connections, or a learnable prior mean) also has an
**error** population ``"name:error"``.

Conventions, stated once and used everywhere in neuropc:

* prediction: ``mu_post = sum_{pre -> post} W f(x_pre) + b_post`` with ``W`` of shape
  ``(n_post, n_pre)``. The activation ``f`` belongs to the *presynaptic* population and is applied
  to its value (Whittington & Bogacz 2017, "bio" variant; Bogacz 2017). We use this form because
  every term of the energy then stays local: the weight update needs only ``eps_post`` and
  ``f(x_pre)``, and the value update needs only ``f'`` of the population's own units.
* error: ``eps = Pi (x - mu)``, the *precision-weighted* prediction error (Bogacz 2017), so a
  positive error means the value is above its prediction.
* Gaussian energy of one sample: ``F = sum_p 1/2 (x_p - mu_p)^T Pi_p (x_p - mu_p)``
  (fixed precision, so the log-normaliser is a constant and is left out).

Populations are clamped to data per *phase*. Role ``"input"`` is clamped in every phase, role
``"target"`` only while training (``"train"``); labels are never clamped at test time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import validation as _v
from . import activations as _act
from . import distributions as _dist
from . import encoder as _enc
from . import operators as _ops
from .operators import WEIGHT_INITS
from .population import ROLES, Population, make_population

PHASES = ("train", "test")
__all__ = ["PHASES", "ROLES", "Connection", "Network", "Population", "clamped_set"]


@dataclass(frozen=True, eq=False)
class Connection:
    """Connection ``pre -> post`` of operator ``kind`` (:mod:`neuropc.model.operators`; ``"dense"``
    contributes ``W f(x_pre)`` to ``mu_post``); read-only. An operator of several inputs (e.g.
    ``attention_scores``, queries and keys) has the further presynaptic populations in
    ``extra_pres`` and is named ``"q,k->A"``.

    ``init`` names the weight initialiser (see :data:`WEIGHT_INITS`); ``gain`` scales it;
    ``options`` are the operator's (e.g. ``heads``, ``causal``, ``stride``), as sorted pairs.
    """

    pre: str
    post: str
    init: str = "xavier_uniform"
    gain: float = 1.0
    trainable: bool = True
    kind: str = "dense"
    extra_pres: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def pres(self) -> tuple[str, ...]:
        """Every presynaptic population, in the operator's input order."""
        return (self.pre, *self.extra_pres)

    @property
    def name(self) -> str:
        return f"{','.join(self.pres)}->{self.post}"

    def operator(self) -> _ops.Operator:
        """The operator instance this connection runs."""
        return _ops.make(self.kind, dict(self.options))


@dataclass
class Network:
    """A DAG of populations and connections (see the module docstring for conventions)."""

    populations: dict[str, Population] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    _clamps: dict[str, set[str]] = field(default_factory=dict)
    encoder_spec: _enc.Encoder | None = None  # the recognition network, if declared
    version: int = 0  # bumped by every change, so simulators can notice they are stale

    # ---- building -------------------------------------------------------------------------
    def population(
        self,
        name: str,
        size: int | None = None,
        *,
        shape: Sequence[int] | None = None,
        dims: Sequence[str] | None = None,
        activation: str | _act.Activation = "linear",
        role: str = "hidden",
        precision: float | Sequence[float] | np.ndarray = 1.0,
        distribution: _dist.Distribution | None = None,
        bias: bool | None = None,
        bias_init: float | Sequence[float] | np.ndarray = 0.0,
        trainable_bias: bool = True,
        slope: float | None = None,
    ) -> Population:
        """Add a population of ``size`` units, or of ``shape`` (e.g. ``(T, d)``, ``(C, H, W)``)
        with axis names ``dims``. ``bias`` defaults to True except for roles ``"input"``.
        ``distribution``: ``npc.Gaussian(precision=...)`` (the default, with ``precision``),
        ``npc.Bernoulli(energy=...)`` or ``npc.Categorical(energy=..., axis=...)``."""
        if not isinstance(name, str) or not name or any(t in name for t in (":", "->", ",")):
            raise ValueError(
                f"population name must be a non-empty string without ':', '->' or ','; got {name!r}"
            )
        if name in self.populations:
            raise ValueError(f"population {name!r} already exists")
        if name in ("encoder", "total"):  # "encoder:..." parameters, the "total" energy probe
            raise ValueError(f"population name {name!r} is reserved; choose another")
        pop = make_population(
            name, size, activation=activation, role=role, precision=precision,
            distribution=distribution, bias=(role != "input") if bias is None else bias, bias_init=bias_init,
            trainable_bias=trainable_bias, slope=slope, shape=shape, dims=dims,
        )  # fmt: skip
        self.populations[name] = pop
        self.version += 1
        return pop

    def update(self, name: str, **changes: object) -> Population:
        """Change settings of population ``name`` (``precision=``, ``activation=``, ``slope=``,
        ``role=``, ``bias=``, ``bias_init=``, ``trainable_bias=``), validated as in
        :meth:`population`. Simulators built before refuse to run afterwards (build a new one;
        parameters carry over with ``sim.parameters()`` / ``load_parameters()``)."""
        old = self._require(name)
        allowed = (
            "activation",
            "slope",
            "role",
            "precision",
            "distribution",
            "bias",
            "bias_init",
            "trainable_bias",
        )
        bad = sorted(set(changes) - set(allowed))
        if bad:
            raise ValueError(
                f"population {name!r}: cannot update {', '.join(bad)}; updatable: {', '.join(allowed)}"
            )
        kw = {
            "activation": old.activation, "role": old.role, "precision": old.precision,
            "distribution": old.distribution,
            "bias": old.bias, "bias_init": old.bias_init, "trainable_bias": old.trainable_bias,
            "slope": None,
        }  # fmt: skip
        if "slope" in changes and "activation" not in changes:
            kw["activation"] = old.activation.name
        kw.update(changes)
        if "precision" in changes and "distribution" not in changes:
            d = old.distribution  # a new precision of the same Gaussian (others refuse one)
            if isinstance(d, _dist.Gaussian):
                kw["distribution"] = _dist.Gaussian(precision=changes["precision"], energy=d.energy)
        elif "distribution" in changes and "precision" not in changes:
            kw["precision"] = 1.0  # the new distribution's own (a Gaussian's precision=)
        if kw["role"] == "target" and "test" in {
            ph for ph, ns in self._clamps.items() if name in ns
        }:
            raise ValueError(
                f"population {name!r} is clamped at test time and cannot become a target"
            )
        pop = make_population(name, None, shape=old.shape, dims=old.dims, **kw)
        self.populations[name] = pop
        self.version += 1
        return pop

    def connect(
        self,
        pre: str | Sequence[str],
        post: str,
        *,
        init: str = "xavier_uniform",
        gain: float = 1.0,
        trainable: bool = True,
        kind: str = "dense",
        **options: Any,
    ) -> Connection:
        """Add a connection ``pre -> post`` of operator ``kind`` (default ``"dense"``:
        ``mu_post += W f(x_pre)``; the registry is :data:`neuropc.model.operators.OPERATORS`).
        An operator of several inputs takes a sequence of presynaptic populations, e.g.
        ``net.connect(("q", "k"), "A", kind="attention_scores", heads=2, causal=True)``;
        ``options`` are the operator's. The operator checks the populations' shapes here."""
        pres = (pre,) if isinstance(pre, str) else tuple(pre)
        label = f"{','.join(map(str, pres))}->{post}"
        for n in (*pres, post):
            self._require(n)
        if post in pres:
            raise ValueError(f"connection {label}: a population cannot predict itself (cycle)")
        if len(set(pres)) != len(pres):
            raise ValueError(f"connection {label}: a presynaptic population is repeated")
        if any(c.pres == pres and c.post == post for c in self.connections):
            raise ValueError(f"connection {label} already exists")
        if init not in WEIGHT_INITS:
            raise ValueError(
                f"connection {label}: unknown init {init!r}; valid: {', '.join(WEIGHT_INITS)}"
            )
        try:
            op = _ops.make(kind, options)
        except ValueError as e:
            raise ValueError(f"connection {label}: {e}") from None
        if len(pres) != op.arity:
            raise ValueError(
                f"connection {label}: kind {kind!r} takes {op.arity} presynaptic "
                f"population(s); got {len(pres)}"
            )
        gain = _v.number(gain, f"connection {label}: gain")
        trainable = _v.flag(trainable, f"connection {label}: trainable")
        conn = Connection(
            pres[0], post, init=init, gain=gain, trainable=trainable, kind=kind,
            extra_pres=pres[1:], options=tuple(sorted(options.items())),
        )  # fmt: skip
        self._check_shapes(conn, op)
        self.connections.append(conn)
        try:
            self.topological_order()
        except ValueError:
            self.connections.pop()
            raise
        self.version += 1
        return conn

    def _check_shapes(self, conn: Connection, op: _ops.Operator | None = None) -> None:
        """The operator's shape check, its message prefixed with the connection."""
        op = op or conn.operator()
        try:
            op.check(
                [self.populations[q].shape for q in conn.pres], self.populations[conn.post].shape
            )
        except _ops.ShapeError as e:
            raise _ops.ShapeError(f"connection {conn.name}: {e}") from None

    def encoder(self, source: str | Sequence[str], targets: str | Sequence[str],
                **settings: object) -> _enc.Encoder:  # fmt: skip
        """Declare the amortised recognition network ``q(targets | source)``
        (:mod:`neuropc.model.encoder`: ``hidden=(256,)``, ``activation="tanh"``,
        ``objective="jeffreys"``, ``reverse_samples=1``, ``init_logvar=0``); one per network."""
        if self.encoder_spec is not None:
            raise ValueError("the network already has an encoder (one per network)")
        self.encoder_spec = _enc.declare(self, source, targets, **settings)
        self.version += 1
        return self.encoder_spec

    def clamp(self, name: str, phases: str | Iterable[str]) -> None:
        """Clamp population ``name`` to data in the given phase(s), in addition to its role."""
        self._require(name)
        phases = [phases] if isinstance(phases, str) else list(phases)
        if "test" in phases and self.populations[name].role == "target":
            raise ValueError(
                f"population {name!r} is a target: labels are never clamped at test time"
            )
        for ph in phases:
            self._clamps.setdefault(ph, set()).add(name)
        self.version += 1

    def unclamp(self, name: str, phases: str | Iterable[str]) -> None:
        """Undo :meth:`clamp` for the given phase(s) (roles still apply)."""
        self._require(name)
        for ph in [phases] if isinstance(phases, str) else list(phases):
            self._clamps.get(ph, set()).discard(name)
        self.version += 1

    # ---- queries --------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Population:
        return self._require(name)

    def __contains__(self, name: object) -> bool:
        return name in self.populations

    def clamped(self, phase: str) -> frozenset[str]:
        """Names of the populations clamped to data in ``phase``."""
        roles = {n: p.role for n, p in self.populations.items()}
        return clamped_set(roles, self._clamps, phase)

    def incoming(self, name: str) -> list[Connection]:
        return [c for c in self.connections if c.post == name]

    def outgoing(self, name: str) -> list[Connection]:
        return [c for c in self.connections if name in c.pres]

    def has_error(self, name: str) -> bool:
        """True when the population receives a prediction (incoming connection or prior bias)."""
        return bool(self.incoming(name)) or self._require(name).bias

    def connection(self, name: str) -> Connection:
        for c in self.connections:
            if c.name == name:
                return c
        valid = ", ".join(c.name for c in self.connections) or "(none)"
        raise ValueError(f"unknown connection {name!r}; valid: {valid}")

    def resolve(self, address: str) -> tuple[str, str]:
        """Split ``"h1"``, ``"h1:value"`` or ``"h1:error"`` into ``(population, "value"|"error")``."""
        name, _, kind = address.partition(":")
        kind = kind or "value"
        self._require(name)
        if kind not in ("value", "error"):
            raise ValueError(
                f"unknown variable {kind!r} of population {name!r}; valid: value, error"
            )
        if kind == "error" and not self.has_error(name):
            raise ValueError(
                f"population {name!r} has no error population (it receives no prediction); "
                f"populations with errors: {', '.join(n for n in self.populations if self.has_error(n))}"
            )
        return name, kind

    def topological_order(self) -> list[str]:
        """Populations ordered so that every connection goes forward; raises on a cycle."""
        indeg = {n: 0 for n in self.populations}
        for c in self.connections:
            indeg[c.post] += len(c.pres)
        ready = [n for n in self.populations if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for c in self.connections:
                if n in c.pres:
                    indeg[c.post] -= 1
                    if indeg[c.post] == 0:
                        ready.append(c.post)
        if len(order) != len(self.populations):
            cyc = _find_cycle(self)
            raise ValueError(
                f"the connections form a cycle: {' -> '.join(cyc)}; a Network must be a DAG"
            )
        return order

    def validate(self) -> None:
        """Check the graph is usable: it has populations and no cycle."""
        if not self.populations:
            raise ValueError("the network has no populations")
        self.topological_order()

    def _require(self, name: str) -> Population:
        if name not in self.populations:
            valid = ", ".join(self.populations) or "(none)"
            raise ValueError(f"unknown population {name!r}; valid: {valid}")
        return self.populations[name]

    def spec(self) -> dict:
        """A JSON-able description of the network (stored in recordings)."""

        def arr(v):
            return np.asarray(v).tolist()

        return {
            "populations": [
                {"name": p.name, "size": p.size, "shape": list(p.shape), "dims": list(p.dims),
                 "activation": p.activation.name,
                 "activation_param": p.activation.param, "role": p.role,
                 "precision": arr(p.precision), "bias": p.bias, "bias_init": arr(p.bias_init),
                 "distribution": _dist.to_spec(p.distribution),
                 "trainable_bias": p.trainable_bias}
                for p in self.populations.values()
            ],
            "connections": [
                {"pre": c.pre, "post": c.post, "init": c.init, "gain": c.gain,
                 "trainable": c.trainable, "kind": c.kind,
                 **({"extra_pres": list(c.extra_pres)} if c.extra_pres else {}),
                 **({"options": dict(c.options)} if c.options else {})}
                for c in self.connections
            ],
            "clamps": {k: sorted(v) for k, v in self._clamps.items()},
            **({"encoder": self.encoder_spec.spec()} if self.encoder_spec else {}),
        }  # fmt: skip

    @classmethod
    def from_spec(cls, spec: Mapping) -> Network:
        """The network that :meth:`spec` describes (every field validated as when built by hand),
        so ``Network.from_spec(net.spec()).spec() == net.spec()``."""
        net = cls()
        try:
            for p in spec["populations"]:
                act, param = p["activation"], p.get("activation_param", 0.0)
                dspec = p.get("distribution", {"name": "gaussian"})
                net.population(
                    p["name"], p["size"], shape=p.get("shape"), dims=p.get("dims"),
                    activation=act, role=p["role"],
                    precision=1.0 if "precision" in dspec else p["precision"], bias=p["bias"],
                    bias_init=p["bias_init"], distribution=_dist.from_spec(dspec, p["precision"]),
                    trainable_bias=p["trainable_bias"],
                    slope=param if act == "leaky_relu" else None,
                )  # fmt: skip
            for c in spec["connections"]:
                net.connect(
                    (c["pre"], *c.get("extra_pres", ())), c["post"], init=c["init"],
                    gain=c["gain"], trainable=c["trainable"], kind=c.get("kind", "dense"),
                    **c.get("options", {}),
                )  # fmt: skip
            for phase, names in spec.get("clamps", {}).items():
                for n in names:
                    net.clamp(n, phase)
            if spec.get("encoder"):
                net.encoder_spec = _enc.from_spec(net, spec["encoder"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a valid network description: missing or bad field {e}") from None
        return net

    def summary(self) -> str:
        """A short human-readable description."""
        lines = ["population      size  activation   role    error  clamped(train/test)"]
        tr, te = self.clamped("train"), self.clamped("test")
        for n in self.topological_order():
            p = self.populations[n]
            shape = "" if len(p.shape) == 1 else f"  shape {p.shape}"
            lines.append(
                f"{n:<14}{p.size:>6}  {p.activation.name:<11}  {p.role:<6}  "
                f"{'yes' if self.has_error(n) else 'no':<5}  {'Y' if n in tr else '-'}/{'Y' if n in te else '-'}{shape}"
            )
        lines += [f"  {c.name}" + (f"  ({c.kind})" if c.kind != "dense" else "")
                  for c in self.connections]  # fmt: skip
        return "\n".join(lines)


def clamped_set(roles: dict[str, str], extra: dict, phase: str) -> frozenset[str]:
    """Clamped populations in ``phase``: role ``input`` always, ``target`` only in ``"train"``,
    plus those clamped explicitly for that phase."""
    out = set(extra.get(phase, ()))
    out.update(n for n, r in roles.items() if r == "input" or (r == "target" and phase == "train"))
    return frozenset(out)


def _find_cycle(net: Network) -> list[str]:
    adj: dict[str, list[str]] = {n: [] for n in net.populations}
    for c in net.connections:
        for q in c.pres:
            adj[q].append(c.post)
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in adj[u]:
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state:
                r = dfs(v)
                if r:
                    return r
        state[u] = 2
        stack.pop()
        return None

    for n in net.populations:
        if n not in state:
            r = dfs(n)
            if r:
                return r
    return []
