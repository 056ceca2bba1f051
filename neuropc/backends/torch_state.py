"""The torch backend's parameters and optimiser state (:class:`ParameterState`), and the optimiser
step that updates them, with what a diverged step needs to be taken back.

A step is kept only if every new entry is finite, and a later failure of the batch (a learned
precision, an amortised encoder) may still undo it. On the CPU the state is double-buffered: a
step writes its result into the spare ``(3, n)`` buffer and then makes it current, so the state
before the step stays where it was, and undoing a step is a swap. The alternative, copying the
whole state aside before every learning batch, cost 5% of an eager batch of the standard task
(1.4 MB copied per batch; docs/performance.md, issue 14, sixth round). On CUDA that copy takes
microseconds, and a compiled CUDA-graph chunk keeps its inputs' addresses when they do not change,
so there the step writes in place after a snapshot (the same arithmetic, the same results)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..dynamics.optim import OPT_ADAM, OPT_SGD, Optimizer


class ParameterState:
    """Parameters ``P`` and the optimiser's state ``S1``, ``S2`` (the rows of :attr:`current`, a
    ``(3, n)`` tensor), with the parameters' views ``W``, ``bias`` made by ``views(P)``.

    ``double``: two buffers, the current one and a spare that the next step writes (CPU);
    otherwise one buffer, stepped in place after a snapshot (CUDA)."""

    def __init__(self, n: int, views: Callable, double: bool, **kw) -> None:
        self.double = double
        self._buf = torch.zeros(2 if double else 1, 3, n, **kw)
        self._views = [views(self._buf[k, 0]) for k in range(self._buf.shape[0])]
        self._k = 0  # the current buffer
        # what undo() restores where a swap cannot: the snapshot before several steps (hold),
        # or before a step in place (single buffer)
        self._held: torch.Tensor | None = None
        self._undo: torch.Tensor | None = None
        self._snap: torch.Tensor | None = None
        self._work: tuple | None = None
        self._steps: torch.Tensor | None = None  # the fused Adam's step count (a 0-d tensor)

    @property
    def current(self) -> torch.Tensor:
        """``(3, n)``: parameters, first and second optimiser state."""
        return self._buf[self._k]

    @property
    def W(self) -> list:
        return self._views[self._k][0]

    @property
    def bias(self) -> list:
        return self._views[self._k][1]

    def step(self, opt: Optimizer, t: int, G: torch.Tensor, tr: torch.Tensor | None) -> None:
        """One optimiser step ``t`` (from 1) on the gradient ``G`` (``tr``: the trainable mask, or
        None when everything trains). The same update rules as the numba kernel (torch.optim's
        definitions), written from the current state into the spare buffer, which then becomes
        current (double-buffered), else in place (after a snapshot, unless :meth:`hold` took
        one). Adam is torch's fused kernel, so it agrees with torch.optim's single-tensor Adam to
        rounding (1e-13 in float64, tests/test_parameter_state.py), not bit for bit. SGD's work
        buffers are reused: a fresh parameter-sized temporary costs page faults on every batch
        (on the CPU, more than the arithmetic)."""
        P, S1, S2 = self.current
        if self.double:
            nP, nS1, nS2 = self._buf[1 - self._k]
        else:
            if self._held is None:
                self._undo = self._copy()
            nP, nS1, nS2 = P, S1, S2
        hp = opt.hyper()
        if opt.kind == OPT_SGD:
            w1, w2 = self._work_buffers()
            lr, mom, wd, nest, damp = (float(v) for v in hp[:5])
            g = G
            if wd != 0.0:  # g = G + wd P
                g = torch.mul(P, wd, out=w1).add_(G)
            if mom != 0.0:
                if t == 1:
                    nS1.copy_(g)
                else:
                    torch.mul(S1, mom, out=nS1).add_(g, alpha=1.0 - damp)
                g = torch.mul(nS1, mom, out=w2).add_(g) if nest != 0.0 else nS1
            elif nS1 is not S1:
                nS1.copy_(S1)  # (rows a rule leaves alone come along into the new buffer)
            if nS2 is not S2:
                nS2.copy_(S2)
            step = torch.mul(g, lr, out=w1)  # (g is no longer needed where it is w1)
            torch.sub(P, step if tr is None else step.mul_(tr), out=nP)
        elif opt.kind == OPT_ADAM:
            # torch's fused Adam (torch.optim.Adam(fused=True)'s kernel): one pass over the
            # state instead of eight elementwise ops (1-2% of a batch of the standard task), in
            # place, so the double-buffered state first copies into the spare buffer
            lr, b1, b2, eps, wd, dec = (float(v) for v in hp[:6])
            if self.double:
                self._buf[1 - self._k].copy_(self.current)
            if self._steps is None:
                # float32, as torch.optim keeps a fused step count (its CUDA kernel reads one)
                self._steps = _persistent(
                    lambda: torch.zeros((), dtype=torch.float32, device=P.device)
                )
            self._steps.fill_(float(t))
            fused = torch._fused_adamw_ if dec != 0.0 else torch._fused_adam_
            fused([nP], [G], [nS1], [nS2], [], [self._steps], lr=lr, beta1=b1, beta2=b2,
                  weight_decay=wd, eps=eps, amsgrad=False, maximize=False)  # fmt: skip
            if tr is not None:  # frozen entries keep their value (their moments still move)
                torch.where(tr != 0, nP, P if self.double else self._snapshot()[0], out=nP)
        if self.double:
            self._k = 1 - self._k
            self._undo = None

    def undo(self) -> None:
        """The state as before the last :meth:`step`, or before the steps since :meth:`hold`."""
        saved = self._snapshot()
        if saved is not None:
            self.current.copy_(saved)
        else:
            self._k = 1 - self._k

    def hold(self) -> None:
        """Several steps follow (optimiser steps during inference): :meth:`undo` takes them all
        back, until :meth:`release`. Costs a copy of the state."""
        self._held = self._copy()

    def release(self) -> None:
        """:meth:`undo` takes back the last step only again."""
        self._held = None

    def first_nonfinite(self) -> int:
        """Flat index of the first parameter whose value or optimiser state is not finite, or -1.
        The common case costs one sum and one host synchronisation: a NaN or inf anywhere
        makes the total non-finite (an overflowing sum of finite values only triggers the exact
        elementwise check, which then finds nothing)."""
        state = self.current
        if bool(torch.isfinite(state.sum())):
            return -1
        bad = torch.nonzero(~torch.isfinite(state).all(dim=0))
        return int(bad[0, 0]) if len(bad) else -1

    def _snapshot(self) -> torch.Tensor | None:
        """The copy :meth:`undo` restores: the one :meth:`hold` took, else the one before the
        last step in place; None where undoing is a swap."""
        return self._held if self._held is not None else self._undo

    def _copy(self) -> torch.Tensor:
        """The current state copied into a reused buffer."""
        if self._snap is None:
            self._snap = _persistent(lambda: torch.empty_like(self.current))
        return self._snap.copy_(self.current)

    def _work_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two parameter-sized work buffers of the SGD step, made once."""
        if self._work is None:
            p = self.current[0]
            self._work = _persistent(lambda: (torch.empty_like(p), torch.empty_like(p)))
        return self._work


def _persistent(make):
    """``make()`` outside inference mode: buffers made during a run (in inference mode) that
    later calls outside it (``step``, ``undo_step``) write in place must be normal tensors."""
    with torch.inference_mode(False):
        return make()
