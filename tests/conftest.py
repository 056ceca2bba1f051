"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def load_model(name: str):
    """Import ``models/NAME.py`` once per process, registered in ``sys.modules`` under its name
    (numba's disk cache finds jitted functions of a module by that name)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MODELS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def run_model_json(name: str, out: Path, *, cli: bool = False, extra: tuple[str, ...] = ()) -> dict:
    """Run ``models/NAME.py --quick --json`` as a script (or through ``neuropc run``) in a fresh
    process and return the JSON object printed on its last line."""
    script = str(MODELS / f"{name}.py")
    cmd = [sys.executable, "-m", "neuropc.cli", "run", script] if cli else [sys.executable, script]
    cmd += ["--quick", "--json", "--out", str(out), *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def quick_twice(name: str, out: Path) -> tuple[dict, dict, object]:
    """``models/NAME.py --quick`` in-process, capturing its one PC simulator, and as a script
    (both seed 0): ``(metrics, the script's metrics, the simulator)``."""
    from oracles import capture_simulators

    with capture_simulators() as sims:
        m = load_model(name).main(["--quick", "--out", str(out / "inproc")])
    assert len(sims) == 1
    return m, run_model_json(name, out / "script"), sims[0]


# ---- the backend under test: the same suite runs against every backend (Nengo-style) ----------
def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


BACKEND_PARAMS = [
    pytest.param({"backend": "numba", "device": None}, id="numba"),
    pytest.param({"backend": "torch", "device": "cpu"}, id="torch-cpu"),
    pytest.param(
        {"backend": "torch", "device": "cuda"},
        id="torch-cuda",
        marks=pytest.mark.skipif(not _cuda(), reason="no CUDA device"),
    ),
]


def _cxx() -> bool:
    """torch.compile on the CPU (inductor) builds C++: it needs a compiler."""
    import os
    import shutil

    return shutil.which(os.environ.get("CXX", "g++")) is not None


# the torch backend with its inference steps through torch.compile: compiling takes seconds per
# network structure, so only the conformance tests run it (tests/test_backend_conformance.py)
COMPILED_PARAMS = [
    pytest.param(
        {"backend": "torch", "device": "cpu", "compile": True},
        id="torch-cpu-compiled",
        marks=pytest.mark.skipif(not _cxx(), reason="no C++ compiler for torch.compile"),
    ),
    pytest.param(
        {"backend": "torch", "device": "cuda", "compile": True},
        id="torch-cuda-compiled",
        marks=pytest.mark.skipif(not _cuda(), reason="no CUDA device"),
    ),
    # CUDA graphs: chunk outputs chained into the next replay must not be overwritten
    pytest.param(
        {"backend": "torch", "device": "cuda", "compile": "reduce-overhead"},
        id="torch-cuda-graphs",
        marks=pytest.mark.skipif(not _cuda(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> dict:
    """Keyword arguments ``backend=..., device=...`` for :class:`neuropc.Simulator`."""
    return request.param
