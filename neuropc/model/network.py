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

import numpy as np

from .. import validation as _v
from . import activations as _act
from . import distributions as _dist
from . import encoder as _enc
from . import operators as _ops
from .operators import WEIGHT_INITS

ROLES = ("hidden", "input", "target")
PHASES = ("train", "test")


@dataclass(frozen=True, eq=False)
class Population:
    """A named population of ``size`` rate units (read-only: change it with
    :meth:`Network.update`, which validates the change and marks simulators built before as stale).

    ``distribution`` (:mod:`neuropc.model.distributions`; default a Gaussian) defines its energy
    and the error it sends to its prediction. ``precision`` (scalar or one value per unit) is the
    Gaussian's precision, which weights the prediction error (1 for other distributions).
    ``bias`` adds a learnable bias to its prediction; on a population with no incoming connection it
    is a learnable prior mean ``mu = b`` (and gives the population an error population).
    ``bias_init`` is the initial bias (scalar or per unit).
    """

    name: str
    size: int
    activation: _act.Activation
    role: str = "hidden"
    precision: float | np.ndarray = 1.0
    bias: bool = True
    bias_init: float | np.ndarray = 0.0
    trainable_bias: bool = True
    distribution: _dist.Distribution = field(default_factory=_dist.Gaussian)

    @property
    def value(self) -> str:
        """Address of the value population, e.g. ``"h1:value"``."""
        return f"{self.name}:value"

    @property
    def error(self) -> str:
        """Address of the error population, e.g. ``"h1:error"``."""
        return f"{self.name}:error"


@dataclass(frozen=True, eq=False)
class Connection:
    """Connection ``pre -> post`` of operator ``kind`` (:mod:`neuropc.model.operators`; ``"dense"``
    contributes ``W f(x_pre)`` to ``mu_post``); read-only.

    ``init`` names the weight initialiser (see :data:`WEIGHT_INITS`); ``gain`` scales it.
    """

    pre: str
    post: str
    init: str = "xavier_uniform"
    gain: float = 1.0
    trainable: bool = True
    kind: str = "dense"

    @property
    def name(self) -> str:
        return f"{self.pre}->{self.post}"


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
        size: int,
        *,
        activation: str | _act.Activation = "linear",
        role: str = "hidden",
        precision: float | Sequence[float] | np.ndarray = 1.0,
        distribution: _dist.Distribution | None = None,
        bias: bool | None = None,
        bias_init: float | Sequence[float] | np.ndarray = 0.0,
        trainable_bias: bool = True,
        slope: float | None = None,
    ) -> Population:
        """Add a population. ``bias`` defaults to True except for roles ``"input"``.
        ``distribution``: ``npc.Gaussian(precision=...)`` (the default, with ``precision``),
        ``npc.Bernoulli(energy=...)`` or ``npc.Categorical(energy=...)``."""
        if not isinstance(name, str) or not name or ":" in name or "->" in name:
            raise ValueError(
                f"population name must be a non-empty string without ':' or '->'; got {name!r}"
            )
        if name in self.populations:
            raise ValueError(f"population {name!r} already exists")
        if name in ("encoder", "total"):  # "encoder:..." parameters, the "total" energy probe
            raise ValueError(f"population name {name!r} is reserved; choose another")
        pop = _make_population(
            name, size, activation=activation, role=role, precision=precision,
            distribution=distribution, bias=(role != "input") if bias is None else bias, bias_init=bias_init,
            trainable_bias=trainable_bias, slope=slope,
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
        pop = _make_population(name, old.size, **kw)
        self.populations[name] = pop
        self.version += 1
        return pop

    def connect(
        self,
        pre: str,
        post: str,
        *,
        init: str = "xavier_uniform",
        gain: float = 1.0,
        trainable: bool = True,
        kind: str = "dense",
    ) -> Connection:
        """Add a connection ``pre -> post`` of operator ``kind`` (default ``"dense"``:
        ``mu_post += W f(x_pre)``; the registry is :data:`neuropc.model.operators.OPERATORS`)."""
        for n in (pre, post):
            self._require(n)
        if pre == post:
            raise ValueError(
                f"connection {pre}->{post}: a population cannot predict itself (cycle)"
            )
        if any(c.pre == pre and c.post == post for c in self.connections):
            raise ValueError(f"connection {pre}->{post} already exists")
        if init not in WEIGHT_INITS:
            raise ValueError(
                f"connection {pre}->{post}: unknown init {init!r}; valid: {', '.join(WEIGHT_INITS)}"
            )
        try:
            _ops.get(kind)
        except ValueError as e:
            raise ValueError(f"connection {pre}->{post}: {e}") from None
        gain = _v.number(gain, f"connection {pre}->{post}: gain")
        trainable = _v.flag(trainable, f"connection {pre}->{post}: trainable")
        conn = Connection(pre, post, init=init, gain=gain, trainable=trainable, kind=kind)
        self.connections.append(conn)
        try:
            self.topological_order()
        except ValueError:
            self.connections.pop()
            raise
        self.version += 1
        return conn

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
        return [c for c in self.connections if c.pre == name]

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
            indeg[c.post] += 1
        ready = [n for n in self.populations if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for c in self.connections:
                if c.pre == n:
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
                {"name": p.name, "size": p.size, "activation": p.activation.name,
                 "activation_param": p.activation.param, "role": p.role,
                 "precision": arr(p.precision), "bias": p.bias, "bias_init": arr(p.bias_init),
                 "distribution": _dist.to_spec(p.distribution),
                 "trainable_bias": p.trainable_bias}
                for p in self.populations.values()
            ],
            "connections": [
                {"pre": c.pre, "post": c.post, "init": c.init, "gain": c.gain,
                 "trainable": c.trainable, "kind": c.kind}
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
                    p["name"], p["size"], activation=act, role=p["role"],
                    precision=1.0 if "precision" in dspec else p["precision"], bias=p["bias"],
                    bias_init=p["bias_init"], distribution=_dist.from_spec(dspec, p["precision"]),
                    trainable_bias=p["trainable_bias"],
                    slope=param if act == "leaky_relu" else None,
                )  # fmt: skip
            for c in spec["connections"]:
                net.connect(
                    c["pre"], c["post"], init=c["init"], gain=c["gain"],
                    trainable=c["trainable"], kind=c.get("kind", "dense"),
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
            lines.append(
                f"{n:<14}{p.size:>6}  {p.activation.name:<11}  {p.role:<6}  "
                f"{'yes' if self.has_error(n) else 'no':<5}  {'Y' if n in tr else '-'}/{'Y' if n in te else '-'}"
            )
        lines += [f"  {c.name}" for c in self.connections]
        return "\n".join(lines)


def _make_population(
    name: str,
    size: object,
    *,
    activation: str | _act.Activation,
    role: str,
    precision: object,
    distribution: object = None,
    bias: object,
    bias_init: object,
    trainable_bias: object,
    slope: object,
) -> Population:
    """A validated :class:`Population` (every message names the population)."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"population {name!r}: size must be a positive integer; got {size!r}")
    if role not in ROLES:
        raise ValueError(f"population {name!r}: unknown role {role!r}; valid: {', '.join(ROLES)}")
    if slope is not None:
        slope = _v.number(slope, f"population {name!r}: slope")
    try:
        act = _act.get(activation, slope=slope)
    except ValueError as e:
        raise ValueError(f"population {name!r}: {e}") from None
    precision, dist = _distribution(name, precision, distribution)
    if isinstance(precision, _dist.Precision):  # a parameter: its initial value, per unit
        precision = _initial_precision(name, precision, int(size))
    prec = _per_unit(name, "precision", precision, int(size))
    if np.any(~np.isfinite(prec)) or np.any(prec <= 0):
        raise ValueError(
            f"population {name!r}: precision must be finite and > 0; got {precision!r}"
        )
    binit = _per_unit(name, "bias_init", bias_init, int(size))
    if np.any(~np.isfinite(binit)):
        raise ValueError(f"population {name!r}: bias_init must be finite; got {bias_init!r}")
    prec.flags.writeable = False  # read-only like the population itself
    binit.flags.writeable = False
    return Population(
        name=name,
        size=int(size),
        activation=act,
        role=role,
        precision=prec if np.ndim(precision) else float(prec[0]),
        distribution=dist,
        bias=_v.flag(bias, f"population {name!r}: bias"),
        bias_init=binit if np.ndim(bias_init) else float(binit[0]),
        trainable_bias=_v.flag(trainable_bias, f"population {name!r}: trainable_bias"),
    )


def _initial_precision(name: str, p: _dist.Precision, n: int) -> np.ndarray:
    """The per-unit initial precision of a :class:`Precision` (its diagonal for a full one),
    after checking ``init``: finite and positive; symmetric positive definite when full."""
    try:
        pi = p.initial(n)
    except ValueError as e:
        raise ValueError(f"population {name!r}: {e}") from None
    want = {"scalar": (), "diag": (n,), "full": (n, n)}[p.kind]
    if pi.shape != want:
        raise ValueError(
            f"population {name!r}: Precision(kind={p.kind!r}).init must be a number or have "
            f"shape {want}; got shape {pi.shape}"
        )
    if not np.all(np.isfinite(pi)):
        raise ValueError(f"population {name!r}: Precision.init must be finite; got {p.init!r}")
    if p.kind == "full":
        if not np.allclose(pi, pi.T) or np.linalg.eigvalsh(0.5 * (pi + pi.T)).min() <= 0:
            raise ValueError(
                f"population {name!r}: a full Precision.init must be symmetric positive definite"
            )
        return np.diag(pi).copy()
    if np.any(pi <= 0):
        raise ValueError(f"population {name!r}: precision must be finite and > 0; got {p.init!r}")
    return np.broadcast_to(pi, (n,)).copy()


def _distribution(name: str, precision: object, distribution: object) -> tuple[object, object]:
    """The population's (precision, distribution): ``precision=`` is the Gaussian's precision
    (given there or inside ``npc.Gaussian``, not both); other distributions have none."""
    if distribution is None:
        return precision, _dist.Gaussian(precision=precision)
    if not isinstance(distribution, (_dist.Gaussian, _dist.Bernoulli, _dist.Categorical)):
        raise TypeError(
            f"population {name!r}: distribution must be npc.Gaussian(), npc.Bernoulli() or "
            f"npc.Categorical(); got {distribution!r}"
        )
    given = not (np.ndim(precision) == 0 and _is_numeric(precision) and float(precision) == 1.0)
    if isinstance(distribution, _dist.Gaussian):
        if isinstance(distribution.precision, _dist.Precision):
            if given and precision is not distribution.precision:
                raise ValueError(
                    f"population {name!r}: give the precision once, in npc.Gaussian(precision="
                    f"npc.Precision(...)); got also precision={precision!r}"
                )
            return distribution.precision, distribution
        if given and distribution.precision is not precision:
            inner = np.asarray(distribution.precision, dtype=float)
            if inner.shape != np.shape(precision) or not np.array_equal(inner, precision):
                raise ValueError(
                    f"population {name!r}: give the precision once, in npc.Gaussian(precision=...)"
                    f" or as precision=; got {precision!r} and {distribution.precision!r}"
                )
        return distribution.precision, distribution
    if given:
        raise ValueError(
            f"population {name!r}: a {distribution.name} population has no precision; got "
            f"precision={precision!r}"
        )
    return 1.0, distribution


def clamped_set(roles: dict[str, str], extra: dict, phase: str) -> frozenset[str]:
    """Clamped populations in ``phase``: role ``input`` always, ``target`` only in ``"train"``,
    plus those clamped explicitly for that phase."""
    out = set(extra.get(phase, ()))
    out.update(n for n, r in roles.items() if r == "input" or (r == "target" and phase == "train"))
    return frozenset(out)


def _per_unit(pop: str, what: str, v: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    a = _v.finite_array(v, f"population {pop!r}: {what}") if _is_numeric(v) else None
    if a is None:
        raise TypeError(f"population {pop!r}: {what} must be a number or numbers; got {v!r}")
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(
            f"population {pop!r}: {what} must be a scalar or have shape ({n},); got shape {a.shape}"
        )
    return a.copy()


def _is_numeric(v: object) -> bool:
    if isinstance(v, (str, bytes, bool, np.bool_)) or v is None:
        return False
    try:
        return np.asarray(v).dtype.kind in "iuf"
    except Exception:
        return False


def _find_cycle(net: Network) -> list[str]:
    adj: dict[str, list[str]] = {n: [] for n in net.populations}
    for c in net.connections:
        adj[c.pre].append(c.post)
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
