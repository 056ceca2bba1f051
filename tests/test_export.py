"""Exports of a recording: describe(), NWB (read back with pynwb, checked with nwbinspector),
SONATA report views (read back with libsonata) and PNG figures. Oracle: the native recording
read through neuropc.open."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

import neuropc as npc
from neuropc.errors import RecordingError
from neuropc.record import export
from neuropc.record import nwb as nwb_export

STEPS = 6
SPS = export.SECONDS_PER_STEP
# nwbinspector checks that fail by design for an in-silico subject (see docs/nwb.md): a model has
# no age, sex or species
SUBJECT_CHECKS = {"check_subject_age", "check_subject_sex", "check_subject_species_exists"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """A test batch (the brief's snippet), then a learning batch: per-sample steps, settled and
    summary recordings, a subset probe with every=2 and a subset of samples, energies, weights."""
    path = str(tmp_path_factory.mktemp("rec") / "run.h5")
    net = npc.mlp([6, 5, 4, 3], activation="tanh")
    sim = npc.Simulator(net, dtype="float64", seed=0,
                        inference=npc.Inference(steps=STEPS, rate=0.2))  # fmt: skip
    rng = np.random.default_rng(0)
    probes = [
        npc.Probe("h1", "error"),
        npc.Probe("h2", "value", mode="summary", reduce="max"),
        npc.Probe("h1", "value", units=[1, 3], every=2, samples=[0, 2], name="h1 subset"),
        npc.Probe("h1->h2", "weights"),
    ]
    with sim.record(path, probes, preset="settled", trial_columns=("condition",)):
        sim.infer(
            {"input": rng.normal(size=(8, 6))}, trials={"condition": ["std"] * 6 + ["dev"] * 2}
        )
        sim.learn({"input": rng.normal(size=(5, 6)), "output": rng.normal(size=(5, 3))},
                  trials={"condition": ["odd"] * 5})  # fmt: skip
    return path


def _rows(a: npc.LabelledArray) -> np.ndarray:
    v = a.values
    return v.reshape(-1, v.shape[-1])


def _row_times(rec: npc.Recording, name: str) -> np.ndarray:
    """Global step of every native row: trial start + step, or the trial's last step."""
    a = rec[name]
    start = dict(zip(rec.trials["trial_id"].tolist(), rec.trials["start_step"].tolist()))
    stop = dict(zip(rec.trials["trial_id"].tolist(), rec.trials["stop_step"].tolist()))
    trial = a.coords["trial"]
    if "step" in a.dims:
        return (np.array([start[t] for t in trial])[:, None] + a.coords["step"][None]).ravel()
    return np.array([stop[t] - 1 for t in trial])


# ---- describe ---------------------------------------------------------------------------------
def test_describe_lists_every_recording_with_dims_shape_units(run):
    text = export.describe(run)
    rec = npc.open(run)
    lines = text.splitlines()
    for name in rec.names:
        a = rec[name]
        (line,) = [ln for ln in lines if ln.strip().startswith(name + "  ")]
        assert f"{' x '.join(a.dims)} {tuple(a.shape)}" in line
        assert a.attrs["units"] in line and f"mode {a.attrs['mode']}" in line
        assert f"every {a.attrs['every']}" in line
    assert "h1:error" in text and "trial x step x unit (13, 7, 5)" in text
    assert "h1 subset" in text and "(4, 4, 2)" in text
    assert "progress   2 batches, 13 trials" in text
    assert "trials: 13 rows; label columns: condition" in text
    assert "condition  std 6, dev 2, odd 5" in text and "phase      test 8, train 5" in text
    assert "h1      size 5  role hidden  activation tanh" in text
    assert f"created    {rec.attrs['created']}" in text and "seed       0" in text


def test_describe_bad_files_raise_recording_error(tmp_path):
    with pytest.raises(RecordingError, match="no such recording"):
        export.describe(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RecordingError, match="not a neuropc recording"):
        export.describe(tmp_path / "other.h5")


def test_row_index_reads_both_layouts(tmp_path):
    """Per-item counts (``nsteps``) and per-row steps (``step``) give the same row labels;
    rows of an item the writer had not finished are left out."""
    with h5py.File(tmp_path / "x.h5", "w") as f:
        a = f.create_group("a")
        a.attrs["every"] = 2
        a["data"] = np.zeros((8, 1))  # 3 + 3 rows, then 2 rows of an unfinished item
        a["trial"] = [4, 7, 9]
        a["nsteps"] = np.array([3, 3, 3], np.int32)
        b = f.create_group("b")
        b["data"] = np.zeros((6, 1))
        b["trial"] = [4, 4, 4, 7, 7, 7]
        b["step"] = np.array([0, 2, 4] * 2, np.int32)
        ia, sa, na = export.row_index(a)
        ib, sb, nb = export.row_index(b)
    assert na == nb == 6
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


# ---- NWB --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nwb_path(run, tmp_path_factory) -> str:
    pytest.importorskip("pynwb")
    return export.to_nwb(run, tmp_path_factory.mktemp("nwb") / "run.nwb")


def _check_nwb_against_native(nwb_path: str, run: str) -> None:
    import pynwb

    rec = npc.open(run)
    names = export._unique_names(rec.names)
    with pynwb.NWBHDF5IO(nwb_path, "r") as io:
        nwb = io.read()
        misc = nwb.processing["misc"]
        per_sample = [n for n in rec.names if rec[n].dims[0] == "trial"]
        for name in per_sample:
            ts = misc[names[name]]
            assert isinstance(ts, pynwb.TimeSeries)
            a = rec[name]
            native, t = _rows(a), _row_times(rec, name)
            order = np.argsort(t, kind="stable")  # rows in time order (the subset probe)
            got = ts.data[:]
            assert got.dtype == native.dtype
            np.testing.assert_array_equal(got, native[order])  # exact
            np.testing.assert_allclose(ts.get_timestamps(), t[order] * SPS, rtol=0, atol=1e-12)
            assert ts.unit == a.attrs["units"] and ts.data.compression == "gzip"
        h1 = misc["h1_error"]
        assert (h1.starting_time, h1.rate, h1.continuity) == (0.0, 1 / SPS, "continuous")
        st = misc["h1_value_settled"]
        assert st.starting_time == pytest.approx(STEPS * SPS)
        assert st.rate == pytest.approx(1 / ((STEPS + 1) * SPS))
        sub = misc["h1_subset"]  # every 2 and samples [0, 2]: irregular, explicit timestamps
        assert sub.timestamps is not None and sub.rate is None

        # model_units: one row per data column of every series
        mu = misc["model_units"].to_dataframe()
        assert len(mu) == sum(rec[n].shape[-1] for n in per_sample)
        s = mu[mu.series == "h1_subset"]
        assert s.index_in_population.tolist() == [1, 3] and s.series_column.tolist() == [0, 1]
        assert set(s.population) == {"h1"} and set(s.variable) == {"value"}
        assert set(mu.series) == {names[n] for n in per_sample}
        pops = misc["model_populations"].to_dataframe()
        assert pops.population.tolist() == ["input", "h1", "h2", "output"]
        assert pops["size"].tolist() == [6, 5, 4, 3]
        assert pops["shape"].tolist() == ["[6]", "[5]", "[4]", "[3]"]

        # trials
        tr, df = rec.trials, nwb.trials.to_dataframe()
        np.testing.assert_array_equal(df.index, tr["trial_id"])
        np.testing.assert_allclose(df.start_time, tr["start_step"] * SPS, rtol=0, atol=1e-12)
        np.testing.assert_allclose(df.stop_time, tr["stop_step"] * SPS, rtol=0, atol=1e-12)
        assert df.phase.tolist() == ["test"] * 8 + ["train"] * 5
        assert df.condition.tolist() == ["std"] * 6 + ["dev"] * 2 + ["odd"] * 5
        np.testing.assert_array_equal(df.batch, tr["batch"])
        np.testing.assert_array_equal(df["sample"], tr["sample"])

        # energies and per-batch recordings in analysis
        for name in [n for n in rec.names if n not in per_sample]:
            a = rec[name]
            t = nwb.analysis[names[name]].to_dataframe()
            col = export.sanitize(str(a.coords["column"][0]))
            np.testing.assert_array_equal(t[col], _rows(a)[:, 0])
            if "step" in a.dims:
                np.testing.assert_array_equal(t.step, np.tile(a.coords["step"], a.shape[0]))
        w = nwb.analysis["h1_to_h2_weights"].to_dataframe()
        np.testing.assert_array_equal(w.to_numpy()[:, 1:], rec["h1->h2:weights"].values)
        b = nwb.analysis["batches"].to_dataframe()
        assert b.phase.tolist() == ["test", "train"] and b.learned.tolist() == [False, True]

        # metadata
        assert nwb.session_start_time.isoformat() == rec.attrs["created"]
        assert nwb.subject.subject_id == "neuropc-model" and nwb.subject.species is None
        assert '"trial_columns"' in nwb.source_script
        assert "h1 (5, hidden, tanh)" in nwb.experiment_description
    rec.close()


def test_nwb_round_trip_matches_the_recording(nwb_path, run):
    _check_nwb_against_native(nwb_path, run)


def test_nwb_streams_many_small_buffers(run, tmp_path, monkeypatch):
    """Tiny chunks and buffers: the same file content, written buffer by buffer, with the
    reordered subset probe gathered across buffer boundaries."""
    pytest.importorskip("pynwb")
    monkeypatch.setattr(nwb_export, "_CHUNK_BYTES", 24)
    monkeypatch.setattr(nwb_export, "_BUFFER_CHUNKS", 2)
    out = export.to_nwb(run, tmp_path / "small.nwb")
    _check_nwb_against_native(out, run)
    with h5py.File(out, "r") as f:
        assert f["processing/misc/h1_error/data"].chunks == (1, 5)


def test_nwb_identifier_is_deterministic(nwb_path, run, tmp_path):
    import pynwb

    again = export.to_nwb(run, tmp_path / "again.nwb", session_description="again")
    with pynwb.NWBHDF5IO(nwb_path, "r") as a, pynwb.NWBHDF5IO(again, "r") as b:
        na, nb = a.read(), b.read()
        assert na.identifier == nb.identifier
        assert nb.session_description == "again"


def test_nwbinspector_only_the_documented_subject_checks_fail(nwb_path):
    nwbinspector = pytest.importorskip("nwbinspector")
    from nwbinspector import Importance

    bad = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION}
    msgs = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=nwb_path) if m.importance in bad]
    assert {m.check_function_name for m in msgs} == SUBJECT_CHECKS, [m.message for m in msgs]


def test_nwbinspector_clean_with_a_full_subject(run, tmp_path):
    """The subject checks are the only blockers: a subject with age, sex and species clears
    every CRITICAL and BEST_PRACTICE_VIOLATION message."""
    pytest.importorskip("pynwb")
    nwbinspector = pytest.importorskip("nwbinspector")
    from nwbinspector import Importance

    subject = {"subject_id": "s1", "species": "Homo sapiens", "sex": "U", "age": "P30Y"}
    out = export.to_nwb(run, tmp_path / "s.nwb", subject=subject)
    bad = {Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION}
    msgs = [m for m in nwbinspector.inspect_nwbfile(nwbfile_path=out) if m.importance in bad]
    assert msgs == []


def test_nwb_without_pynwb_says_how_to_install(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    with pytest.raises(ImportError, match=r'pip install "neuropc\[nwb\]"'):
        export.to_nwb(run, tmp_path / "x.nwb")


def test_nwb_argument_errors(run, tmp_path):
    pytest.importorskip("pynwb")
    with pytest.raises(ValueError, match="seconds_per_step"):
        export.to_nwb(run, tmp_path / "x.nwb", seconds_per_step=0)
    with pytest.raises(ValueError, match="must not replace"):
        export.to_nwb(run, run)


# ---- SONATA -----------------------------------------------------------------------------------
def test_sonata_views_read_back_with_libsonata(run, tmp_path, monkeypatch):
    libsonata = pytest.importorskip("libsonata")
    files = export.to_sonata(run, tmp_path / "sonata")
    rec = npc.open(run)
    per_sample = [n for n in rec.names if rec[n].dims[0] == "trial"]
    assert len(files) == len(per_sample)
    monkeypatch.chdir(tmp_path / "sonata")  # links are relative to the view, not to the cwd
    for fn, name in zip(files, per_sample):
        with h5py.File(fn, "r") as v:
            assert v.attrs["magic"] == 0x0A7A and list(v.attrs["version"]) == [0, 1]
            assert v.attrs["recording"] == name
            assert v[f"report/{rec[name].attrs['target']}/data"].is_virtual  # no copy
        rep = libsonata.ElementReportReader(fn)
        assert rep.get_population_names() == [rec[name].attrs["target"]]
        pop = rep[rec[name].attrs["target"]]
        native = _rows(rec[name])
        every = rec[name].attrs["every"] if "step" in rec[name].dims else 1
        assert pop.times == (0.0, float(len(native) * every), float(every))
        assert pop.data_units == rec[name].attrs["units"] and pop.time_units == "step"
        assert pop.get_node_ids() == rec[name].coords["unit"].tolist()
        got = pop.get()
        np.testing.assert_array_equal(np.asarray(got.data), native)
        assert np.asarray(got.ids)[:, 0].tolist() == rec[name].coords["unit"].tolist()


# ---- plots ------------------------------------------------------------------------------------
def test_plot_file_writes_pngs(run, tmp_path):
    pytest.importorskip("matplotlib")
    from neuropc.analysis.plotting import plot_file

    paths = plot_file(run, tmp_path / "plots")
    rec = npc.open(run)
    want = {"energy"} | {export.sanitize(n) for n in rec.names if rec[n].dims[0] == "trial"}
    assert {p.rsplit("/", 1)[-1].removesuffix(".png") for p in paths} == want
    for p in paths:
        with open(p, "rb") as fh:
            head = fh.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert len(open(p, "rb").read()) > 5000


def test_plot_without_matplotlib_says_how_to_install(run, tmp_path, monkeypatch):
    from neuropc.analysis.plotting import plot_file

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "neuropc\[plot\]"'):
        plot_file(run, tmp_path / "plots")


def test_runs_with_different_step_counts(tmp_path):
    """Batches of 6 and 9 inference steps in one recording: the reader pads the shorter runs with
    NaN to one (trial, step, unit) array, and describe, the NWB export and the plots work."""
    path = tmp_path / "mixed.h5"
    sim = npc.Simulator(npc.mlp([6, 5, 3], activation="tanh"), dtype="float64", seed=0,
                        inference=npc.Inference(steps=6, rate=0.2))  # fmt: skip
    rng = np.random.default_rng(1)
    with sim.record(path, [npc.Probe("h1", "error")], preset="energy"):
        sim.infer({"input": rng.normal(size=(3, 6))})
        sim.infer({"input": rng.normal(size=(2, 6))}, inference=npc.Inference(steps=9, rate=0.2))
    (line,) = [ln for ln in export.describe(path).splitlines() if "h1:error " in ln]
    assert "trial x step x unit (5, 10, 5)" in line
    with h5py.File(path, "r") as f:
        native = f["recordings/h1:error/data"][()]
        energy = f["recordings/total:energy/data"][:, 0]
    pynwb = pytest.importorskip("pynwb")
    out = export.to_nwb(path, tmp_path / "mixed.nwb")
    with pynwb.NWBHDF5IO(out, "r") as io:
        nwb = io.read()
        ts = nwb.processing["misc"]["h1_error"]
        np.testing.assert_array_equal(ts.data[:], native)
        # trials of 7 and 10 steps end to end: every step of [0, 41) once
        np.testing.assert_allclose(ts.get_timestamps(), np.arange(41) * SPS, atol=1e-12)
        t = nwb.analysis["total_energy"].to_dataframe()
        np.testing.assert_array_equal(t.total, energy)
        assert t.step.tolist() == list(range(7)) + list(range(10))
    pytest.importorskip("matplotlib")
    from neuropc.analysis.plotting import plot_file

    names = [p.rsplit("/", 1)[-1] for p in plot_file(path, tmp_path / "plots")]
    assert names == ["energy.png", "h1_error.png"]
