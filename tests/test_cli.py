"""The command line: ``neuropc bench`` fields and ratios, ``neuropc run`` argument passing, and
every user error as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, _cuda, _cxx

from neuropc import cli


def test_bench_json_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        ["bench", "--sizes", "20,16,16,4", "--batch", "8", "--steps", "3", "--timed", "5", "--json"]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "ms_per_batch",
        "gflops_effective",
        "blas_gflops",
        "efficiency",
        "bp_ms_per_batch",
        "handwritten_pc_ms_per_batch",
        "pc_over_handwritten",
        "round_over_mkl_ceiling",
        "compile_s",
    ):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["compile"] is False
    # FLOP accounting (Plan.matmul_flops): the clamped input's connection costs one prediction and
    # one weight gradient; each other connection 1 + (t + 1) predictions, t back-projections and
    # one weight gradient (2 FLOPs per multiply-add)
    b, t = 8, 3
    expected = 2 * (b * 20 * 16 * 2 + b * (16 * 16 + 16 * 4) * (2 * t + 3))
    assert res["mflop_per_batch"] * 1e6 == pytest.approx(expected)
    assert res["efficiency"] == pytest.approx(res["blas_ms_per_batch"] / res["ms_per_batch"])
    assert res["over_mkl_ceiling"] == pytest.approx(res["ms_per_batch"] / res["mkl_ceiling_ms"])
    assert res["mkl_gflops"] * res["mkl_ceiling_ms"] == pytest.approx(
        res["blas_gflops"] * res["blas_ms_per_batch"]
    )  # the same FLOPs, two ceilings


def test_bench_profile_splits_the_batch(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["bench", "--sizes", "20,16,4", "--batch", "8", "--steps", "3", "--timed", "5",
                   "--no-bp", "--profile", "--with-torch-load", "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    parts = [res[f"profile_{k}_ms"] for k in ("gemm", "elementwise", "optimizer", "python")]
    assert all(p >= 0 for p in parts) and res["profile_gemm_ms"] > 0
    # elementwise is the remainder: the parts add up to the total unless it was floored at 0
    assert sum(parts) == pytest.approx(res["profile_total_ms"]) or parts[1] == 0.0
    assert res["torch_load_ms_per_batch"] > 0 and res["over_without_torch"] > 0


def test_bench_transformer_reports_the_ratio_to_backprop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = cli.main(["bench", "--model", "transformer", "--vocab", "11", "--seq", "6", "--batch", "4",
                   "--steps", "2", "--timed", "3", "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["model"] == "transformer" and (res["vocab"], res["seq"], res["batch"]) == (11, 6, 4)
    for key in ("ms_per_batch", "bp_ms_per_batch", "pc_over_bp", "samples_per_s"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["samples_per_s"] == pytest.approx(4 / (res["ms_per_batch"] * 1e-3))


def test_handwritten_reference_is_the_same_pc_step() -> None:
    """The benchmark's hand-written torch PC step (``bench.torch_pc_step``), an independent
    implementation, trains to the same parameters as the simulator (float64, Adam)."""
    import numpy as np
    import torch

    import neuropc as npc
    from neuropc import bench

    sizes, batch, steps, rate = [7, 6, 5, 3], 9, 6, 0.2
    sim = npc.Simulator(
        npc.mlp(sizes, activation="tanh"), dtype="float64", seed=4,
        inference=npc.Inference(steps=steps, rate=rate), optimizer=npc.Adam(1e-2),
    )  # fmt: skip
    layers, _, _, _ = bench._torch_mlp(sizes, batch, "float64", "cpu")
    names = ["input", "h1", "h2", "output"]
    with torch.no_grad():
        for lay, a, b in zip(layers, names[:-1], names[1:]):
            lay.weight.copy_(torch.from_numpy(sim.get_weights(f"{a}->{b}")))
            lay.bias.copy_(torch.from_numpy(sim.get_bias(b)))
    opt = torch.optim.Adam([p for lay in layers for p in lay.parameters()], lr=1e-2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    step = bench.torch_pc_step(layers, opt, torch.from_numpy(x), torch.from_numpy(y), "tanh",
                               steps, rate)  # fmt: skip
    for _ in range(3):
        sim.learn({"input": x, "output": y})
        step()
    for lay, a, b in zip(layers, names[:-1], names[1:]):
        w = lay.weight.detach().numpy()
        assert np.max(np.abs(w - sim.get_weights(f"{a}->{b}"))) <= 1e-10
        assert np.max(np.abs(lay.bias.detach().numpy() - sim.get_bias(b))) <= 1e-10


@pytest.mark.skipif(not _cxx(), reason="no C++ compiler for torch.compile")
def test_bench_torch_compile_flag(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["bench", "--sizes", "12,8,4", "--batch", "4", "--steps", "2", "--timed", "3",
                   "--backend", "torch", "--compile", "--no-bp", "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["backend"] == "torch" and res["compile"] is True and res["ms_per_batch"] > 0


def test_bench_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--sizes", "784"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("neuropc bench: argument --sizes:")


def test_run_passes_options_to_the_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "echo_model.py"
    script.write_text(textwrap.dedent(
        """
        from neuropc.runner import report, script_args
        args = script_args("echo")
        report({"backend": args.backend, "seed": args.seed, "quick": args.quick, "out": str(args.out)}, args)
        """
    ))  # fmt: skip
    rc = cli.main(
        ["run", str(script), "--seed", "7", "--quick", "--json", "--out", str(tmp_path / "o")]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res == {"backend": "numba", "seed": 7, "quick": True, "out": str(tmp_path / "o")}


def test_run_missing_script_is_an_error(tmp_path: Path) -> None:
    assert cli.main(["run", str(tmp_path / "nope.py")]) == 2


def test_console_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "neuropc.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "bench" in out.stdout and "run" in out.stdout


@pytest.mark.parametrize("preset", ["settled", "steps"])
def test_bench_record_fields(capsys: pytest.CaptureFixture[str], preset: str) -> None:
    rc = cli.main(["bench", "--sizes", "20,16,4", "--batch", "8", "--steps", "3", "--timed", "4",
                   "--no-bp", "--record", preset, "--json"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["record"] == preset and res["record_overhead"] > 0 and res["record_mb_per_s"] > 0
    # bytes per batch: float32 rows of h1 and output values and errors, plus the per-step
    # energies (T + 1 = 4 rows) of h1, output and the total
    rows = 8 * (4 if preset == "steps" else 1)
    energy = 3 * 4 * 4
    assert res["record_mb_per_batch"] * 1e6 == pytest.approx(rows * (16 + 4) * 2 * 4 + energy)


def test_run_record_writes_a_readable_file(tmp_path: Path) -> None:
    """``neuropc run models/pc_vs_bp.py --record PATH``: its nine simulators (strict PC, the six
    of its precision sweep, FPA, ZIL) record to PATH, PATH-2 ... PATH-9, in the order the script
    builds them."""
    import neuropc as npc

    path = tmp_path / "rec.h5"
    r = subprocess.run(
        [sys.executable, "-m", "neuropc.cli", "run", "models/pc_vs_bp.py", "--quick",
         "--out", str(tmp_path), "--record", str(path), "--record-preset", "settled"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    paths = [path, *(tmp_path / f"rec-{n}.h5" for n in range(2, 10))]
    assert [ln.strip() for ln in r.stdout.splitlines() if "recorded to" in ln] == [
        f"recorded to {p}" for p in paths
    ]
    assert "warning" not in r.stderr
    with npc.open(path) as rec:
        assert {"h1:value_settled", "h1:error_settled", "total:energy"} <= set(rec.names)
        n = len(rec.trials["trial_id"])
        assert n > 0 and rec["h1:value_settled"].shape[0] == n
        assert set(rec.trials["phase"]) == {"train", "test"}
        assert rec.config["inference"]["steps"] == 20  # the strict simulator
    with npc.open(paths[-1]) as rec:
        assert rec.config["inference"]["mode"] == "zil"


# ---- --record: explicit recordings owned by the script's args ----------------------------------
TWO_SIMS = textwrap.dedent(
    """
    import numpy as np
    import neuropc as npc
    from neuropc.runner import report, run_main, script_args

    def main():
        args = script_args("two simulators")
        sims = [npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64", seed=s) for s in range(3)]
        for sim in sims[:2]:
            args.recordings.attach(sim)
        for sim in sims:  # the third is not handed over: not recorded
            sim.infer({"input": np.ones((2, 4))})
        report({"n": len(sims)}, args)

    run_main(main)
    """
)


@pytest.mark.parametrize("how", ["script", "neuropc run"])
def test_record_attaches_each_simulator_the_script_hands_over(tmp_path: Path, how: str) -> None:
    import neuropc as npc

    script = tmp_path / "two.py"
    script.write_text(TWO_SIMS)
    path = tmp_path / "r.h5"
    opts = ["--out", str(tmp_path / "out"), "--record", str(path), "--record-preset", "energy"]
    cmd = [sys.executable, str(script)] if how == "script" else [*NPC, "run", str(script)]
    r = subprocess.run([*cmd, *opts], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["r-2.h5", "r.h5"]
    assert f"recorded to {path}" in r.stdout and f"recorded to {tmp_path / 'r-2.h5'}" in r.stdout
    for p, seed in ((path, 0), (tmp_path / "r-2.h5", 1)):
        with npc.open(p) as rec:
            assert rec.attrs["seed"] == seed and rec.names == ["h1:energy", "output:energy",
                                                                "total:energy"]  # fmt: skip
            assert rec.progress == {"batches": 1, "trials": 2}


def test_script_recordings_are_explicit_state(tmp_path: Path, capsys) -> None:
    """``--record`` arms nothing process-wide: only simulators handed to ``attach`` record, a
    simulator that already records keeps its recording, and ``report`` closes what it attached."""
    import numpy as np

    import neuropc as npc
    from neuropc.record import recording
    from neuropc.runner import ScriptRecordings, report, script_args

    x = {"input": np.ones((2, 4))}
    args = script_args("t", ["--out", str(tmp_path / "o"), "--record", str(tmp_path / "a.h5")])
    assert isinstance(args.recordings, ScriptRecordings) and args.recordings
    loose = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    loose.infer(x)
    assert loose.recorder is None  # nothing attached behind its back
    assert not hasattr(recording, "_AUTO")  # no module-level switch left
    own = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    mine = own.record(None)
    assert args.recordings.attach(own) is None and own.recorder is mine  # kept
    sim = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    rec = args.recordings.attach(sim)
    assert rec is sim.recorder and rec.path == str(tmp_path / "a.h5")
    assert args.recordings.next_path() == str(tmp_path / "a-2.h5")  # a script's own recording
    sim.infer(x)
    report({}, args)
    assert rec.closed and sim.recorder is None and args.recordings.open == []
    assert f"recorded to {tmp_path / 'a.h5'}" in capsys.readouterr().out
    mine.close()

    plain = script_args("t", ["--out", str(tmp_path / "o")])
    assert not plain.recordings and plain.recordings.next_path() is None
    assert plain.recordings.attach(sim) is None and sim.recorder is None


def test_record_into_a_folder_that_does_not_exist_yet(tmp_path: Path) -> None:
    """``--record new/dir/run.h5`` passes the option check (the folder can be created), so the
    recording creates the folder rather than failing when the first simulator is attached."""
    import neuropc as npc
    from neuropc.runner import script_args

    path = tmp_path / "new" / "dir" / "run.h5"
    args = script_args("t", ["--out", str(tmp_path / "o"), "--record", str(path)])
    rec = args.recordings.attach(npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64"))
    assert rec is not None and rec.path == str(path)
    args.recordings.close()
    assert path.is_file()


def test_record_that_the_script_never_attaches_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neuropc.runner import report, script_args

    args = script_args("t", ["--out", str(tmp_path / "o"), "--record", str(tmp_path / "a.h5")])
    report({}, args)
    err = capsys.readouterr().err
    assert "--record" in err and "nothing was recorded" in err
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("name", [p.stem for p in sorted((ROOT / "models").glob("*.py"))])
def test_every_model_script_honours_record(name: str) -> None:
    """Each model script hands its simulators to ``args.recordings`` (or takes its path for a
    recording of its own); without that, ``--record`` would record nothing (a warning)."""
    source = (ROOT / "models" / f"{name}.py").read_text(encoding="utf-8")
    if "script_args(" in source:
        assert "args.recordings" in source, f"models/{name}.py ignores --record"


def test_inspect_plot_export_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    import neuropc as npc

    sim = npc.Simulator(npc.mlp([6, 5, 3], activation="tanh"), dtype="float64", seed=0)
    path = tmp_path / "r.h5"
    with sim.record(path, [npc.Probe("h1", "error")], trial_columns=("condition",)):
        sim.infer({"input": np.ones((4, 6))}, trials={"condition": ["a", "b", "a", "b"]})
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "h1:error" in out and "condition" in out
    assert cli.main(["plot", str(path), "--out", str(tmp_path / "plots")]) == 0
    pngs = capsys.readouterr().out.split()
    assert pngs and all(Path(p).is_absolute() and Path(p).stat().st_size > 0 for p in pngs)
    nwb, views = tmp_path / "r.nwb", tmp_path / "views"
    assert cli.main(["export", str(path), "--nwb", str(nwb), "--sonata", str(views)]) == 0
    assert nwb.stat().st_size > 0 and any(views.iterdir())
    (tmp_path / "bad.h5").write_bytes(b"junk" * 100)
    assert cli.main(["inspect", str(tmp_path / "bad.h5")]) == 2
    err = capsys.readouterr().err
    assert "not a readable HDF5 file" in err and err.count("\n") == 1
    assert cli.main(["export", str(path)]) == 2


def test_bench_ratios_are_medians_of_the_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``references`` with a scripted clock: each timed step takes a known time, so the reported
    medians and ratios have exact values (``pc_over_bp`` is the median of the per-round ratios,
    reported beside the medians of both timings over the same rounds)."""
    from neuropc import bench

    # per round: simulator, backprop, hand-written (ms)
    rounds = [(2.0, 1.0, 4.0), (4.0, 1.0, 2.0), (6.0, 3.0, 3.0)]
    ticks, now = [], 0.0
    for row in rounds:
        for ms in row:
            ticks += [now, now + ms / 1000]
            now += 1.0
    clock = iter(ticks)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    res = bench.references(lambda: None, [6, 5, 3], "tanh", 4, 2, 0.1, "float32", "cpu", 3)
    assert res["round_ms_per_batch"] == pytest.approx(4.0)
    assert res["bp_ms_per_batch"] == pytest.approx(1.0)
    assert res["handwritten_pc_ms_per_batch"] == pytest.approx(3.0)
    assert res["pc_over_bp"] == pytest.approx(2.0)  # median of 2, 4, 2
    assert res["pc_over_handwritten"] == pytest.approx(2.0)  # median of 0.5, 2, 2
    # (the other two notes belong to run's record overhead and MKL-ceiling rounds)
    assert set(bench.NOTES) <= {*res, "record_overhead", "round_over_mkl_ceiling"}


def test_bench_text_labels_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["bench", "--sizes", "12,8,4", "--batch", "4", "--steps", "2", "--timed", "3"])
    assert rc == 0
    lines = {ln.split(":")[0].strip(): ln for ln in capsys.readouterr().out.splitlines()}
    assert "round_ms_per_batch" in lines and "bp_ms_per_batch" in lines
    assert "median over rounds of round_ms_per_batch / bp_ms" in lines["pc_over_bp"]
    assert "median over rounds" in lines["pc_over_handwritten"]


# ---- user errors: one line on stderr, exit status 2 ---------------------------------------------
ECHO = textwrap.dedent(
    """
    from neuropc.runner import report, run_main, script_args

    def main():
        args = script_args("echo")
        report({"seed": args.seed}, args)

    run_main(main)
    """
)
SETTING = "import neuropc as npc\nnpc.Inference(steps=-1)\n"  # neuropc rejects a bad setting
BUG = "x = {}\nx['missing']\n"  # a genuine bug (KeyError): keeps its traceback


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the malformed commands point at."""
    paths = {k: tmp_path / f for k, f in (("echo", "echo.py"), ("setting", "setting.py"),
             ("bug", "bug.py"), ("a_file", "a_file"), ("junk", "junk.h5"), ("a_dir", "a_dir"),
             ("missing", "nope.h5"))}  # fmt: skip
    paths["echo"].write_text(ECHO)
    paths["setting"].write_text(SETTING)
    paths["bug"].write_text(BUG)
    paths["a_file"].write_text("not a directory")
    paths["junk"].write_bytes(b"junk" * 100)
    paths["a_dir"].mkdir()
    return {k: str(v) for k, v in paths.items()}


NPC = [sys.executable, "-m", "neuropc.cli"]
BOGACZ = str(ROOT / "models" / "bogacz_tutorial.py")
USER_ERRORS = [  # (command, what the line must name); {name} is a path from the ``files`` fixture
    (["bench", "--batch", "0"], "--batch"),
    (["bench", "--batch", "abc"], "--batch"),
    (["bench", "--steps", "-1"], "--steps"),
    (["bench", "--backend", "nope"], "--backend"),
    (["bench", "--dtype", "float16"], "--dtype"),
    (["bench", "--sizes", "5"], "--sizes"),
    (["bench", "--timed", "0"], "--timed"),
    (["bench", "--device", "cuda"], "cuda"),  # the numba backend runs on the CPU
    pytest.param(
        ["bench", "--backend", "torch", "--device", "cuda"],
        "cuda",
        marks=pytest.mark.skipif(_cuda(), reason="CUDA is available"),
    ),
    ([], "cmd"),
    (["run", "{echo}", "--seed", "x"], "--seed"),
    (["run", "{echo}", "--bogus"], "--bogus"),  # the script's own options
    (["run", "{echo}", "--out", "{a_file}"], "{a_file}"),
    (["run", "{echo}", "--out", "{a_file}/sub"], "{a_file}"),
    (["run", "{echo}", "--record", "{a_dir}"], "{a_dir}"),
    (["run", "{setting}"], "Inference.steps"),
    (["run", "{missing}"], "{missing}"),
    (["run", "{a_dir}"], "{a_dir}"),
    (["inspect", "{missing}"], "{missing}"),
    (["inspect", "{a_dir}"], "{a_dir}"),
    (["inspect", "{junk}"], "{junk}"),
    (["inspect", "{junk}", "--bogus"], "--bogus"),
    (["plot", "{missing}"], "{missing}"),
    (["plot", "{junk}", "--out", "{a_file}"], "{a_file}"),
    (["export", "{junk}", "--nwb", "{a_dir}"], "{a_dir}"),
    ([BOGACZ, "--backend", "nope"], "--backend"),  # a model script run directly
    ([BOGACZ, "--seed", "x"], "--seed"),
]


@pytest.mark.parametrize(
    ("command", "names"),
    USER_ERRORS,
    ids=lambda v: (
        " ".join(Path(a).name if "/" in a else a for a in v) if isinstance(v, list) else ""
    ),
)
def test_a_user_error_is_one_line(command: list[str], names: str, files: dict[str, str]) -> None:
    """In a subprocess: exit status 2, exactly one non-empty line on stderr, no traceback, and
    the line names the bad option or path."""
    argv = [a.format(**files) for a in command]
    cmd = [sys.executable, *argv] if argv and argv[0].endswith(".py") else [*NPC, *argv]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].strip(), r.stderr
    assert "Traceback" not in r.stderr
    assert names.format(**files) in lines[0], lines[0]


def test_a_bug_keeps_its_traceback(files: dict[str, str]) -> None:
    r = subprocess.run([*NPC, "run", files["bug"]], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert r.returncode == 1 and "Traceback" in r.stderr and "KeyError" in r.stderr


def test_exit_status_rules(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from neuropc.runner import exit_status, one_line

    def bad() -> None:
        raise ValueError("rate must be >= 0;\n  got -1")

    assert exit_status("neuropc x", bad) == 2
    assert capsys.readouterr().err == "neuropc x: rate must be >= 0; got -1\n"
    assert exit_status("p", lambda: 3) == 3 and exit_status("p", lambda: {"a": 1}) == 0
    with pytest.raises(ZeroDivisionError):
        exit_status("p", lambda: 1 / 0)
    monkeypatch.setenv("NEUROPC_TRACEBACK", "1")
    with pytest.raises(ValueError):
        exit_status("p", bad)
    err = FileNotFoundError(2, "No such file or directory", "/x/y")
    assert one_line(err) == "No such file or directory: /x/y"


def test_scaling_script_runs_and_fits_power_laws(tmp_path) -> None:
    import importlib.util

    path = ROOT / "benchmarks" / "scaling.py"
    spec = importlib.util.spec_from_file_location("scaling", path)
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    # the fit recovers exact power laws (closed form)
    xs = [1.0, 2.0, 4.0, 8.0]
    assert scaling._slope(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5)
    out = tmp_path / "s.json"
    res = subprocess.run([sys.executable, str(path), "--quick", "--repeats", "1", "--timed", "3",
                          "--json-out", str(out)], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 and "ms_vs_flops" in data["fits"]
    for r in data["rows"]:
        assert r["peak_rss_mb"] > 0 and r["mkl_ceiling_ms"] > 0
