"""Checkpoints. Oracle: the same run without a break (bit for bit), and the file's own contents
(what was written is what is read, shapes are checked against the network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import BACKEND_PARAMS, ROOT

import neuropc as npc
from neuropc import checkpoint

# one script, three ways: 4 batches + an epoch of fit() without a break; the first 2 batches then
# save; load (in a fresh process) and the rest. Langevin noise and Adam make every stream matter.
SCRIPT = """
import sys, json
import numpy as np
import neuropc as npc
backend, device, mode, path, out = sys.argv[1:6]
device = None if device == "none" else device
rng = np.random.default_rng(0)
X, Y = rng.random((64, 6)), np.eye(3)[rng.integers(0, 3, 64)]
batch = lambda k: {"input": X[16 * k : 16 * k + 16], "output": Y[16 * k : 16 * k + 16]}
inf = npc.Inference(steps=8, rate=0.1, temperature=0.01)
if mode == "load":
    sim = npc.load(path)
else:
    sim = npc.Simulator(npc.mlp([6, 5, 3]), backend=backend, device=device, seed=3,
                        inference=inf, optimizer=npc.Adam(1e-2))
    for k in range(2):
        sim.learn(batch(k))
    if mode == "save":
        sim.save(path)
        sys.exit(0)
for k in range(2, 4):
    sim.learn(batch(k))
sim.fit({"input": X, "output": Y}, epochs=1, batch_size=16, progress=False)
np.savez(out, **sim.parameters())
"""


def _run(tmp: Path, *args: str) -> None:
    script = tmp / "ck_script.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("be", BACKEND_PARAMS)
def test_resume_in_a_new_process_is_bit_identical(tmp_path: Path, be: dict) -> None:
    dev = be["device"] or "none"
    ck = tmp_path / "run.h5"
    _run(tmp_path, be["backend"], dev, "straight", str(ck), str(tmp_path / "a.npz"))
    _run(tmp_path, be["backend"], dev, "save", str(ck), "-")
    _run(tmp_path, be["backend"], dev, "load", str(ck), str(tmp_path / "b.npz"))
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k  # bit for bit


def _sim(sizes=(4, 3, 2), **kw) -> npc.Simulator:
    kw.setdefault("optimizer", npc.Adam(1e-2))
    return npc.Simulator(npc.mlp(list(sizes)), dtype="float64", seed=1, **kw)


def _data(sizes=(4, 3, 2)) -> dict:
    rng = np.random.default_rng(2)
    return {"input": rng.random((5, sizes[0])), "output": rng.random((5, sizes[-1]))}


def test_file_holds_everything_and_loads_back(tmp_path: Path) -> None:
    sim = _sim(inference=npc.Inference(steps=7, rate=0.05), optimizer=npc.SGD(0.1, momentum=0.9))
    sim.learn(_data())
    path = sim.save(tmp_path / "a.h5")
    assert path.is_absolute()
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "neuropc-checkpoint"
        assert int(f.attrs["schema_version"]) == checkpoint.SCHEMA_VERSION
        for name, w in sim.parameters().items():
            np.testing.assert_array_equal(f["parameters"][name][()], w)
        # nothing but numbers and strings: no object (pickled) data anywhere
        kinds = set()
        f.visititems(lambda _n, o: kinds.add(o.dtype.kind) if isinstance(o, h5py.Dataset) else 0)
        assert kinds <= {"f"}
    new = npc.load(path)
    assert new.inference == sim.inference and new.optimizer == sim.optimizer
    assert new.network.spec() == sim.network.spec()
    assert new.backend.optimizer_state()["t"] == 1
    for a, b in zip(new.backend.optimizer_state().values(), sim.backend.optimizer_state().values()):
        np.testing.assert_array_equal(a, b)


def test_mismatched_network_names_parameter_and_shapes(tmp_path: Path) -> None:
    src = _sim()
    src.learn(_data())
    path = src.save(tmp_path / "a.h5")
    other = _sim(sizes=(4, 5, 2))
    before = other.parameters()
    with pytest.raises(
        npc.CheckpointError, match=r"parameter 'input->h1': expected shape \(5, 4\); got \(3, 4\)"
    ):
        other.restore(path)
    after = other.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing applied
    # same shapes, other settings: the network difference is named
    net = npc.mlp([4, 3, 2], activation="sigmoid")
    with pytest.raises(npc.CheckpointError, match="population 'h1': activation is 'tanh'"):
        npc.Simulator(net, dtype="float64").restore(path)


def test_edited_dataset_shape_is_refused_whole(tmp_path: Path) -> None:
    path = _sim().save(tmp_path / "a.h5")
    with h5py.File(path, "a") as f:
        del f["parameters/input->h1"]
        f["parameters/input->h1"] = np.zeros((3, 5))
    with pytest.raises(
        npc.CheckpointError, match=r"parameter 'input->h1': expected shape \(3, 4\); got \(3, 5\)"
    ):
        npc.load(path)
    target = _sim()
    before = target.parameters()
    with pytest.raises(npc.CheckpointError, match="input->h1"):
        target.restore(path)
    assert all(np.array_equal(before[k], target.parameters()[k]) for k in before)


def test_future_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = _sim().save(tmp_path / "a.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = checkpoint.SCHEMA_VERSION + 1
    with pytest.raises(npc.CheckpointError, match="schema version 2, newer than this neuropc"):
        npc.load(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(npc.CheckpointError, match="is not an HDF5 file"):
        npc.load(text)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(npc.CheckpointError, match="is not a neuropc checkpoint"):
        npc.load(tmp_path / "other.h5")
    with pytest.raises(npc.CheckpointError, match="is a directory"):
        npc.load(tmp_path)
    with pytest.raises(npc.CheckpointError, match="no such checkpoint file"):
        npc.load(tmp_path / "missing.h5")


def test_save_never_destroys_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    sim = _sim()
    text = tmp_path / "data.h5"
    text.write_bytes(b"precious bytes")
    with pytest.raises(
        npc.CheckpointError, match="not a neuropc checkpoint; pass overwrite='force'"
    ):
        sim.save(text)
    assert text.read_bytes() == b"precious bytes"
    with pytest.raises(npc.CheckpointError, match="it is a directory"):
        sim.save(tmp_path)
    with pytest.raises(npc.CheckpointError, match="no such folder"):
        sim.save(tmp_path / "nope" / "a.h5")
    ck = sim.save(tmp_path / "a.h5")
    sim.save(ck)  # a checkpoint is replaced
    with pytest.raises(npc.CheckpointError, match="overwrite=False"):
        sim.save(ck, overwrite=False)
    sim.save(text, overwrite="force")
    assert checkpoint.is_checkpoint(text)


def test_crash_while_saving_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    sim = _sim()
    path = sim.save(tmp_path / "a.h5")
    old = path.read_bytes()
    sim.learn(_data())

    def boom(f, *a):
        f.attrs["format"] = "half"
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write", boom)
    with pytest.raises(KeyboardInterrupt):
        sim.save(path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # no temporary file left


def test_inspect_reads_checkpoints(tmp_path: Path) -> None:
    sim = _sim()
    sim.learn(_data())
    path = sim.save(tmp_path / "a.h5")
    r = subprocess.run(
        [sys.executable, "-m", "neuropc.cli", "inspect", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "neuropc checkpoint" in r.stdout and "after 1 steps" in r.stdout
    assert "input->h1" in r.stdout and "(3, 4)" in r.stdout
