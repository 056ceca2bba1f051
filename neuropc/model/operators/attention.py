"""Attention as separate predictive-coding nodes (Pinchetti et al. 2022): ``attention_scores``
predicts the (pre-softmax) scores from queries and keys; the attention probabilities are their
own population (a Categorical layer: softmax over the last axis); ``attention_values`` predicts
the output from those probabilities and the values. Neither has parameters (the q/k/v
projections are ordinary ``dense`` connections)."""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import torch

from . import Operator, ShapeError, shape_str
from .conv import int_option

# Score given to the key positions a causal mask hides. Finite on purpose: exp(MASK - max) is
# exactly 0 in float32 (underflow below ~-104) and float64 (below ~-745) as long as the row's
# real scores are far above MASK, so the softmax puts exactly zero mass there; yet log-softmax
# stays finite (about -1e4), so KL / cross-entropy terms p log p give 0 * finite = 0, where -inf
# would give 0 * -inf = NaN. It is representable in float16 too (max 65504).
MASK = -1e4


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """``(B, L, D) -> (B, h, L, D / h)``: head ``i`` holds columns ``i dh : (i + 1) dh``."""
    b, n, d = x.shape
    return x.reshape(b, n, h, d // h).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``(B, h, L, dh) -> (B, L, h dh)``, the inverse of :func:`_heads`."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def _shapes(op: Operator, pre_shapes, post_shape) -> str:
    names = ("q", "k") if op.name == "attention_scores" else ("P", "v")
    pres = ", ".join(f"{n} shape {shape_str(s)}" for n, s in zip(names, pre_shapes))
    return f"pre shapes {pres}; post shape {shape_str(post_shape)}"


def _prob_shape_ok(h: int, p: tuple[int, ...], t: int, s: int) -> bool:
    """A probability/score population of ``h`` heads: ``(h, T, S)``, or ``(T, S)`` when h = 1."""
    return p == (h, t, s) or (h == 1 and p == (t, s))


class AttentionScores(Operator):
    """``mu_post[b, h, i, j] += scale * sum_c q_h[b, i, c] k_h[b, j, c]`` with queries ``q``
    ``(T, D)`` and keys ``k`` ``(S, D)``, head ``h`` using columns ``h dh : (h + 1) dh``
    (``dh = D / heads``); ``scale=None`` means ``1 / sqrt(dh)``. With ``causal=True`` (needs
    T = S) every entry with key position ``j > i`` is the constant :data:`MASK` instead (and
    carries no gradient). The post has shape ``(heads, T, S)``, or ``(T, S)`` when heads = 1.

    vjps: ``dq_h = scale eps_h k_h``, ``dk_h = scale eps_h^T q_h`` (masked entries of eps
    dropped). Of the two heads = 1 post layouts (the same numbers in the same flat order),
    :meth:`forward` returns the one :meth:`check` saw, ``(1, T, S)`` on an unchecked instance."""

    name = "attention_scores"
    arity = 2
    OPTIONS: ClassVar[dict[str, Any]] = {"heads": 1, "causal": False, "scale": None}
    differentiable = (True, True)

    def _validate(self) -> None:
        int_option(self, "heads")
        c, sc = self.options["causal"], self.options["scale"]
        if not isinstance(c, bool):
            raise ValueError(f"{self.name}: option causal must be True or False; got {c!r}")
        if sc is not None:
            ok = isinstance(sc, numbers.Real) and not isinstance(sc, bool)
            if not ok or not math.isfinite(float(sc)) or float(sc) <= 0:
                raise ValueError(
                    f"{self.name}: option scale must be None or a positive float; got {sc!r}"
                )
        self._flat: bool | None = None  # post (T, S) rather than (heads, T, S); set by check

    def check(self, pre_shapes, post_shape) -> None:
        q, k = (tuple(s) for s in pre_shapes)
        post, h = tuple(post_shape), self.options["heads"]
        where = _shapes(self, (q, k), post)
        if len(q) != 2 or len(k) != 2:
            if self.options["causal"]:
                raise ShapeError(
                    f"attention_scores(causal=True): a causal mask needs sequence populations "
                    f"of shape (T, d) for queries and keys; got {where}"
                )
            raise ShapeError(f"attention_scores needs q (T, D) and k (S, D); got {where}")
        if q[1] != k[1]:
            raise ShapeError(f"attention_scores: q and k differ in width D; got {where}")
        if q[1] % h:
            raise ShapeError(f"attention_scores: D = {q[1]} is not divisible by heads={h}; {where}")
        if self.options["causal"] and q[0] != k[0]:
            raise ShapeError(
                f"attention_scores(causal=True) needs as many queries as keys (T = S); got {where}"
            )
        if not _prob_shape_ok(h, post, q[0], k[0]):
            want = shape_str((h, q[0], k[0])) + (f" or {shape_str((q[0], k[0]))}" if h == 1 else "")
            raise ShapeError(f"attention_scores(heads={h}): expected post shape {want}; {where}")
        self._flat = len(post) == 2

    def _scale(self, d: int) -> float:
        sc = self.options["scale"]
        return 1.0 / math.sqrt(d / self.options["heads"]) if sc is None else float(sc)

    def _mask(self, t: int, s: int, device) -> torch.Tensor | None:
        if not self.options["causal"]:
            return None
        return torch.ones(t, s, dtype=torch.bool, device=device).triu(1)  # key j > query i

    def forward(self, f_pres, theta) -> torch.Tensor:
        h = self.options["heads"]
        q, k = f_pres
        scores = self._scale(q.shape[-1]) * (_heads(q, h) @ _heads(k, h).transpose(-1, -2))
        mask = self._mask(q.shape[1], k.shape[1], q.device)
        if mask is not None:
            scores = scores.masked_fill(mask, MASK)
        # (T, S) and (1, T, S) posts hold the same numbers in the same flat order; an unchecked
        # instance returns the latter
        return scores[:, 0] if self._flat else scores

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        h = self.options["heads"]
        q, k = f_pres
        e = eps.unsqueeze(1) if eps.dim() == 3 else eps  # (B, T, S) post: heads = 1
        mask = self._mask(q.shape[1], k.shape[1], q.device)
        if mask is not None:  # the masked entries are constants
            e = e.masked_fill(mask, 0.0)
        sc = self._scale(q.shape[-1])
        dq = sc * (e @ _heads(k, h))
        dk = sc * (e.transpose(-1, -2) @ _heads(q, h))
        return [_merge(dq), _merge(dk)]


class AttentionValues(Operator):
    """``mu_post[b, i, h dh + c] += sum_j P_h[b, i, j] v_h[b, j, c]``: the probabilities ``P``
    (``(heads, T, S)``, or ``(T, S)`` when heads = 1) weight the values ``v`` ``(S, D)``, head
    ``h`` using columns ``h dh : (h + 1) dh`` of ``v`` and of the ``(T, D)`` post.
    vjps: ``dP_h = eps_h v_h^T``, ``dv_h = P_h^T eps_h``."""

    name = "attention_values"
    arity = 2
    OPTIONS: ClassVar[dict[str, Any]] = {"heads": 1}
    differentiable = (True, True)

    def _validate(self) -> None:
        int_option(self, "heads")

    def check(self, pre_shapes, post_shape) -> None:
        p, v = (tuple(s) for s in pre_shapes)
        post, h = tuple(post_shape), self.options["heads"]
        where = _shapes(self, (p, v), post)
        if len(v) != 2 or len(post) != 2 or len(p) not in (2, 3):
            raise ShapeError(
                f"attention_values needs P (heads, T, S), v (S, D) and a (T, D) post; got {where}"
            )
        if v[1] != post[1]:
            raise ShapeError(f"attention_values: v and the post differ in width D; got {where}")
        if v[1] % h:
            raise ShapeError(f"attention_values: D = {v[1]} is not divisible by heads={h}; {where}")
        if not _prob_shape_ok(h, p, post[0], v[0]):
            t, s = post[0], v[0]
            want = shape_str((h, t, s)) + (f" or {shape_str((t, s))}" if h == 1 else "")
            raise ShapeError(f"attention_values(heads={h}): expected P shape {want}; {where}")

    def forward(self, f_pres, theta) -> torch.Tensor:
        p, v = f_pres
        p4 = p.unsqueeze(1) if p.dim() == 3 else p  # (B, T, S): one head
        return _merge(p4 @ _heads(v, self.options["heads"]))

    def vjp_inputs(self, eps, f_pres, theta) -> list[torch.Tensor]:
        h = self.options["heads"]
        p, v = f_pres
        p4 = p.unsqueeze(1) if p.dim() == 3 else p
        e = _heads(eps, h)
        dp = e @ _heads(v, h).transpose(-1, -2)
        dv = p4.transpose(-1, -2) @ e
        return [dp[:, 0] if p.dim() == 3 else dp, _merge(dv)]


OPERATORS = (AttentionScores, AttentionValues)
