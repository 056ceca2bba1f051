"""Data-parallel training on torch.distributed (issue 14, item 5).

Oracle: single-process training on the whole minibatch. Two gloo ranks, started by the launcher
of ``neuropc run --nproc`` (:func:`neuropc.distributed.launch`), each learning from half of every
minibatch, must end with the parameters of one process learning from all of it, to 1e-10 in
float64, after 5 steps with SGD (momentum) and with Adam, on each backend: plain networks,
learned precisions (diagonal gradient rule, scalar EMA rule) and an amortised encoder. ``fit``
with a global batch size (and a last minibatch of one sample, which one rank sits out) matches
single-process ``fit``. A group of one is bit-identical to a plain simulator. Also: checkpoints
written by rank 0 load in one process; a divergence on one rank raises on every rank with nothing
learned; refusals (iPC, differing seeds, no launcher) and ``neuropc run --nproc 2`` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import distributed_cases as cases
import numpy as np
import pytest
import torch
import torch.distributed as dist

import neuropc as npc
from neuropc import distributed

HERE = Path(__file__).parent
ROOT = HERE.parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The two ranks' results (tests/distributed_worker.py)."""
    out = tmp_path_factory.mktemp("ranks")
    status = distributed.launch([str(HERE / "distributed_worker.py"), str(out)], 2)
    assert status == 0
    return [
        (dict(np.load(out / f"rank{r}.npz")), json.loads((out / f"rank{r}.json").read_text()))
        for r in (0, 1)
    ]


def _single(kind: str, backend: str, opt: str) -> np.ndarray:
    sim = cases.simulator(kind, backend, opt, distributed=False)
    for data in cases.batches(kind):
        sim.learn(data, state=False)
    return cases.flat(sim)


@pytest.mark.parametrize("kind", ["plain", "precision", "encoder"])
@pytest.mark.parametrize("opt", cases.OPTIMIZERS)
@pytest.mark.parametrize("backend", cases.BACKENDS)
def test_two_ranks_learn_as_one_process(ranks, backend, opt, kind):
    key = f"learn/{backend}/{opt}/{kind}"
    want = _single(kind, backend, opt)
    start = cases.flat(cases.simulator(kind, backend, opt, distributed=False))
    assert np.max(np.abs(want - start)) > 1e-3  # (the steps did move the parameters)
    for arrays, _ in ranks:
        np.testing.assert_allclose(arrays[key], want, rtol=0, atol=1e-10)
    # every rank took the same steps from the same reduced gradients: identical to the bit
    np.testing.assert_array_equal(ranks[0][0][key], ranks[1][0][key])


@pytest.mark.parametrize("backend", cases.BACKENDS)
def test_fit_shards_the_global_minibatch(ranks, backend):
    sim = cases.simulator("plain", backend, "adam", distributed=False)
    hist = sim.fit(cases.fit_data(), epochs=2, batch_size=cases.FIT_BATCH, progress=False)
    for arrays, _ in ranks:
        np.testing.assert_allclose(arrays[f"fit/{backend}"], cases.flat(sim), rtol=0, atol=1e-10)
        # the epoch energy is the mean over every rank's samples
        np.testing.assert_allclose(arrays[f"fit_energy/{backend}"], hist["energy"], rtol=1e-12)


@pytest.mark.parametrize("backend", cases.BACKENDS)
def test_checkpoint_divergence_and_refusals(ranks, backend):
    for r, (_, report) in enumerate(ranks):
        assert report[f"checkpoint/{backend}"] is True  # rank 0's file, loaded in one process
        message, rank = report[f"diverged/{backend}"]
        if r == 0:  # the healthy rank names the one that diverged
            assert rank == 1 and "diverged on rank 1" in message
        else:
            assert rank == 1 and "population 'output'" in message
        assert report[f"unchanged/{backend}"] is True
        assert "mode 'ipc'" in report[f"ipc/{backend}"]
        assert "seed differs (rank 0: 0, rank 1: 1)" in report["seed"]


@pytest.fixture
def group_of_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", cases.BACKENDS)
def test_a_group_of_one_is_a_plain_simulator(group_of_one, backend):
    """Rank 0 keeps the batch's noise seed, and the step after the all-reduce is the kernels'
    own end-of-batch step: bit-identical, Langevin noise and learned precision included."""
    sims = []
    for flag in (False, True):
        sim = cases.simulator("precision", backend, "adam", distributed=flag)
        sim.inference = npc.Inference(steps=8, rate=0.1, temperature=0.05)
        for data in cases.batches("precision"):
            sim.learn(data, state=False)
        sims.append(cases.flat(sim))
    np.testing.assert_array_equal(sims[0], sims[1])


def test_refusals_without_a_launcher(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT is not set"):
        npc.Simulator(cases.network("plain"), distributed=True)
    with pytest.raises(TypeError, match="True or False"):
        npc.Simulator(cases.network("plain"), distributed="yes")
    monkeypatch.setenv(distributed.ENV, "0")
    assert npc.Simulator(cases.network("plain")).distributed is None


def test_neuropc_run_nproc_2(tmp_path):
    """The CLI starts the ranks; rank 0 prints, rank 1 writes under --out/rank1; the result is
    the single-process run's (the same global batch) up to the reduction's rounding."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "neuropc.cli", "run", str(ROOT / "models/digits_classifier.py"),
           "--quick", "--json", "--out", str(tmp_path)]  # fmt: skip
    two = subprocess.run([*cmd, "--nproc", "2"], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    one = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m2, m1 = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (two, one))
    # float32 sums in another order: ~1e-7 relative after 32 Adam steps; 1e-5 leaves room
    assert abs(m2["train_energy"] - m1["train_energy"]) < 1e-5 * abs(m1["train_energy"])
    assert abs(m2["test_accuracy"] - m1["test_accuracy"]) <= 0.004  # 2 of the 500 test images
    assert (tmp_path / "rank1").is_dir()
    bad = subprocess.run([*cmd, "--nproc", "0"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_throughput_benchmark_runs(tmp_path):
    """benchmarks/distributed.py end to end on a small sample: one row per process count and
    backend, plus the one-thread single process; the speed-up is 1 for one process by its
    definition (samples/s over the one-process rate)."""
    out = tmp_path / "d.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/distributed.py"), "--backends", "numba",
         "--samples", "512", "--epochs", "1", "--json-out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    cores = os.cpu_count()
    assert [(r["nproc"], r["threads"]) for r in rows][:2] == [(1, cores), (2, max(1, cores // 2))]
    assert rows[0]["speedup"] == 1.0 and all(r["samples_per_s"] > 0 for r in rows)
    assert rows[1]["world"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_group_of_one_on_cuda_nccl(tmp_path):
    """The NCCL path (device tensors in the all-reduce): a group of one on the GPU learns as a
    plain simulator on the GPU, bit for bit."""
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)  # fmt: skip
    try:
        sims = []
        for flag in (False, True):
            net = cases.network("plain")
            sim = npc.Simulator(net, backend="torch", device="cuda", dtype="float64", seed=3,
                                inference=npc.Inference(steps=8, rate=0.1),
                                optimizer=npc.Adam(lr=0.01), distributed=flag)  # fmt: skip
            for data in cases.batches("plain"):
                sim.learn(data, state=False)
            sims.append(cases.flat(sim))
        np.testing.assert_array_equal(sims[0], sims[1])
    finally:
        dist.destroy_process_group()
