"""Lowering of a :class:`~neuropc.model.network.Network` to a flat, backend-neutral plan.

The plan is plain data (integer and float arrays, no numerics): populations in topological order,
the column offset of every population in one value buffer of width ``n_value`` (and of every
error-bearing population in one error buffer of width ``n_error``), and the offset of every weight
matrix and bias in one flat parameter vector. Backends allocate ``(batch, n_value)`` and
``(batch, n_error)`` buffers and address populations as column blocks, which lets one compiled
kernel serve every graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model import operators as _ops
from ..model.distributions import Precision
from ..model.network import Network, clamped_set


@dataclass(frozen=True)
class Plan:
    names: tuple[str, ...]
    sizes: np.ndarray  # (P,) int64
    voff: np.ndarray  # (P,) column offset in the value buffers
    n_value: int
    has_err: np.ndarray  # (P,) bool
    eoff: np.ndarray  # (P,) column offset in the error buffers, -1 when no error population
    n_error: int
    act_code: np.ndarray  # (P,) int64
    act_param: np.ndarray  # (P,) float64
    conn_names: tuple[str, ...]
    conn_kinds: tuple[str, ...]  # operator of each connection (neuropc.model.operators)
    cpre: np.ndarray  # (C,) population index of the (first) pre
    cpost: np.ndarray  # (C,) population index of post
    # (C,) offset of the first parameter (a dense W (n_post, n_pre), row-major) in the flat
    # parameters, -1 for an operator without parameters
    cwoff: np.ndarray
    boff: np.ndarray  # (P,) offset of the bias in the flat parameters, -1 when none
    n_params: int
    precision: np.ndarray  # (n_error,) float64, per unit (1 for non-Gaussian populations)
    dist: np.ndarray  # (P,) int64 distribution code (neuropc.model.distributions), 0 = Gaussian
    # (P,) int64: 0 a fixed precision (a number or per unit), else a Precision parameter of kind
    # 1 scalar, 2 diag, 3 full (neuropc.dynamics.precision keeps its value)
    prec_kind: np.ndarray
    # (P,) int64: a Precision's rule, 0 none, 1 "gradient", 2 "ema"; (P,) bool: its timescale is
    # "fast" (re-estimated at every inference step); (P, 6) float64: the rule's options
    # (Precision.rule_options)
    prec_rule: np.ndarray
    prec_fast: np.ndarray
    prec_hp: np.ndarray
    trainable: np.ndarray  # (n_params,) float64, 1 where learnable else 0
    roles: tuple[str, ...]
    extra_clamps: dict[str, frozenset[str]]  # snapshot of Network.clamp() calls
    # the encoder's parameter names (neuropc.model.encoder), for weights / updates probes
    encoder_params: tuple[str, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()  # (P,) each population's shape
    axes: tuple[int, ...] = ()  # (P,) the axis a softmax / Categorical normalises over
    cpres: tuple[tuple[int, ...], ...] = ()  # (C,) every pre of each connection, in input order
    cops: tuple = ()  # (C,) the operator instances (neuropc.model.operators)
    # (C,) per connection: operator parameter name -> (key, flat offset, shape)
    cparams: tuple[dict[str, tuple[str, int, tuple[int, ...]]], ...] = ()
    # phase -> clamped names, filled on first use (asked for by every batch's data check)
    _clamped: dict[str, frozenset[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every connection parameter's name (``"pre->post"``, ``"pre->post:shift"``, ...)."""
        return tuple(k for cp in self.cparams for k, _, _ in cp.values())

    def flat_connection(self, c: int) -> bool:
        """Connection ``c`` is a plain dense map between flat populations, or between flattened
        ones (``dense(flatten=True)``): one gemm."""
        if self.conn_kinds[c] != "dense":
            return False
        return self.cops[c].options["flatten"] or all(
            len(self.shapes[q]) == 1 for q in (*self.cpres[c], int(self.cpost[c]))
        )

    @property
    def n_pops(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def clamped_mask(self, phase: str) -> np.ndarray:
        """Boolean mask (P,) of the populations clamped in ``phase``."""
        return np.array([n in self._clamped_for(phase) for n in self.names], dtype=np.bool_)

    def clamped_names(self, phase: str) -> frozenset[str]:
        return self._clamped_for(phase)

    def _clamped_for(self, phase: str) -> frozenset[str]:
        out = self._clamped.get(phase)
        if out is None:
            out = self._clamped[phase] = clamped_set(dict(zip(self.names, self.roles)),
                                                     self.extra_clamps, phase)  # fmt: skip
        return out

    def value_slice(self, name: str) -> slice:
        i = self.index(name)
        return slice(int(self.voff[i]), int(self.voff[i] + self.sizes[i]))

    def error_slice(self, name: str) -> slice:
        i = self.index(name)
        if not self.has_err[i]:
            raise ValueError(f"population {name!r} has no error population")
        return slice(int(self.eoff[i]), int(self.eoff[i] + self.sizes[i]))

    def weight_slice(self, key: str) -> tuple[slice, tuple[int, ...]]:
        """The flat slice and shape of connection parameter ``key`` (:attr:`param_names`; a
        connection's name is its first parameter, e.g. a dense ``W``)."""
        for cp in self.cparams:
            for k, o, shape in cp.values():
                if k == key:
                    return slice(o, o + int(np.prod(shape))), shape
        raise ValueError(
            f"unknown connection parameter {key!r}; valid: {', '.join(self.param_names) or '(none)'}"
        )

    def bias_slice(self, name: str) -> slice | None:
        i = self.index(name)
        if self.boff[i] < 0:
            return None
        return slice(int(self.boff[i]), int(self.boff[i] + self.sizes[i]))

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the ``"pre->post"`` weights and ``"pop:bias"`` biases in a flat vector."""
        out = {}
        for c in self.param_names:
            sl, shape = self.weight_slice(c)
            out[c] = flat[sl].reshape(shape).copy()
        for n in self.names:
            sl = self.bias_slice(n)
            if sl is not None:
                out[f"{n}:bias"] = flat[sl].copy()
        return out

    def locate(self, index: int) -> tuple[str, tuple[int, ...]]:
        """The parameter (``"pre->post"`` or ``"pop:bias"``) holding entry ``index`` of the flat
        vector, and the entry's index within it."""
        for c in self.param_names:
            sl, shape = self.weight_slice(c)
            if sl.start <= index < sl.stop:
                return c, tuple(int(i) for i in np.unravel_index(index - sl.start, shape))
        for n in self.names:
            sl = self.bias_slice(n)
            if sl is not None and sl.start <= index < sl.stop:
                return f"{n}:bias", (int(index - sl.start),)
        raise IndexError(f"flat parameter index {index} is out of range (0..{self.n_params - 1})")

    def gemm_calls(self, batch: int, steps: int, phase: str = "train") -> np.ndarray:
        """Rows ``(ta, tb, M, N, K, count)`` of the row-major gemms of one training batch: per
        connection, the forward prediction (once if the pre is clamped, else also every step and
        at the end), the ``steps`` error back-projections to a free pre, and the weight gradient."""
        cl = self.clamped_mask(phase)
        rows = []
        for c in range(len(self.conn_names)):
            if not self.flat_connection(c):  # (the gemm model covers flat dense connections)
                continue
            q, p = self.cpre[c], self.cpost[c]
            npre, npost = int(self.sizes[q]), int(self.sizes[p])
            rows.append((0, 1, batch, npost, npre, 1 + (0 if cl[q] else steps + 1)))
            if not cl[q]:
                rows.append((0, 0, batch, npre, npost, steps))
            rows.append((1, 0, npost, npre, batch, 1))
        return np.array(rows, dtype=np.int64).reshape(-1, 6)

    def matmul_flops(self, batch: int, steps: int, phase: str = "train") -> int:
        """Multiply-add FLOPs (2 per MAC) of the gemms of one training batch (:meth:`gemm_calls`)."""
        g = self.gemm_calls(batch, steps, phase)
        return int(2 * np.sum(g[:, 2] * g[:, 3] * g[:, 4] * g[:, 5]))


def lower(net: Network) -> Plan:
    """Validate ``net`` and lower it to a :class:`Plan`."""
    net.validate()
    names = tuple(net.topological_order())
    pops = [net.populations[n] for n in names]
    sizes = np.array([p.size for p in pops], dtype=np.int64)
    voff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    has_err = np.array([net.has_error(n) for n in names], dtype=np.bool_)
    eoff = np.full(len(names), -1, dtype=np.int64)
    e = 0
    for i in range(len(names)):
        if has_err[i]:
            eoff[i] = e
            e += sizes[i]
    # connections in the order of their post population, so predictions are built in topo order
    idx = {n: i for i, n in enumerate(names)}
    conns = sorted(net.connections, key=lambda c: (idx[c.post], *(idx[q] for q in c.pres)))
    cpre = np.array([idx[c.pre] for c in conns], dtype=np.int64)
    cpost = np.array([idx[c.post] for c in conns], dtype=np.int64)
    cwoff = np.full(len(conns), -1, dtype=np.int64)
    cops = tuple(c.operator() for c in conns)
    cparams = []
    trainable: list[np.ndarray] = []
    o = 0
    for k, (c, op) in enumerate(zip(conns, cops)):
        shapes = op.param_shapes([net[q].shape for q in c.pres], net[c.post].shape)
        entry = {}
        for j, (pname, shape) in enumerate(shapes.items()):
            if j == 0:
                cwoff[k] = o
            entry[pname] = (_ops.param_key(c.name, pname, j == 0), o, tuple(shape))
            n = int(np.prod(shape))
            trainable.append(np.full(n, 1.0 if c.trainable else 0.0))
            o += n
        cparams.append(entry)
    boff = np.full(len(names), -1, dtype=np.int64)
    for i, p in enumerate(pops):
        if p.bias:
            boff[i] = o
            trainable.append(np.full(p.size, 1.0 if p.trainable_bias else 0.0))
            o += p.size
    precision = (
        np.concatenate(
            [
                np.broadcast_to(np.asarray(p.precision, np.float64), (p.size,))
                for p, h in zip(pops, has_err)
                if h
            ]
        )
        if has_err.any()
        else np.zeros(0)
    )
    return Plan(
        names=names,
        sizes=sizes,
        voff=voff,
        n_value=int(sizes.sum()),
        has_err=has_err,
        eoff=eoff,
        n_error=int(e),
        act_code=np.array([p.activation.code for p in pops], dtype=np.int64),
        act_param=np.array([p.activation.param for p in pops], dtype=np.float64),
        conn_names=tuple(c.name for c in conns),
        conn_kinds=tuple(c.kind for c in conns),
        cpre=cpre,
        cpost=cpost,
        cwoff=cwoff,
        boff=boff,
        n_params=o,
        precision=np.ascontiguousarray(precision, dtype=np.float64),
        dist=np.array([p.distribution.code for p in pops], dtype=np.int64),
        prec_kind=np.array([_prec_kind(p) for p in pops], dtype=np.int64),
        **_prec_rules(pops),
        trainable=np.concatenate(trainable) if trainable else np.zeros(0),
        roles=tuple(p.role for p in pops),
        extra_clamps={ph: frozenset(v) for ph, v in net._clamps.items()},
        encoder_params=tuple(net.encoder_spec.layer_shapes(
            {n: p.size for n, p in net.populations.items()})) if net.encoder_spec else (),
        shapes=tuple(p.shape for p in pops),
        axes=tuple(p.axis for p in pops),
        cpres=tuple(tuple(idx[q] for q in c.pres) for c in conns),
        cops=cops,
        cparams=tuple(cparams),
    )  # fmt: skip


def _prec_kind(pop) -> int:
    prec = getattr(pop.distribution, "precision", None)
    if isinstance(prec, Precision):
        return 1 + ("scalar", "diag", "full").index(prec.kind)
    return 0


def _prec_rules(pops) -> dict[str, np.ndarray]:
    rule = np.zeros(len(pops), np.int64)
    fast = np.zeros(len(pops), np.bool_)
    hp = np.zeros((len(pops), 6), np.float64)
    for i, pop in enumerate(pops):
        prec = getattr(pop.distribution, "precision", None)
        if isinstance(prec, Precision) and prec.learn is not None:
            rule[i] = 1 + ("gradient", "ema").index(prec.learn)
            fast[i] = prec.timescale == "fast"
            hp[i] = prec.rule_options(pop.size)
    return {"prec_rule": rule, "prec_fast": fast, "prec_hp": hp}
