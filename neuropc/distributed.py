"""Data-parallel training on ``torch.distributed``: one process per shard of every minibatch.

Every process (a *rank*) builds the same :class:`~neuropc.simulator.Simulator` with
``distributed=True`` (same network, backend, dtype and seed, so the same initial parameters and
random streams; checked when it is built). In each learning batch a rank runs inference on its
shard only, computes its local gradients ``g_r = dF_r/dtheta`` of its shard's batch-mean energy,
and the ranks all-reduce them into the gradient of the whole minibatch's mean energy,

    g = sum_r (n_r / N) g_r,    N = sum_r n_r,

before every rank takes the same optimiser step (so the parameters stay identical everywhere).
The same weighted mean serves the network's weights and biases, the second moments behind a
learned (slow) precision's step, and an amortised encoder's gradients. A batch that diverges on
any rank raises :class:`~neuropc.errors.DivergenceError` on every rank, with nothing learned.

* :meth:`Simulator.fit` takes ``batch_size`` as the *global* minibatch: every rank draws the same
  shuffled order and trains on its contiguous part of each minibatch, so a run gives the same
  learning curve (up to the rounding of the reduction) with any number of processes.
  :meth:`Simulator.learn` is given each rank's own shard. Both are collective: every rank must
  call them, in the same order. ``infer``, ``predict``, ``accuracy`` and ``gradients`` are local
  (each rank's own data; ``gradients`` returns the local ``g_r``).
* Checkpoints (:meth:`Simulator.save`) are written by rank 0 only (every rank must call it; the
  others wait for it and get its path); they load anywhere, in a single process or in a group.
* Recordings are per rank: each rank records its own shard to the path it is given.
  Model scripts (:mod:`neuropc.runner`) record rank ``r > 0`` to ``<stem>-rank<r><suffix>`` and
  write its files to ``--out``'s ``rank<r>`` folder.
* Not data-parallel (refused with the reason): mode ``"ipc"`` (the weights step at every inference
  step), :class:`~neuropc.dynamics.natural_gradient.NaturalGradient` (its factors are per batch),
  and ``timescale="fast"`` precisions (re-estimated from each step's batch statistics).
* The Langevin noise and an encoder's samples are drawn from per-rank seeds (the batch's seed
  mixed with the rank), so that shards never share noise.

Start: ``neuropc run SCRIPT --nproc N`` (this machine; gloo), or ``torchrun --nproc-per-node N
SCRIPT`` with ``NEUROPC_DISTRIBUTED=1`` in the environment (or ``distributed=True`` in the script).
The process group is gloo on the CPU and NCCL when the simulator runs on CUDA (each rank on
``cuda:<LOCAL_RANK>``); one that the script initialised itself is used as it is.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .simulator import Simulator

ENV = "NEUROPC_DISTRIBUTED"  # "1": simulators built without distributed= join the group


def requested(distributed: bool | None) -> bool:
    """``Simulator(distributed=...)``: True / False, or None (the default): ``NEUROPC_DISTRIBUTED``
    is ``"1"`` (set by ``neuropc run --nproc``)."""
    if distributed is None:
        return os.environ.get(ENV, "") == "1"
    if not isinstance(distributed, bool):
        raise TypeError(f"Simulator distributed must be True or False; got {distributed!r}")
    return distributed


def rank() -> int:
    """This process's rank in the initialised group (0 without one)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes in the initialised group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def env_rank() -> int:
    """The rank the launcher gave this process (``RANK``; 0 outside a launch), before the group
    exists: what model scripts use to name per-rank outputs."""
    if os.environ.get(ENV, "") != "1":
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def device_for(backend: str, device: str | None) -> str | None:
    """The device a rank's simulator runs on: a plain ``"cuda"`` becomes ``cuda:<LOCAL_RANK>``."""
    if backend == "torch" and device in ("cuda", "gpu"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _init(cuda: bool) -> None:
    """Initialise the default process group from a launcher's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), unless the script did."""
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("distributed=True needs torch.distributed, which this torch lacks")
    if dist.is_initialized():
        return
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise ValueError(
            f"distributed=True: no process group is initialised and {', '.join(missing)} "
            "is not set; start the script with `neuropc run SCRIPT --nproc N` or torchrun, or "
            "call torch.distributed.init_process_group first"
        )
    dist.init_process_group("nccl" if cuda else "gloo")
    # ours to close: a gloo group left to the interpreter's exit can abort the process
    # ("terminate called without an active exception") and fail a finished run
    atexit.register(_close)


def _close(timeout: float = 10.0) -> None:
    """At exit: destroy the group while the interpreter is whole, and keep rank 0, which hosts the
    group's store, until every other rank has destroyed its part (or ``timeout`` seconds, for a
    rank that died). Without the wait, a store torn down under a rank still closing its group
    aborted that rank now and then ("terminate called without an active exception"): the
    launch of tests/test_distributed.py failed in 2 of 10 runs, and in none of 26 with it."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    rank, world = dist.get_rank(), dist.get_world_size()
    store = dist.distributed_c10d._get_default_store()
    dist.destroy_process_group()
    try:
        left = store.add("neuropc/closed", 1)
        end = time.monotonic() + timeout
        while rank == 0 and left < world and time.monotonic() < end:
            time.sleep(0.005)
            left = store.add("neuropc/closed", 0)
    except RuntimeError:  # the store is gone (rank 0 left first): nothing to wait for
        pass


class DataParallel:
    """A simulator's link to the process group: its shard of a minibatch, and the reductions of a
    learning batch (module docstring). Built by ``Simulator(distributed=True)``."""

    def __init__(self, sim: Simulator) -> None:
        import torch
        import torch.distributed as dist

        dev = getattr(sim.backend, "device", None)
        cuda = dev is not None and torch.device(dev).type == "cuda"
        _init(cuda)
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        nccl = dist.get_backend() == "nccl"
        if nccl and not cuda:
            raise ValueError(
                f"distributed=True: the process group uses NCCL, which reduces CUDA tensors "
                f"only, but this simulator runs on the CPU ({sim.backend.name} backend); "
                "initialise a gloo group (torch.distributed.init_process_group('gloo'))"
            )
        # NCCL reduces device tensors only; gloo reduces host (and, slowly, device) tensors
        self.device = torch.device(dev) if nccl else torch.device("cpu")
        self._buf = None  # reduce_batch's message, kept from batch to batch
        self._check_alike(sim)

    # ---- set-up -------------------------------------------------------------------------------
    def _check_alike(self, sim: Simulator) -> None:
        """Every rank must hold the same simulator: same network, backend, dtype and seed (so the
        same initial parameters and the same shuffled order). A difference is an error on every
        rank, naming what differs and the ranks' values."""
        mine = {
            "seed": sim.seed,
            "backend": sim.backend.name,
            "dtype": sim.dtype.name,
            "network": zlib.crc32(json.dumps(sim.network.spec(), sort_keys=True).encode()),
            "parameters": sim.plan.n_params,
        }
        everyone: list = [None] * self.world
        self.dist.all_gather_object(everyone, mine)  # (JSON-like dicts only)
        for key in mine:
            values = [d[key] for d in everyone]
            if any(v != values[0] for v in values):
                shown = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                raise ValueError(
                    f"distributed=True: every rank must build the same simulator, but the "
                    f"{key} differs ({shown})"
                )

    def check(self, sim: Simulator, cfg, learn) -> None:
        """Refuse a learning batch that cannot be data-parallel (module docstring)."""
        from .dynamics.natural_gradient import NaturalGradient

        if cfg.mode == "ipc":
            raise ValueError(
                "distributed=True: mode 'ipc' steps the weights at every inference step, but "
                "data-parallel training all-reduces the gradients once per batch; use 'strict', "
                "'fpa' or 'zil'"
            )
        if isinstance(learn, NaturalGradient):
            raise ValueError(
                "distributed=True: npc.NaturalGradient's factors come from each batch's own "
                "activity and are not all-reduced; use npc.SGD or npc.Adam"
            )
        fast = [n for n, st in sim._precisions.items() if st.spec.timescale == "fast"]
        if fast:
            raise ValueError(
                f"distributed=True: population {fast[0]!r} has a fast precision, re-estimated "
                "from every inference step's batch statistics, which a shard does not have; "
                "use timescale='slow'"
            )

    def seed(self, seed: int) -> int:
        """The rank's noise seed for a batch seeded ``seed``: ``seed`` itself on rank 0 (so one
        process runs as a plain simulator does), a mix of both on the others."""
        if self.rank == 0:
            return seed
        mixed = np.random.SeedSequence([int(seed), self.rank]).generate_state(1)[0]
        return int(mixed % (2**31 - 1))

    def shard(self, idx: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's contiguous part of a global minibatch ``idx`` (sizes differ by at most
        one) and its weight, its number of samples. A rank left without samples (a minibatch
        smaller than the group) runs the first sample with weight 0, so that every rank takes
        part in the reductions and the result is the mean over the others."""
        part = np.array_split(idx, self.world)[self.rank]
        if len(part) == 0:
            return idx[:1], 0
        return part, len(part)

    # ---- the reductions of a learning batch ---------------------------------------------------
    def reduce_batch(self, weight: int, failed: bool, energy: float, grads, phase: str):
        """A learning batch's one all-reduce: its gradients ``grads`` (the backend's, a tensor,
        replaced in place by the minibatch's mean), the total weight ``N``, the weighted mean
        final energy, and which ranks' inference diverged; all in one message, since a
        collective's latency (about 0.5 ms with gloo on a small machine) outweighs its size.
        Returns ``(N, mean energy)``; when any rank diverged it raises on every rank instead
        (the failing ones raise their own error after this) and the gradients are garbage."""
        import torch

        from .errors import DivergenceError

        n = grads.numel()
        buf = self._buf
        if buf is None or buf.numel() != n + 2 + self.world or buf.dtype != grads.dtype:
            buf = self._buf = torch.empty(n + 2 + self.world, dtype=grads.dtype,
                                          device=self.device)  # fmt: skip
        head = buf[n:]
        head.zero_()
        if failed:  # (its gradients were not computed)
            buf[:n].zero_()
            head[2 + self.rank] = 1.0
        else:
            buf[:n].copy_(grads.reshape(-1)).mul_(float(weight))  # (any device to the group's)
            head[0], head[1] = float(weight), float(weight) * energy
        self.dist.all_reduce(buf)
        h = head.cpu().to(torch.float64).numpy()
        bad = np.flatnonzero(h[2:])
        if len(bad):
            if not failed:
                raise DivergenceError(None, None, phase, rank=int(bad[0]))
            return 0, float("nan")
        total = round(float(h[0]))
        grads.copy_(buf[:n].reshape(grads.shape).to(grads.device)).div_(total)
        return total, float(h[1] / total)

    def mean(self, local, weight: int, total: int):
        """``sum_r (n_r / N) x_r`` over the ranks, in place in ``local`` (a ``torch.Tensor``, on
        the group's device unless gloo); returns it."""
        local.mul_(weight / total)
        if local.device == self.device:
            self.dist.all_reduce(local)
        else:  # e.g. the host's precision moments or encoder gradients under NCCL
            moved = local.to(self.device)
            self.dist.all_reduce(moved)
            local.copy_(moved)
        return local

    def mean_array(self, local: np.ndarray, weight: int, total: int) -> np.ndarray:
        """:meth:`mean` of a numpy array (a new float64 array)."""
        import torch

        t = torch.from_numpy(np.array(local, np.float64))
        return self.mean(t, weight, total).numpy()

    def mean_tensors(self, tensors: Sequence, weight: int, total: int) -> list:
        """:meth:`mean` of several tensors in one reduction (an encoder's gradients)."""
        import torch

        if not tensors:
            return []
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.mean(flat, weight, total)
        return [p.reshape(t.shape) for p, t in zip(torch.split(flat, [t.numel() for t in tensors]),
                                                   tensors)]  # fmt: skip

    def checkpoint(self, write):
        """Run ``write()`` (returning a path) on rank 0; every rank gets its path, or raises when
        rank 0 failed (rank 0 raises its own error)."""
        from .errors import CheckpointError

        result, err = [None, ""], None
        if self.rank == 0:
            try:
                result = [str(write()), ""]
            except Exception as e:  # (told to the others below, then raised here)
                err, result = e, [None, f"{type(e).__name__}: {e}"]
        self.dist.broadcast_object_list(result, src=0)
        if err is not None:
            raise err
        if result[0] is None:
            raise CheckpointError(f"rank 0 could not write the checkpoint: {result[1]}")
        return Path(result[0])


# ---- launching ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], nproc: int, env: Mapping[str, str] | None = None) -> int:
    """Run ``python *argv`` in ``nproc`` processes on this machine as one gloo group (what
    ``neuropc run SCRIPT --nproc N`` does), in environment ``env`` (default: this process's);
    returns the exit status: 0, or the first failing rank's. Rank 0's output is shown; the other ranks' standard output is discarded (their
    errors are shown). Each process gets ``cores / nproc`` threads unless ``OMP_NUM_THREADS``
    is set. If a rank fails, the others are stopped (they would wait for it forever)."""
    port = _free_port()
    base = dict(os.environ if env is None else env)
    threads = base.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    procs = []
    for r in range(nproc):
        rank_env = dict(base, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, **{ENV: "1"})  # fmt: skip
        out = None if r == 0 else subprocess.DEVNULL
        procs.append(subprocess.Popen([sys.executable, *argv], env=rank_env, stdout=out))
    status = 0
    try:
        while procs and status == 0:
            for p in list(procs):
                code = p.poll()
                if code is None:
                    continue
                procs.remove(p)
                if code != 0:
                    status = code
            time.sleep(0.05)
    finally:
        for p in procs:  # a rank failed (or we were interrupted): stop the rest
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    return status if status >= 0 else 1  # (killed by a signal)
