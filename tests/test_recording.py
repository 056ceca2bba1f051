"""Recording: probes, streamed HDF5, reading, crash safety. Oracles: the torch energy (autograd)
for recorded trajectories, the simulator's own State for settled rows, independent slicing for
subsets, and a deterministic re-run for what survives a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT

import neuropc as npc
from neuropc import energy as E
from neuropc.errors import RecordingError

F64 = "float64"


def _net():
    net = npc.Network()
    net.population("input", 6, role="input")
    net.population("h1", 5, activation="tanh")
    net.population("h2", 4, activation="sigmoid")
    net.population("out", 3, role="target", precision=2.0)
    for a, b in [("input", "h1"), ("h1", "h2"), ("h2", "out"), ("input", "out")]:
        net.connect(a, b)
    return net


def _sim(backend, steps=6, temperature=0.0, tol=0.0):
    return npc.Simulator(
        _net(), dtype=F64, seed=1, **backend,
        inference=npc.Inference(steps=steps, rate=0.2, temperature=temperature, tol=tol),
    )  # fmt: skip


def _data(b=7):
    rng = np.random.default_rng(2)
    return {"input": rng.normal(size=(b, 6)), "out": rng.normal(size=(b, 3))}


def _full(names=("h1", "h2", "out")):
    ps = []
    for n in names:
        ps += [npc.Probe(n, "value", dtype=F64), npc.Probe(n, "error", dtype=F64),
               npc.Probe(n, "noise", dtype=F64)]  # fmt: skip
    return ps


# ---- trajectories against the autograd energy ------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, 0.05])
def test_steps_trajectory_is_gradient_descent_on_the_energy(backend, tmp_path, temperature):
    """x_{t+1} = x_t - rate dF/dx(x_t) + noise_t for free populations (test phase: out is free),
    eps_t = Pi (x_t - mu(x_t)), and x_0 is the forward pass; all from the recorded rows."""
    sim = _sim(backend, temperature=temperature)
    data = {"input": _data()["input"]}
    with sim.record(tmp_path / "r.h5", _full()):
        sim.infer(data)
    r = npc.open(tmp_path / "r.h5")
    params = {k: torch.tensor(v) for k, v in sim.parameters().items()}
    T = sim.inference.steps
    free = ("h1", "h2", "out")
    x = {n: r[f"{n}:value"].values for n in free}  # (trial, step, unit)
    assert x["h1"].shape == (7, T + 1, 5)
    noise = {n: r[f"{n}:noise"].values for n in free}
    for t in range(T + 1):
        vals = {n: torch.tensor(x[n][:, t], requires_grad=True) for n in free}
        vals["input"] = torch.tensor(data["input"])
        eps = E.errors(sim.network, params, vals)
        for n in free:
            np.testing.assert_allclose(r[f"{n}:error"].values[:, t], eps[n].detach(), atol=1e-10)
        if t == 0:
            mu = E.predictions(sim.network, params, vals)
            for n in free:
                np.testing.assert_allclose(x[n][:, 0], mu[n].detach(), atol=1e-10)
        if t < T:
            F = E.total_energy(sim.network, params, vals).sum()
            F.backward()
            for n in free:
                want = x[n][:, t] - 0.2 * vals[n].grad.numpy() + noise[n][:, t]
                np.testing.assert_allclose(x[n][:, t + 1], want, atol=1e-10)
    assert np.all(noise["h1"][:, T] == 0)  # no update after the last state
    if temperature == 0:
        assert np.all(noise["h1"] == 0)
    else:  # the noise has the Langevin scale sqrt(2 rate T)
        sd = np.std(np.concatenate([noise[n][:, :T].ravel() for n in free]))
        assert abs(sd / np.sqrt(2 * 0.2 * temperature) - 1) < 0.15


def test_settled_energy_and_state_agree(backend, tmp_path):
    sim = _sim(backend)
    probes = [npc.Probe("h1", "value", mode="settled", dtype=F64),
              npc.Probe("out", "error", mode="settled", dtype=F64),
              npc.Probe("h2", "energy", mode="settled", dtype=F64)]  # fmt: skip
    with sim.record(tmp_path / "r.h5", probes):
        st = sim.learn(_data())
        st2 = sim.infer({"input": _data()["input"][:3]})
    r = npc.open(tmp_path / "r.h5")
    h1 = r["h1:value_settled"]
    assert h1.dims == ("trial", "unit") and h1.shape == (10, 5)
    np.testing.assert_array_equal(h1.values[:7], st["h1"])
    np.testing.assert_array_equal(h1.values[7:], st2["h1"])
    np.testing.assert_array_equal(r["out:error_settled"].values[:7], st["out:error"])
    for n in ("h1", "h2", "out"):
        e = r[f"{n}:energy"]
        assert e.dims == ("batch", "step", "column")
        np.testing.assert_array_equal(e.values[0, :, 0].astype(np.float32),
                                      st.energies[n].astype(np.float32))  # fmt: skip
    np.testing.assert_array_equal(r["total:energy"].values[1, :, 0].astype(np.float32),
                                  st2.energy.astype(np.float32))  # fmt: skip
    assert r["h2:energy_settled"].values[0, 0] == st.energies["h2"][-1]


def test_subsets_every_summary_equal_slices_of_the_full_trace(backend, tmp_path):
    sim = _sim(backend, steps=8)
    probes = [
        npc.Probe("h1", "value", dtype=F64),
        npc.Probe("h1", "value", units=[4, 0, 2], samples=[1, 5, 6], every=3, name="sub"),
        npc.Probe("h1", "value", mode="summary", window=(2, 6), reduce="mean", dtype=F64),
        npc.Probe("h1", "value", mode="summary", window=(1, None), reduce="max", dtype=F64,
                  name="mx"),
        npc.Probe("h1", "value", mode="summary", reduce="norm", dtype=F64, name="nrm"),
    ]  # fmt: skip
    with sim.record(tmp_path / "r.h5", probes):
        sim.infer({"input": _data()["input"]})
        sim.infer({"input": _data()["input"][:4]})  # a short batch holds samples 1 only
    r = npc.open(tmp_path / "r.h5")
    full = r["h1:value"].values  # (11 trials, 9, 5)
    sub = r["sub"]
    assert list(sub.coords["trial"]) == [1, 5, 6, 8]
    assert list(sub.coords["step"]) == [0, 3, 6]
    assert list(sub.coords["unit"]) == [4, 0, 2]
    np.testing.assert_array_equal(
        sub.values, full[[1, 5, 6, 8]][:, [0, 3, 6]][:, :, [4, 0, 2]].astype(np.float32)
    )
    np.testing.assert_allclose(r["h1:value_summary"].values, full[:, 2:6].mean(1), atol=1e-12)
    np.testing.assert_allclose(r["mx"].values, full[:, 1:].max(1), atol=0)
    np.testing.assert_allclose(r["nrm"].values, np.sqrt((full**2).sum(1)), atol=1e-12)
    # lazy indexing reads the same numbers as a full read
    np.testing.assert_array_equal(r["h1:value"][3:5, 2].values, full[3:5, 2])
    np.testing.assert_array_equal(r["h1:value"].sel(step=[0, 8], unit=3).values, full[:, [0, 8], 3])


def test_early_stop_rows_repeat_the_settled_state(backend, tmp_path):
    sim = _sim(backend, steps=200, tol=1e-3)
    with sim.record(tmp_path / "r.h5", [npc.Probe("h2", "value", dtype=F64)]):
        st = sim.infer({"input": _data()["input"]})
    assert st.steps < 200
    r = npc.open(tmp_path / "r.h5")
    v = r["h2:value"].values
    assert v.shape[1] == 201
    np.testing.assert_array_equal(
        v[:, st.steps :], np.broadcast_to(st["h2"][:, None], v[:, st.steps :].shape)
    )
    assert np.all(r.trials["steps"] == st.steps)


def test_per_batch_probes(backend, tmp_path):
    sim = _sim(backend)
    data = _data()
    probes = [npc.Probe("h1->h2", "weights"), npc.Probe("h1->h2", "updates", dtype=F64),
              npc.Probe("h2->out", "alignment", dtype=F64), npc.Probe("out", "precision"),
              npc.Probe("input->h1", "weights", every=2, name="w2")]  # fmt: skip
    ref = _sim(backend)
    al = npc.gradient_alignment(ref, data, steps=[6])
    with sim.record(tmp_path / "r.h5", probes):
        sim.learn(data, inference=sim.inference.replace(seed=11))
        sim.learn(data)
        sim.learn(data)
    r = npc.open(tmp_path / "r.h5")
    w1 = sim.get_weights("h1->h2")
    wt = r["h1->h2:weights"]
    assert list(wt.coords["column"]) == ["frobenius_norm", "mean", "std", "min", "max"]
    np.testing.assert_allclose(wt.values[-1], [np.linalg.norm(w1), w1.mean(), w1.std(), w1.min(), w1.max()], rtol=1e-6)  # fmt: skip
    up = r["h1->h2:updates"].values
    assert up.shape == (3, 3) and np.all(up[:, 0] > 0)
    a = r["h2->out:alignment"].values[0]  # the first batch, before any update: the oracle's
    j = al.names.index("h2->out")
    np.testing.assert_allclose(
        a, [al.cosine[0, j], al.rel_error[0, j], al.norm_ratio[0, j]], atol=1e-10
    )
    np.testing.assert_array_equal(r["out:precision"].values, np.full((3, 3), 2.0))
    assert list(r["w2"].coords["batch"]) == [0, 2]


def test_recording_does_not_change_the_simulation(backend, tmp_path):
    """Same seed, with and without every kind of probe (alignment reuses the batch's noise seed
    and leaves the simulator's random streams alone)."""
    a, b = _sim(backend, temperature=0.01), _sim(backend, temperature=0.01)
    data = _data()
    probes = _full() + [npc.Probe("h2->out", "alignment"), npc.Probe("h1->h2", "updates")]
    with a.record(tmp_path / "r.h5", probes, preset="steps"):
        a.fit(data, epochs=2, batch_size=3, progress=False)
    b.fit(data, epochs=2, batch_size=3, progress=False)
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(v, b.parameters()[k])


def test_trials_table_labels_and_epochs(backend, tmp_path):
    sim = _sim(backend, steps=4)
    cond = ["standard", "déviant", "standard", "contrôle", "standard", "déviant", "standard"]
    with sim.record(tmp_path / "r.h5", [npc.Probe("h1", "error", dtype=F64)],
                    trial_columns=("condition", "stimulus")):  # fmt: skip
        sim.infer({"input": _data()["input"]},
                  trials={"condition": cond, "stimulus": list(range(7))})  # fmt: skip
    r = npc.open(tmp_path / "r.h5")
    tr = r.trials
    assert list(tr["condition"]) == cond and list(tr["stimulus"]) == [str(i) for i in range(7)]
    np.testing.assert_array_equal(tr["start_step"], np.arange(7) * 5)
    full = r["h1:error"].values.reshape(35, 5)  # trials end to end on the global step axis
    ep = r.epochs("h1:error", (-2, 3), where={"condition": "déviant"})
    assert ep.dims == ("epoch", "lag", "unit") and list(ep.coords["epoch"]) == [1, 5]
    np.testing.assert_array_equal(ep.values[0], full[3:8])
    np.testing.assert_array_equal(ep.values[1], full[23:28])
    np.testing.assert_array_equal(r.epochs("h1:error", (0, 5), where={"stimulus": 3}).values[0],
                                  full[15:20])  # fmt: skip
    with pytest.raises(ValueError, match="no trial has condition='odd'; values: contrôle"):
        r.epochs("h1:error", (0, 5), where={"condition": "odd"})
    first = r.epochs("h1:error", (-2, 1), onsets=[0])
    assert np.all(np.isnan(first.values[0, :2])) and np.all(first.values[0, 2] == full[0])


# ---- validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("probe", "match"),
    [
        (npc.Probe("h9", "value"), "unknown population 'h9'; valid: input, h1, h2, out"),
        (npc.Probe("h1", "voltage"), "unknown variable 'voltage'; valid: value, error"),
        (npc.Probe("input", "error"), "'input' has no error neurons"),
        (npc.Probe("h1", "value", units=[5]), r"units must lie in \[0, 5\)"),
        (npc.Probe("h1", "value", mode="all"), "unknown mode 'all'"),
        (npc.Probe("h1", "value", every=0), "every must be an integer >= 1"),
        (npc.Probe("h1", "value", phases=("eval",)), "phases must be among"),
        (npc.Probe("h1->out", "weights"), "unknown 'h1->out'; valid: input->h1, h1->h2"),
        (npc.Probe("h1", "value", mode="summary", window=(3, 3)), "window must be"),
        (npc.Probe("h1", "value", samples=[2, 0]), "samples must be increasing"),
    ],
)
def test_bad_probes_are_refused_before_anything_runs(tmp_path, probe, match):
    sim = _sim({"backend": "numba", "device": None})
    with pytest.raises(ValueError, match=match):
        sim.record(tmp_path / "r.h5", [probe])
    assert sim.recorder is None


def test_bad_trial_labels(tmp_path):
    sim = _sim({"backend": "numba", "device": None})
    with sim.record(tmp_path / "r.h5", trial_columns=("condition",)):
        with pytest.raises(ValueError, match="'cond' was not declared; declared in record"):
            sim.infer({"input": _data()["input"]}, trials={"cond": ["a"] * 7})
        with pytest.raises(ValueError, match=r"expected shape \(7,\); got \(2,\)"):
            sim.infer({"input": _data()["input"]}, trials={"condition": ["a", "b"]})
    with pytest.raises(ValueError, match="duplicate|named"):
        sim.record(tmp_path / "q.h5", [npc.Probe("h1", "value"), npc.Probe("h1:value")])


# ---- the file: streaming, schema, safety -----------------------------------------------------
def test_whole_chunks_bounded_memory_and_schema(tmp_path):
    sim = _sim({"backend": "numba", "device": None})
    rec = sim.record(tmp_path / "r.h5", [npc.Probe("h1", "value", dtype=F64)], chunk_bytes=2048,
                     metadata={"experiment": "chunks"})  # fmt: skip
    st = rec.streams["h1:value"]["data"]
    assert st.rows == 2048 // (5 * 8) and st.ds.chunks == (st.rows, 5)
    buf_id = id(st.buf)
    for i in range(25):
        sim.infer({"input": _data()["input"] + i})
        assert st.ds.shape[0] % st.rows == 0  # only whole chunks before close
        assert st.n < st.rows and id(st.buf) == buf_id  # one chunk of memory, reused
    rec.close()
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["recordings/h1:value/data"].shape == (25 * 7 * 7, 5)
        assert f.attrs["schema"] == "neuropc-recording" and f.attrs["schema_version"] == 1
        assert f.attrs["neuropc_version"] == npc.__version__ and f.attrs["seed"] == 1
        cfg = json.loads(f["config"][()])
        assert cfg["network"]["populations"][1]["name"] == "h1"
        assert cfg["inference"]["steps"] == 6 and cfg["metadata"] == {"experiment": "chunks"}
        assert f["recordings/h1:value"].attrs["units"] == "a.u."
        assert list(f["progress"][()]) == [25, 175]

        def no_opaque(name, obj):  # only numbers and strings: nothing to unpickle
            if isinstance(obj, h5py.Dataset):
                assert obj.dtype.kind in "fiuS" or h5py.check_string_dtype(obj.dtype), name

        f.visititems(no_opaque)


def test_memory_recording_and_reuse_errors(tmp_path):
    sim = _sim({"backend": "numba", "device": None})
    rec = sim.record(None, [npc.Probe("h1", "value", mode="settled", dtype=F64)])
    st = sim.infer({"input": _data()["input"]})
    r = rec.open()
    np.testing.assert_array_equal(r["h1:value_settled"].values, st["h1"])
    with pytest.raises(ValueError, match="already recording"):
        sim.record(None)
    rec.close()
    assert sim.recorder is None


def test_unwritable_path_keeps_the_simulator(tmp_path):
    sim = _sim({"backend": "numba", "device": None})
    p0 = sim.parameters()
    with pytest.raises(RecordingError, match="no directory"):
        sim.record(tmp_path / "missing" / "r.h5")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        with pytest.raises(RecordingError, match="cannot create the recording"):
            sim.record(ro / "r.h5")
    finally:
        ro.chmod(0o700)
    assert sim.recorder is None
    sim.learn(_data())  # still usable
    assert any(np.any(v != p0[k]) for k, v in sim.parameters().items())


def test_disk_full_stops_recording_and_keeps_state(tmp_path, monkeypatch):
    from neuropc.record import recording

    a, b = _sim({"backend": "numba", "device": None}), _sim({"backend": "numba", "device": None})
    rec = a.record(tmp_path / "r.h5", [npc.Probe("h1", "value", dtype=F64)], chunk_bytes=1024,
                   flush_interval=0)  # fmt: skip
    a.learn(_data())  # a whole chunk is written and flushed

    def full(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recording._Stream, "_write", full)
    with pytest.raises(RecordingError, match="No space left on device.*simulation state is intact"):
        for _ in range(5):
            a.learn(_data())
    monkeypatch.undo()
    assert rec.closed and a.recorder is None
    for _ in range(_n_learned(a, b)):
        b.learn(_data())
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(v, b.parameters()[k])
    r = npc.open(tmp_path / "r.h5")  # the chunks flushed before the failure are readable
    assert r["h1:value"].shape[0] >= 1


def _n_learned(a, b) -> int:
    """How many batches ``a`` learned (its optimiser step counter)."""
    return a.backend.opt_t - b.backend.opt_t


def test_corrupt_truncated_foreign_and_newer_files(tmp_path):
    sim = _sim({"backend": "numba", "device": None})
    with sim.record(tmp_path / "r.h5", [npc.Probe("h1", "value")]):
        sim.infer({"input": _data()["input"]})
    raw = (tmp_path / "r.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all" * 10)
    for name in ("trunc.h5", "junk.h5"):
        with pytest.raises(RecordingError, match="not a readable HDF5 file"):
            npc.open(tmp_path / name)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RecordingError, match="is not a neuropc recording"):
        npc.open(tmp_path / "other.h5")
    with h5py.File(tmp_path / "r.h5", "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(RecordingError, match="schema version 99.*reads versions up to 1"):
        npc.open(tmp_path / "r.h5")
    with pytest.raises(RecordingError, match="no such recording"):
        npc.open(tmp_path / "none.h5")


def _writer(path, n, pause):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "recording_writer.py"), str(path), str(n), str(pause)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def _expected(n_batches: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import recording_writer as w
    finally:
        sys.path.pop(0)
    sim, X = w.make()
    rec = sim.record(None, w.PROBES, chunk_bytes=1024)
    for i in range(n_batches):
        sim.infer({"input": X + 0.01 * i})
    return rec.open()["h1:error"].values


def test_live_reader_sees_rows_grow_while_writing(tmp_path):
    path = tmp_path / "live.h5"
    proc = _writer(path, 40, 0.05)
    try:
        assert proc.stdout.readline().strip() == "started"
        r = npc.open(path)
        seen = []
        for _ in range(200):
            r.refresh()
            seen.append(r["h1:error"].shape[0])
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        grew = sorted(set(seen))
        assert len(grew) >= 3, seen  # several sizes observed while the writer ran
        assert proc.wait(60) == 0
        r.close()
    finally:
        proc.kill()
    full = npc.open(path)["h1:error"].values
    np.testing.assert_array_equal(full, _expected(40))


def test_sigkill_mid_run_leaves_a_readable_file_with_every_flushed_chunk(tmp_path):
    path = tmp_path / "killed.h5"
    proc = _writer(path, 100000, 0.002)
    try:
        assert proc.stdout.readline().strip() == "started"
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            ds = f["recordings/h1:error/data"]
            for _ in range(400):
                ds.refresh()
                if ds.shape[0] >= 300:
                    break
                time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    r = npc.open(path)
    got = r["h1:error"]
    rows = r.file["recordings/h1:error/data"].shape[0]
    assert rows >= 300 and rows % 12 == 0  # whole chunks of 12 rows (1024 B / 80 B)
    n_trials = got.shape[0]
    assert n_trials == rows // 9
    want = _expected(n_trials // 4 + 1)[:n_trials]
    np.testing.assert_array_equal(got.values, want)
    assert len(r.trials["trial_id"]) >= 1
