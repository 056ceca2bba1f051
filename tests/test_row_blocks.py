"""Row blocks (neuropc.backends.row_blocks): a numba batch cut into blocks of rows, one per
thread. Oracle: the same batch run whole on one thread (an independent path through the same
kernel: one call, sums over the whole batch), which every block split must match to 1e-10 in
float64; and the closed form of the split itself."""

from __future__ import annotations

import numpy as np
import pytest

import neuropc as npc
from neuropc.backends import _numba_kernels as K
from neuropc.backends import numba_backend, row_blocks

pytestmark = pytest.mark.skipif(
    not K.ROW_BLOCKS, reason="the kernels' BLAS has no per-thread setting"
)

BATCH = 96  # three blocks of 32 with 3 threads, two of 48 with 2


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    row_blocks.set_threads(None)


def _network(case: str) -> npc.Network:
    out = npc.Categorical() if case == "categorical" else None
    net = npc.mlp([6, 12, 10, 4], activation="tanh", output_distribution=out)
    if case == "precision":
        net = npc.Network()
        net.population("input", 6, role="input")
        net.population("h1", 12, activation="tanh", bias=True,
                       precision=npc.Precision("diag", learn="gradient", lr=0.05))  # fmt: skip
        net.population("h2", 10, activation="tanh", bias=True,
                       precision=npc.Precision("scalar", learn="ema", decay=0.2))  # fmt: skip
        net.population("output", 4, role="target", bias=True)
        for a, b in (("input", "h1"), ("h1", "h2"), ("h2", "output")):
            net.connect(a, b)
    return net


def _inference(case: str) -> npc.Inference:
    return {
        "langevin": npc.Inference(steps=10, rate=0.05, temperature=1.0, burn_in=4, collect=3),
        "precondition": npc.Inference(steps=10, rate=0.1, preconditioner=npc.Preconditioner()),
        "langevin_precondition": npc.Inference(
            steps=10, rate=0.05, temperature=0.5, preconditioner=npc.Preconditioner()
        ),
        "tol": npc.Inference(steps=30, rate=0.1, tol=1e-3),
        "ipc": npc.Inference(steps=10, rate=0.1, mode="ipc"),
    }.get(case, npc.Inference(steps=10, rate=0.1))


def _data(n: int = BATCH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, n)
    return {"input": rng.normal(size=(n, 6)), "output": np.eye(4)[y]}


def _train(case: str, threads: int, dtype: str = "float64"):
    row_blocks.set_threads(threads)
    sim = npc.Simulator(_network(case), backend="numba", dtype=dtype, seed=7,
                        inference=_inference(case), optimizer=npc.Adam(0.01))  # fmt: skip
    data = _data()
    energies = [sim.learn(data).energy for _ in range(3)]
    state = sim.infer({"input": data["input"]})
    params = np.concatenate([np.ravel(v) for v in sim.parameters().values()])
    return params, energies, state


CASES = ("plain", "precision", "categorical", "langevin", "precondition",
         "langevin_precondition")  # fmt: skip


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("case", CASES)
def test_blocks_match_the_whole_batch(case, threads):
    p1, e1, s1 = _train(case, 1)
    pn, en, sn = _train(case, threads)
    np.testing.assert_allclose(pn, p1, rtol=0, atol=1e-10)
    for a, b in zip(en, e1):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sn["h1"], s1["h1"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(sn.energy, s1.energy, rtol=1e-10, atol=1e-12)


def test_same_threads_bit_identical():
    a = _train("langevin", 2, "float32")
    b = _train("langevin", 2, "float32")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2]["h2"], b[2]["h2"])


@pytest.mark.parametrize("case", ["tol", "ipc"])
def test_coupled_rows_run_whole(case):
    """An early stop on the batch's largest update, and weight steps during inference (iPC),
    couple the rows: such a batch runs whole, so the thread count changes nothing at all."""
    p1, e1, _ = _train(case, 1)
    p2, e2, _ = _train(case, 2)
    np.testing.assert_array_equal(p2, p1)
    for a, b in zip(e2, e1):
        np.testing.assert_array_equal(a, b)


def test_divergence_in_one_block_learns_nothing():
    """A sample that overflows in the second block: the batch fails as it does whole (same step
    and population named), and no parameter changes."""
    errs = []
    for threads in (1, 2):
        row_blocks.set_threads(threads)
        sim = npc.Simulator(_network("plain"), backend="numba", dtype="float64", seed=7,
                            inference=npc.Inference(steps=10, rate=0.1),
                            optimizer=npc.Adam(0.01))  # fmt: skip
        data = _data()
        data["output"][-1, 0] = 1e200  # its squared error overflows
        before = {k: v.copy() for k, v in sim.parameters().items()}
        with pytest.raises(npc.DivergenceError) as info:
            sim.learn(data)
        for k, v in sim.parameters().items():
            np.testing.assert_array_equal(v, before[k])
        errs.append(str(info.value))
    assert errs[0] == errs[1]


@pytest.mark.parametrize(
    ("batch", "threads", "expect"),
    [
        (128, 2, [(0, 64), (64, 128)]),
        (96, 3, [(0, 32), (32, 64), (64, 96)]),
        (100, 3, [(0, 33), (33, 66), (66, 100)]),
        (63, 2, [(0, 63)]),  # fewer than 2 x MIN_ROWS rows: whole
        (128, 1, [(0, 128)]),
        (64, 8, [(0, 32), (32, 64)]),  # at most one block per MIN_ROWS rows
    ],
)
def test_blocks_split(batch, threads, expect):
    assert row_blocks.MIN_ROWS == 32
    assert row_blocks.blocks(batch, threads) == expect


def test_large_weights_need_many_rows():
    """Weights beyond LARGE_WEIGHTS bytes: at least MIN_ROWS_LARGE (256) rows per block."""
    big = row_blocks.LARGE_WEIGHTS + 1
    assert row_blocks.blocks(128, 2, big) == [(0, 128)]
    assert row_blocks.blocks(511, 2, big) == [(0, 511)]
    assert row_blocks.blocks(512, 2, big) == [(0, 256), (256, 512)]
    assert row_blocks.blocks(128, 2, row_blocks.LARGE_WEIGHTS) == [(0, 64), (64, 128)]


def test_threads_setting(monkeypatch):
    monkeypatch.setenv("NEUROPC_THREADS", "3")
    assert row_blocks.get_threads() == 3
    row_blocks.set_threads(2)
    assert row_blocks.get_threads() == 2
    row_blocks.set_threads(None)
    monkeypatch.setenv("NEUROPC_THREADS", "two")
    with pytest.raises(ValueError, match="NEUROPC_THREADS must be a positive integer; got 'two'"):
        row_blocks.get_threads()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="set_threads: expected a positive integer"):
            row_blocks.set_threads(bad)
    monkeypatch.delenv("NEUROPC_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert row_blocks.get_threads() == 1


@pytest.mark.parametrize("starter", ["pool", "team of 1", "team of 4"])
def test_any_thread_count_runs_the_blocks(starter, monkeypatch):
    """Three blocks, started by the thread pool (where torch has no libgomp), or by a team of one
    thread or of more threads than blocks: every thread claims blocks until none is left, waits
    for all, then claims parameter ranges, so the results are bit-identical to the usual start
    (a team of exactly three) whatever the number of threads that arrive."""
    expect = _train("langevin", 3, "float32")
    if starter == "pool":
        monkeypatch.setattr(K, "TEAM", False)
    else:
        if not K.TEAM:
            pytest.skip("torch has no libgomp here")
        size = int(starter.split()[-1])
        monkeypatch.setattr(row_blocks, "launch", lambda job, n: K.team_run(job, size))
    got = _train("langevin", 3, "float32")
    np.testing.assert_array_equal(got[0], expect[0])
    for a, b in zip(got[1], expect[1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[2]["h2"], expect[2]["h2"])


# ---- every case of the conformance matrix, in blocks ----------------------------------------
def _matrix_cases():
    import test_conformance_matrix as cm

    return [pytest.param(c, id=cm._id(c)) for c in cm.MATRIX]


@pytest.mark.parametrize("case", _matrix_cases())
def test_matrix_case_in_blocks(case, monkeypatch):
    """Every case of tests/test_conformance_matrix.py (modes, output and hidden distributions,
    optimisers, frozen parameters; Langevin noise included) at a batch of 64: two blocks of 32
    rows agree with the whole batch to 1e-10 in float64. (Cases whose rows are coupled, iPC and
    fast precisions, run whole either way.)"""
    import test_conformance_matrix as cm

    whole = cm.data
    monkeypatch.setattr(cm, "data", lambda c, seed, batch=64: whole(c, seed, batch))
    seed = cm.MATRIX.index(case)
    results = []
    for threads in (1, 2):
        row_blocks.set_threads(threads)
        results.append(cm.run(cm.simulator(case, {"backend": "numba"}, seed), case, seed))
    cm.assert_same(results[0], results[1], 1e-10)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_traces_in_blocks(temperature):
    """Per-step traces (values, errors, Langevin noise) of samples in both blocks, every other
    step: recorded in two blocks of 32 rows as in the whole batch of 64, to 1e-10 in float64."""
    samples = [0, 5, 31, 32, 40, 63]
    probes = [npc.Probe(p, v, mode="steps", samples=samples, every=2, dtype="float64")
              for p in ("h1", "h2") for v in ("value", "error", "noise")]  # fmt: skip
    inf = npc.Inference(steps=10, rate=0.05, temperature=temperature)
    got = []
    for threads in (1, 2):
        row_blocks.set_threads(threads)
        sim = npc.Simulator(_network("plain"), backend="numba", dtype="float64", seed=7,
                            inference=inf, optimizer=npc.Adam(0.01))  # fmt: skip
        sim.record(None, probes, preset="none")
        for _ in range(2):
            sim.learn(_data(64))
        rec = sim.recorder.open()
        got.append({k: rec[k].values for k in ("h1:value", "h2:error", "h2:noise")})
    for k in got[0]:
        assert got[0][k].shape == (2 * len(samples), 6, got[0][k].shape[2]), k
        np.testing.assert_allclose(got[1][k], got[0][k], rtol=0, atol=1e-10, err_msg=k)
    moved = np.abs(got[0]["h2:noise"]).max()
    assert (moved > 0.1) == (temperature > 0)  # the noise trace is there (or is 0 without)


@pytest.mark.parametrize("objective", ["forward_kl", "jeffreys"])
def test_encoder_moments_in_blocks(objective, monkeypatch):
    """An amortised encoder fitted to the chain's sample moments (forward KL, Jeffreys): each
    block gathers the moments of its own rows; decoder and encoder learn as with the whole
    batch, to 1e-10 in float64."""
    import distributed_cases

    calls = []
    run_blocks = numba_backend.NumbaBackend._infer_blocks
    monkeypatch.setattr(numba_backend.NumbaBackend, "_infer_blocks",
                        lambda self, *a: calls.append(1) or run_blocks(self, *a))  # fmt: skip
    rng = np.random.default_rng(2)
    data = [{"x": rng.normal(size=(BATCH, 6))} for _ in range(3)]
    flat = []
    for threads in (1, 2):
        row_blocks.set_threads(threads)
        net = distributed_cases.network("encoder", objective)
        sim = npc.Simulator(net, backend="numba", dtype="float64", seed=3,
                            inference=npc.Inference(steps=8, rate=0.05, temperature=1.0,
                                                    collect="mean", burn_in=2, init="amortised"),
                            optimizer=npc.Adam(0.01))  # fmt: skip
        for d in data:
            sim.learn(d)
        flat.append(np.concatenate([np.ravel(v) for v in sim.parameters().values()]))
    assert len(calls) == len(data)  # the second simulator ran its batches in blocks
    np.testing.assert_allclose(flat[1], flat[0], rtol=0, atol=1e-10)


@pytest.mark.skipif(not K.PACKED, reason="the kernels' MKL has no packed gemm")
@pytest.mark.parametrize("mode", ["strict", "ipc"])
def test_packed_weights_match_plain_gemms(monkeypatch, mode: str) -> None:
    """float32 runs in row blocks multiply by weights packed once per run (MKL's SGEMM_PACK /
    SGEMM_COMPUTE): oracle, the same runs through plain sgemm calls (packing switched off). The
    same products, so the same numbers up to float32 rounding of sums MKL may order otherwise;
    in iPC the weights change during inference, and nothing is packed."""
    rng = np.random.default_rng(4)
    data = {"input": rng.random((BATCH, 6)).astype("float32"),
            "output": rng.random((BATCH, 4)).astype("float32")}  # fmt: skip
    row_blocks.set_threads(2)  # (two blocks of 48 rows: packing serves row blocks)
    out = {}
    for packed in (True, False):
        monkeypatch.setattr(K, "PACKED", packed)
        sim = npc.Simulator(npc.mlp([6, 40, 30, 4], activation="tanh"), dtype="float32", seed=2,
                            inference=npc.Inference(steps=8, rate=0.1, mode=mode),
                            optimizer=npc.Adam(1e-2))  # fmt: skip
        energies = [sim.learn(data, state=False) for _ in range(3)]
        st = sim.infer({"input": data["input"]})
        out[packed] = (np.array(energies), sim.parameters(), st.values["h2"])
    (e1, p1, v1), (e0, p0, v0) = out[True], out[False]
    np.testing.assert_allclose(e1, e0, rtol=1e-5)
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v0, rtol=1e-5, atol=1e-6)
    assert np.abs(v0).max() > 0.05  # (a state that moved)
