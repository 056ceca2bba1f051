"""Throughput of data-parallel training (neuropc.distributed) against the number of processes.

The standard task (784-128-128-10, tanh, T = 20, float32, Adam) trains with ``Simulator.fit`` on
the embedded MNIST subset (8,000 images) at a global minibatch of ``--batch`` (default 128, split
across the ranks), for each backend and each process count in ``--nproc`` (default 1,2). Every
configuration runs in fresh processes started by :func:`neuropc.distributed.launch` (the launcher
of ``neuropc run --nproc``); one epoch warms up, then ``--epochs`` epochs are timed on rank 0.
Each process gets ``cores / N`` threads (the launcher's default), and the single-process run is
also measured with one thread, so the table shows both the speed-up over the whole machine and
the per-process scaling efficiency. Reports samples/s, the speed-up over one process on the same
cores, and the CPU model; writes JSON and, with ``--figure``, a PNG.

    python benchmarks/distributed.py [--nproc 1,2] [--width 128] [--batch 128] [--epochs 3]
        [--json-out F] [--figure F.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scaling import cpu_model


def worker(backend: str, batch: int, epochs: int, out: str, width: int, samples: int) -> None:
    """One rank: warm up, time ``epochs`` epochs; rank 0 writes samples/s to ``out``."""
    import neuropc as npc

    x, labels = npc.data.mnist("train")
    x, labels = x[:samples], labels[:samples]
    data = {"input": x, "output": npc.one_hot(labels)}
    sim = npc.Simulator(
        npc.mlp([784, width, width, 10], activation="tanh"), backend=backend, seed=0,
        inference=npc.Inference(steps=20, rate=0.1), optimizer=npc.Adam(lr=1e-3),
    )  # fmt: skip
    sim.fit(data, epochs=1, batch_size=batch, progress=False)  # compiled kernels, caches
    t0 = time.perf_counter()
    hist = sim.fit(data, epochs=epochs, batch_size=batch, progress=False)
    seconds = time.perf_counter() - t0
    world = sim.distributed.world if sim.distributed is not None else 1
    if sim.distributed is None or sim.distributed.rank == 0:
        Path(out).write_text(json.dumps({
            "samples_per_s": epochs * len(x) / seconds, "seconds": seconds, "world": world,
            "energy": hist.last["energy"], "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
        }))  # fmt: skip


def measure(backend: str, nproc: int, batch: int, epochs: int, threads: str | None,
            width: int, samples: int) -> dict:  # fmt: skip
    """One configuration: ``nproc`` ranks through the launcher, or for one process a plain run
    (no process group: the baseline pays no reduction)."""
    from neuropc.distributed import launch

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        args = [backend, str(batch), str(epochs), out, str(width), str(samples)]
        argv = [__file__, "--worker", *args]
        env = {k: v for k, v in os.environ.items() if k != "NEUROPC_DISTRIBUTED"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads
        if nproc == 1:
            status = subprocess.run([sys.executable, *argv], env=env).returncode
        else:
            status = launch(argv, nproc, env)
        if status != 0:
            raise SystemExit(f"{backend} with {nproc} processes failed (exit status {status})")
        return json.loads(Path(out).read_text())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        backend, batch, epochs, out, width, samples = sys.argv[2:8]
        return worker(backend, int(batch), int(epochs), out, int(width), int(samples))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", default="1,2", help="process counts (default 1,2)")
    ap.add_argument("--backends", default="numba,torch")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=128, help="hidden width (default 128)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=8000, help="training images (default 8000)")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--figure", default=None)
    args = ap.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]
    cores = os.cpu_count() or 1
    rows = []
    for backend in args.backends.split(","):
        base = None
        for n in counts:
            r = measure(backend, n, args.batch, args.epochs, None, args.width, args.samples)
            r.update(backend=backend, nproc=n)
            base = base or r["samples_per_s"]
            r["speedup"] = r["samples_per_s"] / base
            rows.append(r)
            # as each configuration ends, so a run cut off by a time limit keeps what it measured
            print(f"{backend}, {n} processes: {r['samples_per_s']:.0f} samples/s", file=sys.stderr,
                  flush=True)  # fmt: skip
        # one process, one thread
        one = measure(backend, 1, args.batch, args.epochs, "1", args.width, args.samples)
        one.update(backend=backend, nproc=1, speedup=float("nan"))
        print(f"{backend}, 1 process, 1 thread: {one['samples_per_s']:.0f} samples/s",
              file=sys.stderr, flush=True)  # fmt: skip
        for r in rows:
            if r["backend"] == backend:
                r["per_process_efficiency"] = r["samples_per_s"] / (
                    r["nproc"] * one["samples_per_s"]
                )
        rows.append(one)
    print(f"CPU: {cpu_model()}, {cores} cores; 784-{args.width}-{args.width}-10, global batch "
          f"{args.batch}, T = 20, float32, Adam")  # fmt: skip
    print("| backend | processes | threads each | samples/s | speed-up | per-process efficiency |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        eff = r.get("per_process_efficiency", float("nan"))
        print(f"| {r['backend']} | {r['nproc']} | {r['threads']} | {r['samples_per_s']:.0f} | "
              f"{r['speedup']:.2f} | {eff:.2f} |")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1))
    if args.figure:
        from neuropc.runner import pyplot, save_figure

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for backend in args.backends.split(","):
            pts = [r for r in rows if r["backend"] == backend and r["speedup"] == r["speedup"]]
            ax.plot([r["nproc"] for r in pts], [r["samples_per_s"] for r in pts], "o-",
                    label=backend)  # fmt: skip
        ax.set_xlabel("processes (gloo)")
        ax.set_ylabel("samples / s")
        ax.set_xticks(counts)
        ax.set_title(f"data-parallel PC, width {args.width}, batch {args.batch}", fontsize=9)
        ax.legend()
        save_figure(fig, args.figure)


if __name__ == "__main__":
    main()
