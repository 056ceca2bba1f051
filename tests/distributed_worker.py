"""One rank of tests/test_distributed.py, started by ``neuropc.distributed.launch`` (the launcher
of ``neuropc run --nproc``): ``python tests/distributed_worker.py OUT_DIR``. Every scenario's
result goes to ``OUT_DIR/rank<r>.npz`` (parameters) and ``OUT_DIR/rank<r>.json`` (errors seen);
the test compares them with single-process runs. The networks and data are built by
``distributed_cases`` so that the test builds the same ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import distributed_cases as cases

import neuropc as npc


def main(out: Path) -> None:
    npc.Simulator(cases.network("plain"), seed=0)  # the group starts with the first simulator
    r, world = dist.get_rank(), dist.get_world_size()
    arrays, report = {}, {}
    for backend in cases.BACKENDS:
        for opt in cases.OPTIMIZERS:
            for kind in ("plain", "precision", "encoder"):
                sim = cases.simulator(kind, backend, opt)
                for data in cases.batches(kind):  # learn() on this rank's shard of each batch
                    part = {k: np.array_split(v, world)[r] for k, v in data.items()}
                    sim.learn(part, state=False)
                arrays[f"learn/{backend}/{opt}/{kind}"] = cases.flat(sim)
        sim = cases.simulator("plain", backend, "adam")
        hist = sim.fit(cases.fit_data(), epochs=2, batch_size=cases.FIT_BATCH, progress=False)
        arrays[f"fit/{backend}"] = cases.flat(sim)
        arrays[f"fit_energy/{backend}"] = np.array(hist["energy"])
        # checkpoints: rank 0 writes, every rank gets the path, and it loads in one process
        path = sim.save(out / f"ck-{backend}.h5")
        alone = npc.load(path, distributed=False)
        report[f"checkpoint/{backend}"] = bool(np.array_equal(cases.flat(alone), cases.flat(sim)))
        # a divergence on the last rank only: every rank raises, nothing is learned
        before = cases.flat(sim)
        bad = {k: v[:4].copy() for k, v in cases.fit_data().items()}
        if r == world - 1:
            bad["output"][:] = 1e200
        try:
            sim.learn(bad)
        except npc.DivergenceError as e:
            report[f"diverged/{backend}"] = [str(e), e.rank]
        report[f"unchanged/{backend}"] = bool(np.array_equal(before, cases.flat(sim)))
        # refusals, before any collective (so they raise on every rank alike)
        try:
            sim.learn({k: v[:4] for k, v in cases.fit_data().items()},
                      inference=npc.Inference(mode="ipc", steps=3))  # fmt: skip
        except ValueError as e:
            report[f"ipc/{backend}"] = str(e)
    try:  # ranks that disagree on the seed
        npc.Simulator(cases.network("plain"), seed=r)
    except ValueError as e:
        report["seed"] = str(e)
    np.savez(out / f"rank{r}.npz", **arrays)
    (out / f"rank{r}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
