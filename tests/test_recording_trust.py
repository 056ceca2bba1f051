"""Recording you can trust (issue 9): never destroying a file that is not a recording, all-or-
nothing batches, reads that touch only the chunks they need, recordings that mix step counts.

Oracles: the bytes of the file that was there before; a reference recording of the same batches
without the failing one; HDF5's own chunk index (byte ranges of every chunk) against a log of the
bytes the reader asked for; the simulator's :class:`State` of each batch (settled values, per-step
energies) and of shorter runs of the same batch (the state after t steps is the settled state of a
t-step run)."""

from __future__ import annotations

import io
import os

import h5py
import numpy as np
import pytest

import neuropc as npc
from neuropc.errors import RecordingError
from neuropc.record import recording
from neuropc.record.reader import Recording

F64 = "float64"
NUMBA = {"backend": "numba", "device": None}


def _net() -> npc.Network:
    net = npc.Network()
    net.population("input", 6, role="input")
    net.population("h1", 5, activation="tanh")
    net.population("out", 3, role="target", precision=2.0)
    net.connect("input", "h1")
    net.connect("h1", "out")
    return net


def _sim(backend: dict | None = None, steps: int = 6, seed: int | None = None) -> npc.Simulator:
    inf = npc.Inference(steps=steps, rate=0.2, seed=seed)
    return npc.Simulator(_net(), dtype=F64, seed=1, inference=inf, **(backend or NUMBA))


def _data(b: int = 7, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {"input": rng.normal(size=(b, 6)) + shift, "out": rng.normal(size=(b, 3))}


def _snapshot(path) -> dict[str, np.ndarray]:
    """Every dataset of a file (numbers and strings), by path."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, o: out.__setitem__(name, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


# ---- 1. never destroy a file that is not ours ------------------------------------------------
def _text(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("my thesis notes, no backup\n" * 50)
    return p, "not an HDF5 file"


def _plain_hdf5(tmp_path):
    p = tmp_path / "data.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(10)
        f.attrs["owner"] = "someone else"
    return p, "HDF5 file that is not a neuropc recording"


def _checkpoint(tmp_path):
    p = tmp_path / "ckpt.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "neuropc-checkpoint"
        f["params"] = np.ones(4)
    return p, "format='neuropc-checkpoint'"


@pytest.mark.parametrize("make", [_text, _plain_hdf5, _checkpoint])
@pytest.mark.parametrize("overwrite", [True, False])
def test_record_refuses_a_file_that_is_not_a_recording(tmp_path, make, overwrite):
    path, what = make(tmp_path)
    before = path.read_bytes()
    sim = _sim()
    with pytest.raises(RecordingError) as e:
        sim.record(path, overwrite=overwrite)
    msg = str(e.value)
    assert repr(str(path)) in msg and what in msg and "overwrite='force'" in msg
    assert path.read_bytes() == before
    assert sim.recorder is None
    assert sorted(os.listdir(tmp_path)) == [path.name]  # nothing left beside it


def test_record_refuses_a_directory_even_with_force(tmp_path):
    d = tmp_path / "run.h5"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    sim = _sim()
    for ow in (True, False, "force"):
        with pytest.raises(RecordingError, match=r"run\.h5'.*is a directory.*another path"):
            sim.record(d, overwrite=ow)
    assert (d / "keep.txt").read_text() == "x" and sim.recorder is None


def _record_settled(path, shift: float, **kw) -> np.ndarray:
    sim = _sim()
    probe = npc.Probe("h1", "value", mode="settled", dtype=F64)
    with sim.record(path, [probe], **kw):
        st = sim.infer({"input": _data(shift=shift)["input"]})
    return st["h1"]


def test_a_previous_recording_is_replaced_by_default_and_kept_with_false(tmp_path):
    path = tmp_path / "r.h5"
    first = _record_settled(path, 0.0)
    before = path.read_bytes()
    with pytest.raises(RecordingError, match=r"exists \(a neuropc recording\).*overwrite=True"):
        _record_settled(path, 1.0, overwrite=False)
    assert path.read_bytes() == before
    with npc.open(path) as r:
        np.testing.assert_array_equal(r["h1:value_settled"].values, first)
    second = _record_settled(path, 1.0)  # overwrite=True, the default
    assert not np.array_equal(first, second)
    with npc.open(path) as r:
        np.testing.assert_array_equal(r["h1:value_settled"].values, second)
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


@pytest.mark.parametrize("make", [_text, _plain_hdf5, _checkpoint])
def test_force_replaces_any_file(tmp_path, make):
    path, _ = make(tmp_path)
    got = _record_settled(path, 0.0, overwrite="force")
    with npc.open(path) as r:
        np.testing.assert_array_equal(r["h1:value_settled"].values, got)


@pytest.mark.parametrize("bad", ["yes", "FORCE", 1, None, 0.0])
def test_overwrite_must_be_true_false_or_force(tmp_path, bad):
    sim = _sim()
    with pytest.raises(
        ValueError, match=r"overwrite must be True.*False.*'force'.*got " + repr(bad)
    ):
        sim.record(tmp_path / "r.h5", overwrite=bad)
    assert not (tmp_path / "r.h5").exists() and sim.recorder is None


def test_a_failed_replacement_leaves_the_old_recording_whole(tmp_path, monkeypatch):
    """The new file is built beside the old one and moved over it only once complete."""
    path = tmp_path / "r.h5"
    _record_settled(path, 0.0)
    before = path.read_bytes()

    def broken(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recording.Recorder, "_layout", broken)
    with pytest.raises(OSError, match="No space left"):
        _record_settled(path, 1.0)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["r.h5"]


def test_a_link_to_a_recording_is_written_where_it_points(tmp_path):
    target = tmp_path / "runs" / "r.h5"
    target.parent.mkdir()
    _record_settled(target, 0.0)
    link = tmp_path / "latest.h5"
    link.symlink_to(target)
    second = _record_settled(link, 1.0)
    assert link.is_symlink() and sorted(os.listdir(target.parent)) == ["r.h5"]
    with npc.open(target) as r:
        np.testing.assert_array_equal(r["h1:value_settled"].values, second)


def test_a_file_an_open_recorder_writes_is_not_replaced(tmp_path):
    path = tmp_path / "r.h5"
    a, b = _sim(), _sim()
    with a.record(path, [npc.Probe("h1", "value", mode="settled", dtype=F64)]):
        with pytest.raises(RecordingError, match="open recording in this process"):
            b.record(path, overwrite="force")
        st = a.infer({"input": _data()["input"]})
    with npc.open(path) as r:
        np.testing.assert_array_equal(r["h1:value_settled"].values, st["h1"])


# ---- 2. summary windows and all-or-nothing batches -------------------------------------------
@pytest.mark.parametrize(
    ("window", "variable"),
    [((7, None), "value"), ((2, 8), "value"), ((7, 9), "energy")],
)
def test_a_summary_window_longer_than_the_run_is_refused_by_record(tmp_path, window, variable):
    sim = _sim(steps=6)
    target = "h1" if variable == "value" else "out"
    p = npc.Probe(target, variable, mode="summary", window=window, name="win")
    with pytest.raises(ValueError) as e:
        sim.record(tmp_path / "r.h5", [p])
    msg = str(e.value)
    assert "probe 'win'" in msg and f"window {window}" in msg and "6 steps" in msg
    assert sim.recorder is None and not (tmp_path / "r.h5").exists()


def test_a_summary_window_is_checked_before_a_batch_runs(tmp_path):
    """A run with fewer steps than the window is refused before it runs: nothing is written,
    the parameters do not change, and the next batches line up with the trials table."""
    path = tmp_path / "r.h5"
    sim = _sim(steps=6)
    probes = [npc.Probe("h1", "value", dtype=F64),
              npc.Probe("h1", "value", mode="summary", window=(4, 7), dtype=F64, name="win")]  # fmt: skip
    rec = sim.record(path, probes, flush_interval=0)
    st0 = sim.learn(_data())
    lengths = {k: len(st.ds) for k, st in _streams(rec)}
    p0 = sim.parameters()
    with pytest.raises(ValueError, match=r"probe 'win'.*window \(4, 7\).*3 steps"):
        sim.learn(_data(), inference=sim.inference.replace(steps=3))
    for k, v in sim.parameters().items():
        np.testing.assert_array_equal(v, p0[k])
    assert {k: len(st.ds) for k, st in _streams(rec)} == lengths
    st1 = sim.infer({"input": _data()["input"]})
    rec.close()
    with npc.open(path) as r:
        assert list(r.trials["trial_id"]) == list(range(14))
        assert list(r["win"].coords["trial"]) == list(range(14))
        full = r["h1:value"].values
        np.testing.assert_array_equal(full[:7, -1], st0["h1"])
        np.testing.assert_array_equal(full[7:, -1], st1["h1"])
        np.testing.assert_allclose(r["win"].values, full[:, 4:7].mean(1), atol=1e-12)


def _streams(rec):
    for name, s in rec.streams.items():
        for k, st in s.items():
            yield f"{name}/{k}", st
    for k, st in rec.trial_streams.items():
        yield f"trials/{k}", st
    for k, st in rec.batch_streams.items():
        yield f"batches/{k}", st


PROBES = [
    npc.Probe("h1", "value", dtype=F64),
    npc.Probe("h1", "error", every=2, samples=[0, 3, 5], dtype=F64),
    npc.Probe("out", "value", mode="settled", dtype=F64),
    npc.Probe("h1", "value", mode="summary", window=(1, 5), reduce="max", dtype=F64, name="mx"),
    npc.Probe("h1->out", "weights"),
]


def _batches(n: int = 4) -> list[dict]:
    return [{"input": _data(shift=0.1 * i)["input"]} for i in range(n)]


def _labels(i: int) -> dict:
    return {"condition": [f"c{i}-{j}" for j in range(7)]}


@pytest.mark.parametrize("fail_at", [1, 4, 9, 17, 30])
@pytest.mark.parametrize("error", [RuntimeError, OSError])
def test_a_failure_mid_batch_truncates_every_dataset_back(tmp_path, monkeypatch, fail_at, error):
    """The ``fail_at``-th append of the third batch raises: every dataset and table is back to
    its length before that batch. With a non-I/O error the recording goes on and the file equals
    a recording that never saw the failed batch; an I/O error stops recording, and the file
    holds the first two batches, consistent."""
    a, b = _sim(seed=5), _sim(seed=5)
    kw = dict(trial_columns=("condition",), chunk_bytes=1024, flush_interval=0)
    rec = a.record(tmp_path / "a.h5", PROBES, **kw)
    ref = b.record(tmp_path / "b.h5", PROBES, **kw)
    X = _batches()
    for i in range(2):
        a.infer(X[i], trials=_labels(i))
        b.infer(X[i], trials=_labels(i))
    rec.flush()  # partial chunks on disk too: the failing batch starts from a flushed file
    ref.flush()
    lengths = {k: len(st.ds) for k, st in _streams(rec)}
    calls = {"n": 0}
    orig = recording._Stream.append

    def flaky(self, block):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise error("injected failure")
        orig(self, block)

    monkeypatch.setattr(recording._Stream, "append", flaky)
    with pytest.raises(RecordingError if error is OSError else RuntimeError, match="injected"):
        a.infer(X[2], trials=_labels(2))
    monkeypatch.undo()
    assert calls["n"] == fail_at  # the failure happened where intended
    if error is OSError:
        assert rec.closed
        with npc.open(tmp_path / "a.h5") as r:
            assert list(r.trials["trial_id"]) == list(range(14))
            assert list(r["h1:value"].coords["trial"]) == list(range(14))
        ref.close()
        got, want = _snapshot(tmp_path / "a.h5"), _snapshot(tmp_path / "b.h5")
    else:
        assert {k: len(st.ds) for k, st in _streams(rec)} == lengths
        assert (rec.n_batches, rec.n_trials) == (2, 14)
        a.infer(X[3], trials=_labels(3))  # a later batch records correctly
        b.infer(X[3], trials=_labels(3))
        rec.close()
        ref.close()
        got, want = _snapshot(tmp_path / "a.h5"), _snapshot(tmp_path / "b.h5")
        with npc.open(tmp_path / "a.h5") as r:
            assert list(r.trials["trial_id"]) == list(range(21))
            assert list(r["h1:value"].coords["trial"]) == list(range(21))
            assert list(r.trials["condition"][14:]) == _labels(3)["condition"]
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_a_label_too_long_fails_the_batch_without_a_trace(tmp_path):
    """A label over 64 bytes is refused before the batch runs: nothing of it is written, a
    learning batch leaves the parameters as they were, and the next batch records in line."""
    path = tmp_path / "r.h5"
    sim = _sim()
    rec = sim.record(path, PROBES, trial_columns=("condition",), chunk_bytes=1024)
    sim.infer(_batches()[0], trials=_labels(0))
    with pytest.raises(ValueError, match="longer than 64 bytes"):
        sim.infer(_batches()[1], trials={"condition": ["x" * 65] * 7})
    p0 = sim.parameters()
    with pytest.raises(ValueError, match="trial column 'condition': label 'xxx.*longer than 64"):
        sim.learn(_data(), trials={"condition": ["x" * 65] * 7})
    assert all(np.array_equal(p0[k], v) for k, v in sim.parameters().items())
    st = sim.infer(_batches()[2], trials=_labels(2))
    rec.close()
    with npc.open(path) as r:
        assert list(r.trials["trial_id"]) == list(range(14))
        assert list(r["h1:value"].coords["trial"]) == list(range(14))
        np.testing.assert_array_equal(r["h1:value"].values[7:, -1], st["h1"])


# ---- 3. reads: only the chunks needed; partial chunks rewritten whole ---------------------
class _LoggedFile(io.RawIOBase):
    """A read-only file that logs the byte range of every read (h5py's fileobj driver)."""

    def __init__(self, path) -> None:
        self.f = open(path, "rb")
        self.log: list[tuple[int, int]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()

    def readinto(self, b) -> int:
        pos = self.f.tell()
        n = self.f.readinto(b)
        self.log.append((pos, n))
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def _chunks_read(path, name: str, read) -> tuple[set[int], np.ndarray]:
    """Indices of the chunks of ``recordings/<name>/data`` whose bytes ``read(array)`` fetched,
    and what it returned: HDF5's chunk index gives each chunk's byte range, the logged file the
    bytes fetched."""
    lf = _LoggedFile(path)
    with h5py.File(lf, "r") as f:
        rec = Recording(f, owned=False)
        ds = f[f"recordings/{name}/data"]
        spans = {}
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            spans[info.chunk_offset[0] // ds.chunks[0]] = (info.byte_offset, info.size)
        arr = rec[name]
        lf.log.clear()
        got = read(arr)
        hit = {c for c, (o, s) in spans.items() if any(p < o + s and o < p + n for p, n in lf.log)}
    lf.close()
    return hit, got


def test_sel_step_reads_only_the_chunks_holding_those_steps(tmp_path):
    T = 60
    sim = _sim(steps=T)
    path = tmp_path / "r.h5"
    with sim.record(path, [npc.Probe("h1", "value", dtype=F64)], chunk_bytes=1024) as rec:
        sim.infer({"input": _data()["input"]})
        per_chunk = rec.streams["h1:value"]["data"].rows
    k = T + 1  # rows per trial
    assert per_chunk == 1024 // 40 and per_chunk < k  # a trial spans several chunks
    with npc.open(path) as r:
        full = r["h1:value"].values
    cases = [
        (lambda a: a.sel(step=[0, T]).values, [(i, s) for i in range(7) for s in (0, T)],
         full[:, [0, T]]),
        (lambda a: a.sel(step=30, unit=[3, 1]).values, [(i, 30) for i in range(7)],
         full[:, 30][:, [3, 1]]),
        (lambda a: a.isel(trial=[5, 2], step=slice(10, 13)).values,
         [(i, s) for i in (2, 5) for s in range(10, 13)], full[[5, 2], 10:13]),
        (lambda a: a[3].values, [(3, s) for s in range(k)], full[3]),
    ]  # fmt: skip
    for read, needed, want in cases:
        hit, got = _chunks_read(path, "h1:value", read)
        assert hit == {(i * k + s) // per_chunk for i, s in needed}
        np.testing.assert_array_equal(got, want)
    hit, got = _chunks_read(path, "h1:value", lambda a: a.values)
    assert hit == set(range(-(-7 * k // per_chunk)))  # a full read: every chunk
    np.testing.assert_array_equal(got, full)


def test_a_flushed_partial_chunk_is_rewritten_whole_when_it_fills(tmp_path):
    """After ``flush()`` mid-run writes a partial chunk, the next writes rewrite that chunk
    whole: the dataset ends on chunk boundaries again and holds what a run without the flush
    holds."""
    a, b = _sim(), _sim()
    kw = dict(chunk_bytes=1024, flush_interval=1e9)
    rec = a.record(tmp_path / "a.h5", [npc.Probe("h1", "value", dtype=F64)], **kw)
    ref = b.record(tmp_path / "b.h5", [npc.Probe("h1", "value", dtype=F64)], **kw)
    st = rec.streams["h1:value"]["data"]
    X = _batches(6)
    a.infer(X[0])
    b.infer(X[0])
    rec.flush()
    assert st.ds.shape[0] == 49 and 49 % st.rows != 0  # a partial chunk on disk
    for x in X[1:]:
        a.infer(x)
        b.infer(x)
        assert st.ds.shape[0] % st.rows == 0  # whole chunks only, as without the flush
    rec.close()
    ref.close()
    got, want = _snapshot(tmp_path / "a.h5"), _snapshot(tmp_path / "b.h5")
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ---- 4. recordings that mix step counts ------------------------------------------------------
def test_a_recording_mixing_step_counts_reads_back_padded(backend, tmp_path):
    """Train with 6 steps, test with 3 and 9: per-step recordings have ``max + 1`` steps, each
    trial's rows hold its run (the settled state of a t-step run of the same batch at step t,
    the State's settled values at its last step) and NaN after it."""
    sim = _sim(backend, steps=6)
    oracle = _sim(backend, steps=6)
    path = tmp_path / "r.h5"
    probes = [npc.Probe("h1", "value", dtype=F64), npc.Probe("out", "error", dtype=F64),
              npc.Probe("h1", "value", every=2, name="thin", dtype=F64)]  # fmt: skip
    plan = [("learn", 6), ("infer", 3), ("infer", 9), ("learn", 6)]
    states, params = [], []
    with sim.record(path, probes, preset="steps"):
        for i, (how, T) in enumerate(plan):
            params.append(sim.parameters())
            cfg = sim.inference.replace(steps=T)
            x = _data(shift=0.1 * i)
            if how == "learn":
                states.append(sim.learn(x, inference=cfg))
            else:
                states.append(sim.infer({"input": x["input"]}, inference=cfg))
    r = npc.open(path)
    v = r["h1:value"]
    assert v.dims == ("trial", "step", "unit") and v.shape == (28, 10, 5)
    assert list(v.coords["step"]) == list(range(10))
    full = v.values
    e = r["out:error"].values
    en = r["total:energy"]
    assert en.shape == (4, 10, 1)
    thin = r["thin"]
    assert list(thin.coords["step"]) == [0, 2, 4, 6, 8]
    for i, ((how, T), st) in enumerate(zip(plan, states)):
        rows = slice(7 * i, 7 * i + 7)
        np.testing.assert_array_equal(full[rows, T], st["h1"])
        np.testing.assert_array_equal(e[rows, T], st["out:error"])
        assert np.all(np.isnan(full[rows, T + 1 :])) and not np.any(np.isnan(full[rows, : T + 1]))
        np.testing.assert_allclose(en.values[i, : T + 1, 0], st.energy, rtol=1e-6)
        assert np.all(np.isnan(en.values[i, T + 1 :, 0]))
        kept = [s for s in range(0, 10, 2) if s <= T]
        np.testing.assert_array_equal(thin.values[rows, : len(kept)], full[rows][:, kept])
        assert np.all(np.isnan(thin.values[rows, len(kept) :]))
        if how == "infer":  # every step against shorter runs of the same batch
            oracle.load_parameters(params[i])
            x = {"input": _data(shift=0.1 * i)["input"]}
            for t in range(T + 1):
                s = oracle.infer(x, inference=oracle.inference.replace(steps=t))
                np.testing.assert_allclose(full[rows, t], s["h1"], atol=1e-12)
    # lazy reads of a mixed recording equal slices of the full read
    np.testing.assert_array_equal(
        v.sel(step=[0, 8], unit=[4, 1]).values, full[:, [0, 8]][:, :, [4, 1]]
    )
    np.testing.assert_array_equal(v[9:16].values, full[9:16])
    np.testing.assert_array_equal(v.isel(trial=[20, 3, 3], step=7).values, full[[20, 3, 3], 7])
    # epochs on the global step axis: a window past a short trial's end reads the next trial
    tr = r.trials
    assert list(tr["stop_step"] - tr["start_step"]) == [T + 1 for _, T in plan for _ in range(7)]
    ep = r.epochs("h1:value", (0, 6), onsets=[int(tr["start_step"][13])])  # trial 13: 3 steps
    np.testing.assert_array_equal(ep.values[0, :4], full[13, :4])
    np.testing.assert_array_equal(ep.values[0, 4:], full[14, :2])
    r.close()


@pytest.mark.parametrize("max_slabs", [512, 3])
def test_any_selection_of_a_mixed_recording_equals_numpy_indexing(tmp_path, monkeypatch, max_slabs):
    """Random position keys (ints, negative ints, slices with steps, unsorted lists with repeats,
    masks) on a recording mixing 2, 7 and 4 steps read what numpy indexing of the full array
    gives; with a small hyperslab budget too (the covering-range path)."""
    from neuropc.record import reader

    monkeypatch.setattr(reader._Rows, "MAX_SLABS", max_slabs)
    sim = _sim(steps=7)
    path = tmp_path / "r.h5"
    with sim.record(path, [npc.Probe("h1", "value", dtype=F64)], chunk_bytes=1024):
        for i, T in enumerate([2, 7, 4, 7, 2]):
            sim.infer(_batches(5)[i], inference=sim.inference.replace(steps=T))
    rng = np.random.default_rng(0)
    with npc.open(path) as r:
        a = r["h1:value"]
        full = a.values
        assert full.shape == (35, 8, 5)

        def key(n: int):
            kind = rng.integers(5)
            if kind == 0:
                return int(rng.integers(-n, n))
            if kind == 1:
                lo, hi = sorted(rng.integers(0, n + 1, 2))
                return slice(int(lo), int(hi), int(rng.integers(1, 4)))
            if kind == 2:
                return rng.integers(0, n, rng.integers(1, 6))
            if kind == 3:
                return rng.random(n) < 0.4
            return slice(None)

        def outer(k: tuple) -> np.ndarray:  # per-dim (orthogonal) indexing, as xarray's
            pos = [np.arange(n)[i] for n, i in zip(full.shape, k)]
            out = full[np.ix_(*(np.atleast_1d(p) for p in pos))]
            return out[tuple(0 if np.ndim(p) == 0 else slice(None) for p in pos)]

        for _ in range(300):
            k = tuple(key(n) for n in full.shape)
            np.testing.assert_array_equal(a[k].values, outer(k), err_msg=str(k))
        # the same on an array already in memory (an integer-free first selection keeps 3 dims)
        mem = a[:, :, :]
        for _ in range(100):
            k = tuple(key(n) for n in full.shape)
            np.testing.assert_array_equal(mem[k].values, outer(k), err_msg=str(k))


def test_each_batch_records_its_own_inference_settings(tmp_path):
    """The batches table holds the Inference each call ran with (/config holds the default):
    the oracle is the Inference objects passed to the calls."""
    sim = _sim()
    calls = [
        npc.Inference(steps=4, rate=0.2),
        npc.Inference(steps=7, rate=0.05, init="zero", temperature=0.5, errors="leaky",
                      error_rate=0.3),
        npc.Inference(steps=3, rate=0.1, mode="fpa", nudge=0.5),
    ]  # fmt: skip
    with sim.record(tmp_path / "r.h5"):
        sim.infer(_batches()[0], inference=calls[0])
        sim.infer(_batches()[1], inference=calls[1])
        sim.learn(_data(), inference=calls[2])
    with npc.open(tmp_path / "r.h5") as r:
        bt = r.batches
        for i, cfg in enumerate(calls):
            assert int(bt["steps"][i]) == cfg.steps
            for k in ("rate", "temperature", "tol"):
                assert float(bt[k][i]) == getattr(cfg, k), k
            for k in ("error_rate", "nudge"):
                v = getattr(cfg, k)
                assert np.isnan(bt[k][i]) if v is None else float(bt[k][i]) == v, k
            for k in ("mode", "init", "errors"):
                got = bt[k][i]
                assert (got.decode() if isinstance(got, bytes) else str(got)) == getattr(cfg, k)
