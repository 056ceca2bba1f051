"""Speed benchmark of a PC training minibatch on the standard MLP task.

``ms_per_batch`` is the median wall time of one training minibatch (inference + local gradients +
Adam) over the timed batches. ``gflops_effective`` divides the matmul work of a batch
(:meth:`Plan.matmul_flops`: forward initialisation, T steps of predictions from free populations
and error back-projections, final predictions, weight gradients) by that time. ``blas_gflops`` is
the same work done by the same BLAS on the same shapes with nothing else, measured in the same run:
the matmul ceiling. ``efficiency`` is their ratio. On the CPU, ``mkl_ceiling_ms`` times the same
gemm calls through ``torch.mm`` (MKL in the x86 torch wheels, typically 2-2.5x faster than the
OpenBLAS the numba backend calls for these small shapes) and ``over_mkl_ceiling`` is
``ms_per_batch / mkl_ceiling_ms``: two medians taken one after the other, so a machine whose
speed drifts between them moves the ratio. ``round_over_mkl_ceiling`` is the median of per-round
ratios over rounds of one batch and one pass of those gemm calls, as the references below: free
of drift, but each pass then starts with the batch's data in the caches. On the project's Xeon
that slowed the gemm pass by about 8% and the batch by about 4%, so the round ratio reads about
5% below ``over_mkl_ceiling`` (docs/performance.md, issue 14, fifth round).

References (:func:`references`): ``bp_ms_per_batch`` is a torch backprop step (forward, backward,
Adam) of the same MLP and ``handwritten_pc_ms_per_batch`` the same PC training step written
directly in eager torch (:func:`torch_pc_step`, the reference of the torch backend's CPU target).
They are timed in rounds, each round one simulator batch, one backprop step and one hand-written
step, so that a slow phase of a shared machine hits all three; ``round_ms_per_batch`` is the
simulator's median in those same rounds, and the two reference timings are medians over the same
rounds. ``pc_over_bp`` and ``pc_over_handwritten`` are the medians of the per-round ratios, so
they agree with ``round_ms_per_batch / bp_ms_per_batch`` and ``round_ms_per_batch /
handwritten_pc_ms_per_batch`` up to the spread of the rounds, not with ``ms_per_batch`` (timed
earlier, alone; on a GPU the two simulator timings can differ when the references change the
device's state). ``neuropc bench`` prints each ratio with that note (:data:`NOTES`).
``compile``: the torch backend ran its inference steps through ``torch.compile``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .dynamics.inference import Inference, Preconditioner
from .dynamics.natural_gradient import NaturalGradient
from .dynamics.optim import SGD, Adam
from .model.builders import mlp
from .model.distributions import Bernoulli, Categorical, Gaussian, Precision
from .simulator import Simulator

#: How the ratios are formed, printed beside them by ``neuropc bench``.
NOTES = {
    "pc_over_bp": "median over rounds of round_ms_per_batch / bp_ms_per_batch",
    "pc_over_handwritten": "median over rounds of round_ms_per_batch / handwritten_pc_ms_per_batch",
    "record_overhead": "median over pairs of record_ms_per_batch / record_none_ms_per_batch",
    "round_over_mkl_ceiling": "median over rounds of one batch / one pass of its gemms (torch.mm)",
}


OPTIMIZERS = {
    "adam": lambda: Adam(1e-3),
    "sgd": lambda: SGD(0.01),
    "ngd": lambda: NaturalGradient(lr=0.01),
}


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (Linux reports kB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(ts))


def blas_ceiling_ms(sim: Simulator, batch: int, steps: int, repeats: int = 20) -> float:
    """Median time of the batch's gemm calls alone, with the backend's own matmul: scipy's BLAS
    from compiled code for numba, ``torch.mm`` on the simulator's device for torch."""
    shapes = sim.plan.gemm_calls(batch, steps)
    if sim.backend.name == "torch":
        return _median_ms(_torch_gemms(shapes, sim.backend.device, sim.backend.tdt), repeats)
    from .backends import _numba_kernels as K

    big = int(max(max(r[2] * r[4], r[4] * r[3], r[2] * r[3]) for r in shapes))
    rng = np.random.default_rng(0)
    A, B, C = (rng.standard_normal(big).astype(sim.dtype) for _ in range(3))
    K.gemm_sequence(shapes, A, B, C, 1)
    return _median_ms(lambda: K.gemm_sequence(shapes, A, B, C, 1), repeats)


def mkl_gemms(sim: Simulator, batch: int, steps: int):
    """One pass of the batch's gemm calls (:meth:`Plan.gemm_calls`: the same shapes, transposes
    and counts) through ``torch.mm`` on the CPU, which runs MKL in the x86 torch wheels, as a
    function of no arguments: timed, the MKL-class ceiling of a CPU batch, whatever BLAS the
    backend itself calls."""
    import torch

    tdt = torch.float64 if np.dtype(sim.dtype) == np.float64 else torch.float32
    return _torch_gemms(sim.plan.gemm_calls(batch, steps), torch.device("cpu"), tdt)


def _torch_gemms(shapes: np.ndarray, device, dtype):
    """``torch.mm`` on ``shapes`` (:meth:`Plan.gemm_calls` rows) into fixed outputs: a function
    of no arguments, called once here (allocation and warm-up)."""
    import torch

    mats = []
    for ta, tb, m, n, k, cnt in shapes.tolist():
        a = torch.randn((k, m) if ta else (m, k), device=device, dtype=dtype)
        b = torch.randn((n, k) if tb else (k, n), device=device, dtype=dtype)
        mats.append(
            (a.T if ta else a, b.T if tb else b, torch.empty(m, n, device=device, dtype=dtype), cnt)
        )

    def seq() -> None:
        for a, b, c, cnt in mats:
            for _ in range(cnt):
                torch.mm(a, b, out=c)
        if device.type == "cuda":
            torch.cuda.synchronize()

    seq()
    return seq


def _torch_mlp(sizes: Sequence[int], batch: int, dtype: str, device: str):
    """Linear layers of ``sizes`` with Adam, and a fixed random input and one-hot target."""
    import torch

    tdt = getattr(torch, dtype)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    layers = [torch.nn.Linear(a, b).to(dev, tdt) for a, b in zip(sizes[:-1], sizes[1:])]
    opt = torch.optim.Adam([p for lay in layers for p in lay.parameters()], lr=1e-3)
    x = torch.rand(batch, sizes[0], generator=g, dtype=tdt).to(dev)
    y = torch.zeros(batch, sizes[-1], dtype=tdt)
    y[torch.arange(batch), torch.randint(0, sizes[-1], (batch,), generator=g)] = 1.0
    return layers, opt, x, y.to(dev)


def _synced(step, device: str):
    import torch

    if not str(device).startswith("cuda"):
        return step

    def synced() -> None:
        step()
        torch.cuda.synchronize()

    return synced


def torch_bp_step(sizes: Sequence[int], activation: str, batch: int, dtype: str, device: str):
    """A torch backprop step of the same MLP (forward, 1/2 squared error, backward, Adam), as a
    function of no arguments."""
    from .model import activations

    act = activations.get(activation)
    layers, opt, x, y = _torch_mlp(sizes, batch, dtype, device)

    def step() -> None:
        h = x
        for i, lay in enumerate(layers):
            h = lay(act.torch(h) if i > 0 else h)
        loss = 0.5 * ((y - h) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def torch_pc_step(layers, opt, x, y, activation: str, steps: int, rate: float):
    """A strict-PC training step of an MLP of torch ``layers`` written directly in eager torch
    (the issue's "hand-written torch PC"), tuned the way a careful user would: fused activation
    derivatives (``tanh_backward``), value updates in place, the clamped input's prediction
    computed once, no per-step energies. Forward initialisation, ``steps`` value steps
    ``h_l += rate (f'(h_l) * (e_{l+1} W_{l+1}) - e_l)`` of the hidden layers with the input ``x``
    and the target ``y`` clamped, ``e_l = h_l - W_l f(h_{l-1}) - b_l``, then the local gradients
    ``dF/dW_l = -e_l^T f(h_{l-1}) / B``, ``dF/db_l = -mean e_l`` and ``opt.step()``. Returns the
    step as a function of no arguments."""
    import torch

    from .model import activations

    act = activations.get(activation)
    W = [lay.weight for lay in layers]
    b = [lay.bias for lay in layers]
    L = len(layers)
    batch = x.shape[0]

    def errors(h, f, mu0):
        e = [h[0] - mu0] if L > 1 else [y - mu0]
        for i in range(1, L):
            e.append((h[i] if i < L - 1 else y) - torch.addmm(b[i], f[i - 1], W[i].T))
        return e

    def step() -> None:
        with torch.no_grad():
            mu0 = torch.addmm(b[0], x, W[0].T)  # the clamped input's prediction: once
            h, f, aux = [], [], []
            pre = x
            for i in range(L - 1):  # forward initialisation of the hidden layers
                h.append(mu0.clone() if i == 0 else torch.addmm(b[i], pre, W[i].T))
                fi, ai = act.torch_forward(h[i])
                f.append(fi)
                aux.append(ai)
                pre = fi
            for _ in range(steps):
                e = errors(h, f, mu0)
                for i in range(L - 1):
                    g = act.torch_vjp(aux[i], e[i + 1] @ W[i + 1])
                    h[i].add_(g, alpha=rate).sub_(e[i], alpha=rate)
                    f[i], aux[i] = act.torch_forward(h[i])
            e = errors(h, f, mu0)
            pre = [x] + f
            for i in range(L):
                W[i].grad = -(e[i].T @ pre[i]) / batch
                b[i].grad = -e[i].mean(dim=0)
        opt.step()

    return step


def references(pc_step, sizes, activation, batch, steps, rate, dtype, device, n) -> dict:
    """The torch backprop step and the hand-written torch PC step (:func:`torch_pc_step`) of the
    same MLP, timed in ``n`` rounds of one ``pc_step`` (a batch of the simulator), one backprop
    step and one hand-written step, so that a slow phase of a shared machine hits all three:
    the median ms of each over the rounds (the simulator's as ``round_ms_per_batch``), and the
    medians of the per-round ratios ``pc_over_bp`` and ``pc_over_handwritten``."""
    layers, opt, x, y = _torch_mlp(sizes, batch, dtype, device)
    steps_ = [
        _synced(pc_step, device),
        _synced(torch_bp_step(sizes, activation, batch, dtype, device), device),
        _synced(torch_pc_step(layers, opt, x, y, activation, steps, rate), device),
    ]
    t = _rounds(steps_, n)
    return {
        "round_ms_per_batch": 1000.0 * float(np.median(t[:, 0])),
        "bp_ms_per_batch": 1000.0 * float(np.median(t[:, 1])),
        "handwritten_pc_ms_per_batch": 1000.0 * float(np.median(t[:, 2])),
        "pc_over_bp": float(np.median(t[:, 0] / t[:, 1])),
        "pc_over_handwritten": float(np.median(t[:, 0] / t[:, 2])),
    }


def _rounds(steps: list, n: int) -> np.ndarray:
    """Seconds of each of ``steps`` in ``n`` rounds that call them in turn (after 3 warm-up
    rounds): ``(n, len(steps))``. A slow phase of a shared machine hits every step alike."""
    for _ in range(3):
        for f in steps:
            f()
    t = np.zeros((n, len(steps)))
    for i in range(n):
        for j, f in enumerate(steps):
            t0 = time.perf_counter()
            f()
            t[i, j] = time.perf_counter() - t0
    return t


def _against_adam(sim: Simulator, adam: Simulator, data: dict, n: int) -> dict:
    """``sim`` and the same network learning with Adam, timed in ``n`` alternating rounds."""
    t = _rounds([lambda: sim.learn(data, state=False), lambda: adam.learn(data, state=False)], n)
    return {
        "adam_ms_per_batch": 1000.0 * float(np.median(t[:, 1])),
        "over_adam": float(np.median(t[:, 0] / t[:, 1])),
    }


def record_overhead(sim: Simulator, data: dict, preset: str, timed: int) -> dict:
    """Cost of recording with ``preset`` (:func:`neuropc.record.probes.defaults`: energies plus settled
    states, or full per-step traces) to a temporary HDF5 file. Batches with and without
    recording alternate, and ``record_overhead`` is the median of the per-pair time ratios, so a
    slow phase of a noisy machine hits both. ``record_mb_per_s``: bytes of recorded data over the
    time of the recorded batches."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        rec = sim.record(Path(d) / "bench.h5", preset=preset)
        try:
            for _ in range(3):
                sim.learn(data, state=False)
            pairs = []
            for _ in range(timed):
                with sim._recording_paused():
                    t0 = time.perf_counter()
                    sim.learn(data, state=False)
                t1 = time.perf_counter()
                sim.learn(data, state=False)
                pairs.append((t1 - t0, time.perf_counter() - t1))
        finally:
            rec.close()
        import h5py

        with h5py.File(Path(d) / "bench.h5", "r") as f:
            nbytes = sum(f[f"recordings/{n}/data"].nbytes for n in f["recordings"])
    none_s, rec_s = np.array(pairs).T
    per_batch = nbytes / (timed + 3)
    return {
        "record": preset,
        "record_ms_per_batch": 1000.0 * float(np.median(rec_s)),
        "record_none_ms_per_batch": 1000.0 * float(np.median(none_s)),
        "record_overhead": float(np.median(rec_s / none_s)),
        "record_mb_per_batch": per_batch / 1e6,
        "record_mb_per_s": per_batch * timed / float(np.sum(rec_s)) / 1e6,
    }


# the output distributions the bench can time (the one-hot targets suit all three)
OUTPUTS = {"gaussian": None, "categorical": Categorical(), "bernoulli": Bernoulli()}


def run(
    sizes: Sequence[int] = (784, 128, 128, 10),
    *,
    activation: str = "tanh",
    batch: int = 128,
    steps: int = 20,
    rate: float = 0.1,
    backend: str = "numba",
    device: str | None = None,
    dtype: str = "float32",
    timed: int = 50,
    warmup: int = 5,
    bp: bool = True,
    seed: int = 0,
    record: str = "none",
    compile: bool | str = False,
    output: str = "gaussian",
    precision: str = "fixed",
    timescale: str = "slow",
    optimizer: str = "adam",
    temperature: float = 0.0,
    precondition: bool = False,
    profile_batch: bool = False,
    torch_load: bool = False,
) -> dict:
    """Measure one configuration; returns the JSON-ready metrics (see the module docstring).
    ``output``: the output population's distribution, ``"gaussian"`` (unit precision),
    ``"categorical"`` (softmax, cross-entropy) or ``"bernoulli"``; the torch references keep the
    Gaussian output. ``precision``: ``"fixed"`` (unit), or a learned ``"scalar"`` / ``"diag"`` /
    ``"full"`` :class:`~neuropc.model.distributions.Precision` (EMA rule) on every hidden
    population (and a Gaussian output), learned across batches (``timescale="slow"``) or also
    re-estimated at every inference step (``"fast"``). ``optimizer``: ``"adam"`` (lr 1e-3),
    ``"sgd"`` (lr 0.01) or ``"ngd"`` (:class:`~neuropc.dynamics.natural_gradient.NaturalGradient`,
    lr 0.01, its default damping and refresh); other than Adam, the same network learning with
    Adam is timed in alternating rounds, and ``over_adam`` is the median per-round ratio.
    ``temperature`` > 0 runs Langevin inference, ``precondition`` adds the default
    :class:`~neuropc.dynamics.inference.Preconditioner`; with either, the plain PC step of the same
    network is timed in alternating rounds, and ``over_plain`` is the median per-round ratio.
    ``profile_batch``: also :func:`profile` (where the time goes); ``torch_load``: also
    :func:`with_torch_load` (a batch right after torch work in the same process)."""
    if timed < 1:
        raise ValueError(f"timed must be >= 1; got {timed}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    if record not in ("none", "settled", "steps"):
        raise ValueError(f"record must be none, settled or steps; got {record!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    net = mlp(list(sizes), activation=activation, output_distribution=OUTPUTS[output])
    if precision != "fixed":
        if precision not in ("scalar", "diag", "full"):
            raise ValueError(f"precision must be fixed, scalar, diag or full; got {precision!r}")
        for name, pop in list(net.populations.items()):
            if net.has_error(name) and isinstance(pop.distribution, Gaussian):
                prec = Precision(precision, learn="ema", timescale=timescale)
                learned = Gaussian(precision=prec)
                net.update(name, distribution=learned)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")

    pc = Preconditioner() if precondition else None

    def build(opt: str, plain: bool = False) -> Simulator:
        inf = Inference(steps=steps, rate=rate)
        if not plain:
            inf = inf.replace(temperature=float(temperature), preconditioner=pc)
        return Simulator(
            net, backend=backend, device=device, dtype=dtype, seed=seed, inference=inf,
            optimizer=OPTIMIZERS[opt](), compile=compile,
        )  # fmt: skip

    t0 = time.perf_counter()
    sim = build(optimizer)
    plain = build(optimizer, plain=True) if temperature > 0 or precondition else None
    rng = np.random.default_rng(seed)
    data = {
        "input": rng.random((batch, sizes[0])).astype(dtype),
        "output": np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], batch)],
    }
    sim.learn(data, state=False)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        sim.learn(data, state=False)
    ms = _median_ms(lambda: sim.learn(data, state=False), timed)
    flops = sim.plan.matmul_flops(batch, steps)
    blas_ms = blas_ceiling_ms(sim, batch, steps, repeats=max(timed // 2, 10))
    out = {
        "backend": backend,
        "device": device or "cpu",
        "dtype": dtype,
        "compile": compile,
        "sizes": list(sizes),
        "output": output,
        "precision": precision,
        "timescale": timescale,
        "activation": activation,
        "batch": batch,
        "steps": steps,
        "timed_batches": timed,
        "ms_per_batch": ms,
        "mflop_per_batch": flops / 1e6,
        "gflops_effective": flops / (ms * 1e-3) / 1e9,
        "blas_ms_per_batch": blas_ms,
        "blas_gflops": flops / (blas_ms * 1e-3) / 1e9,
        "efficiency": blas_ms / ms,
        "compile_s": compile_s,
    }
    out["peak_rss_mb"] = _peak_rss_mb()
    if backend == "numba":
        from .backends._numba_kernels import BLAS

        out["numba_blas"] = BLAS  # torch-mkl, or scipy-openblas (NEUROPC_NUMBA_BLAS)
    if (device or "cpu") == "cpu":  # torch.mm (MKL on x86 wheels) on the same gemm calls
        gemms = mkl_gemms(sim, batch, steps)  # (timed alone, then in rounds with the batch)
        mkl_ms = _median_ms(gemms, max(timed // 2, 10))
        out.update(mkl_ceiling_ms=mkl_ms, over_mkl_ceiling=ms / mkl_ms,
                   mkl_gflops=flops / (mkl_ms * 1e-3) / 1e9)  # fmt: skip
        t = _rounds([lambda: sim.learn(data, state=False), gemms], timed)
        out["round_over_mkl_ceiling"] = float(np.median(t[:, 0] / t[:, 1]))
    out.update(optimizer=optimizer, temperature=float(temperature), precondition=precondition)
    if optimizer != "adam":
        out.update(_against_adam(sim, build("adam"), data, timed))
    if temperature > 0 or precondition:
        t = _rounds([lambda: sim.learn(data, state=False),
                     lambda: plain.learn(data, state=False)], timed)  # fmt: skip
        out.update(plain_ms_per_batch=1000.0 * float(np.median(t[:, 1])),
                   over_plain=float(np.median(t[:, 0] / t[:, 1])))  # fmt: skip
    if record != "none":
        out.update(record_overhead(sim, data, record, timed))
    if profile_batch:
        out.update(profile(sim, data, batch, steps, timed))
    if torch_load:
        out.update(with_torch_load(sim, data, timed))
    if bp:
        step = lambda: sim.learn(data, state=False)
        out.update(
            references(step, sizes, activation, batch, steps, rate, dtype, device or "cpu", timed)
        )
    return out


def run_transformer(
    *,
    vocab: int = 85,
    seq: int = 32,
    d: int = 128,
    heads: int = 1,
    ff: int = 256,
    batch: int = 32,
    steps: int = 20,
    rate: float = 0.1,
    device: str | None = None,
    dtype: str = "float32",
    timed: int = 20,
    compile: bool | str = False,
    seed: int = 0,
) -> dict:
    """One training batch of the PC transformer language model (:func:`neuropc.transformer`,
    PC-F_KL: Categorical attention and output, torch backend) against one backprop step of the
    same network (:class:`~neuropc.reference.backprop.BackpropModel`, same weights, Adam), timed
    in alternating rounds: ``ms_per_batch`` and ``bp_ms_per_batch`` are medians over the rounds
    and ``pc_over_bp`` the median per-round ratio. ``samples_per_s``: sequences per second of PC
    training. The backprop twin runs on the CPU, so on a GPU only the PC timings are reported."""
    from .model.builders import transformer
    from .reference.backprop import BackpropModel

    if timed < 1 or batch < 1:
        raise ValueError(f"timed and batch must be >= 1; got {timed}, {batch}")
    net = transformer(vocab, seq, d, heads=heads, ff=ff)
    sim = Simulator(net, backend="torch", device=device, dtype=dtype, seed=seed,
                    inference=Inference(steps=steps, rate=rate), optimizer=Adam(1e-3),
                    compile=compile)  # fmt: skip
    rng = np.random.default_rng(seed)
    data = {
        "tokens": rng.integers(0, vocab, (batch, seq)).astype(dtype),
        "next": np.eye(vocab, dtype=dtype)[rng.integers(0, vocab, (batch, seq))].reshape(batch, -1),
    }
    t0 = time.perf_counter()
    sim.learn(data, state=False)
    out = {"model": "transformer", "backend": "torch", "device": device or "cpu",
           "dtype": dtype, "compile": compile, "vocab": vocab, "seq": seq, "d": d,
           "heads": heads, "ff": ff, "batch": batch, "steps": steps, "timed_batches": timed,
           "compile_s": time.perf_counter() - t0}  # fmt: skip
    on_cpu = (device or "cpu") == "cpu"

    def pc() -> None:
        sim.learn(data, state=False)

    if on_cpu:
        bp = BackpropModel.from_simulator(sim)
        t = _rounds([pc, lambda: bp.step(data)], timed)
        out.update(ms_per_batch=1e3 * float(np.median(t[:, 0])),
                   bp_ms_per_batch=1e3 * float(np.median(t[:, 1])),
                   pc_over_bp=float(np.median(t[:, 0] / t[:, 1])))  # fmt: skip
    else:
        out["ms_per_batch"] = _median_ms(_synced(pc, device), timed)
    out["samples_per_s"] = batch / (out["ms_per_batch"] * 1e-3)
    out["tokens_per_s"] = out["samples_per_s"] * seq
    return out


def profile(sim: Simulator, data: dict, batch: int, steps: int, timed: int = 50) -> dict:
    """Where a training batch's time goes, measured in the same run (medians of alternating
    rounds, milliseconds per batch):

    * ``gemm``: the batch's gemm calls alone through the backend's own matmul
      (:func:`blas_ceiling_ms`);
    * ``optimizer``: a learning batch (``learn``) minus the same batch computing only the
      gradients (inference and local gradients, no step; run as ``gradients`` does, without its
      copy of the gradients to the host, which once made this read 0);
    * ``python``: a learning batch minus the time spent inside the backend's ``run`` (the
      simulator's checks, buffers, schedule and bookkeeping);
    * ``elementwise``: the rest of ``run``: activations, errors, value updates, energies,
      divergence checks (everything in the kernel that is not a gemm or the optimiser step).

    The four add up to ``total`` (``elementwise`` is the remainder, floored at 0)."""
    backend = sim.backend
    inner = backend.run
    spent = [0.0]

    def timed_run(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    backend.run = timed_run
    try:
        # (without the read-out, as learn(state=False): the same inference work)
        grads_only = lambda: sim._run(data, "train", None, sim.inference, None, grads=True,
                                      readout=False)  # fmt: skip
        t = _rounds([lambda: sim.learn(data, state=False), grads_only], timed)
        # the rounds call run twice per round (plus 3 warm-up rounds): the learning batches'
        # share of the time in run is measured separately below
        spent[0] = 0.0
        learn_ms = _median_ms(lambda: sim.learn(data, state=False), timed)
        run_ms = 1e3 * spent[0] / timed
    finally:
        backend.run = inner
    total = float(np.median(t[:, 0])) * 1e3
    grads_only = float(np.median(t[:, 1])) * 1e3
    gemm = blas_ceiling_ms(sim, batch, steps, repeats=max(timed // 2, 10))
    optimizer = max(total - grads_only, 0.0)
    python = max(learn_ms - run_ms, 0.0)
    elementwise = max(total - gemm - optimizer - python, 0.0)
    return {"profile_total_ms": total, "profile_gemm_ms": gemm,
            "profile_elementwise_ms": elementwise, "profile_optimizer_ms": optimizer,
            "profile_python_ms": python}  # fmt: skip


def with_torch_load(sim: Simulator, data: dict, n: int) -> dict:
    """A batch right after torch work in the same process (a 784 x 784 ``torch.mm`` on the
    CPU, whose thread pool may then spin) against a batch without it, in ``n`` alternating rounds:
    ``torch_load_ms_per_batch`` and ``over_without_torch``, the median per-round ratio (1 when
    the two pools do not fight)."""
    import torch

    a = torch.randn(784, 784)

    def torch_work() -> None:
        torch.mm(a, a)

    def learn() -> float:
        t0 = time.perf_counter()
        sim.learn(data, state=False)
        return time.perf_counter() - t0

    for _ in range(3):
        torch_work()
        learn()
    t = np.zeros((n, 2))
    for i in range(n):
        t[i, 0] = learn()
        torch_work()
        t[i, 1] = learn()
    return {"torch_load_ms_per_batch": 1e3 * float(np.median(t[:, 1])),
            "over_without_torch": float(np.median(t[:, 1] / t[:, 0]))}  # fmt: skip
