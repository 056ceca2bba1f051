"""The command line: ``neuropc bench`` fields and ``neuropc run`` argument passing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import _cxx

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


def test_bench_rejects_bad_sizes() -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--sizes", "784"])


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
    import neuropc as npc

    path = tmp_path / "rec.h5"
    r = subprocess.run(
        [sys.executable, "-m", "neuropc.cli", "run", "models/digits_classifier.py", "--quick",
         "--out", str(tmp_path), "--record", str(path), "--record-preset", "settled"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"recorded to {path}" in r.stdout
    rec = npc.open(path)
    assert {"h1:value_settled", "h1:error_settled", "total:energy"} <= set(rec.names)
    n = len(rec.trials["trial_id"])
    assert n > 0 and rec["h1:value_settled"].shape[0] == n
    assert set(rec.trials["phase"]) == {"train", "test"}


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
    assert pngs and all(Path(p).stat().st_size > 0 for p in pngs)
    nwb, views = tmp_path / "r.nwb", tmp_path / "views"
    assert cli.main(["export", str(path), "--nwb", str(nwb), "--sonata", str(views)]) == 0
    assert nwb.stat().st_size > 0 and any(views.iterdir())
    (tmp_path / "bad.h5").write_bytes(b"junk" * 100)
    assert cli.main(["inspect", str(tmp_path / "bad.h5")]) == 1
    assert "not a readable HDF5 file" in capsys.readouterr().err
    assert cli.main(["export", str(path)]) == 2
