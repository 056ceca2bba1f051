"""A first run that explains itself: the numba compile notice (only when numba will compile),
per-epoch progress lines, absolute paths of written files, and no progress bars in logs."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, ROOT, load_model

import neuropc as npc
from neuropc import runner
from neuropc.backends import compile_notice

# builds two float64 numba simulators (no run): the notice must come at most once
BUILD = (
    "import neuropc as npc\nfor _ in range(2): npc.Simulator(npc.mlp([4, 3, 2]), dtype='float64')\n"
)


def _build_with_cache(cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-c", BUILD], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip


@pytest.fixture(scope="module")
def warm_cache() -> tuple[Path, list[Path], str]:
    """This process's on-disk cache of the numba entry kernel, with the float64 kernels in it
    (compiled or loaded by a run here): its index file, its data files, and the folder
    ``$NUMBA_CACHE_DIR/<subpath>`` numba uses for the module under a user-provided cache dir."""
    from numba.core.caching import _CacheLocator

    from neuropc.backends import _numba_kernels as K

    sim = npc.Simulator(npc.mlp([4, 3, 2]), dtype="float64")
    sim.infer({"input": np.ones((2, 4))})
    assert compile_notice.kernels_cached("float64")  # compiled in this process
    cache_file = K.infer._cache._cache_file
    index = Path(cache_file._index_path)
    data = [index.parent / name for name in cache_file._load_index().values()]
    assert index.is_file() and data and all(p.is_file() for p in data)
    return index, data, _CacheLocator.get_suitable_cache_subpath(K.__file__)


def test_compile_notice_on_a_cold_cache(tmp_path: Path) -> None:
    r = _build_with_cache(tmp_path)
    assert r.stderr.splitlines().count(compile_notice.MESSAGE) == 1, r.stderr


def test_no_compile_notice_with_a_warm_cache(warm_cache, tmp_path: Path) -> None:
    index, data, subpath = warm_cache
    dest = tmp_path / subpath
    dest.mkdir(parents=True)
    for f in (index, *data):
        shutil.copy2(f, dest / f.name)
    r = _build_with_cache(tmp_path)
    assert compile_notice.MESSAGE not in r.stderr, r.stderr


def test_compile_notice_when_the_cache_is_stale(warm_cache, tmp_path: Path) -> None:
    """An index written for another version of the source (numba stores a hash of the file):
    numba will recompile, so the notice shows."""
    index, data, subpath = warm_cache
    dest = tmp_path / subpath
    dest.mkdir(parents=True)
    with open(index, "rb") as f:
        version = pickle.load(f)
        _, overloads = pickle.loads(f.read())
    with open(dest / index.name, "wb") as f:
        pickle.dump(version, f, protocol=-1)
        f.write(pickle.dumps((b"another source", overloads), protocol=-1))
    for f in data:
        shutil.copy2(f, dest / f.name)
    r = _build_with_cache(tmp_path)
    assert r.stderr.splitlines().count(compile_notice.MESSAGE) == 1, r.stderr


def test_epoch_lines(capsys: pytest.CaptureFixture[str]) -> None:
    sim = npc.Simulator(npc.mlp([6, 5, 3]), dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    data = {"input": rng.normal(size=(20, 6)), "output": np.eye(3)[rng.integers(0, 3, 20)]}
    hist = sim.fit(data, epochs=2, batch_size=8, progress=False,
                   callback=runner.epoch_printer(2, "PC"))  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for i, (line, rec) in enumerate(zip(lines, hist.epochs), 1):
        m = re.fullmatch(rf"PC epoch {i}/2  energy=(\S+)  seconds=(\S+)", line)
        assert m and float(m[1]) == pytest.approx(rec["energy"], rel=1e-3), line


def test_script_prints_progress_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``models/oddball.py --quick`` with a relative ``--out``: a line per stage, and the files
    it wrote named by their absolute paths."""
    monkeypatch.chdir(tmp_path)
    load_model("oddball").main(["--quick", "--out", "rel"])
    out = capsys.readouterr().out
    assert re.search(r"^subject 1/1 pre-exposure  trials=600  seconds=\S+$", out, re.M)
    assert re.search(r"^subject 1/1 recorded blocks  trials=800  seconds=\S+$", out, re.M)
    for name in ("oddball.h5", "oddball.json"):
        assert f"wrote {tmp_path / 'rel' / name}\n" in out


def test_save_png_returns_the_absolute_path(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neuropc.analysis.plotting import save_png

    monkeypatch.chdir(tmp_path)
    path = save_png(plt.subplots()[0], "f.png")
    assert path == tmp_path / "f.png" and path.is_absolute() and path.stat().st_size > 0


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert runner.progress_bars() is False
    monkeypatch.setattr(sys, "stderr", Tty())
    assert runner.progress_bars() is True


@pytest.mark.parametrize("folder", ["models", "analysis"])
def test_every_script_reports_user_errors_in_one_line(folder: str) -> None:
    """Every script's entry point goes through ``runner.run_main`` (the one-line rule)."""
    scripts = sorted((MODELS.parent / folder).glob("*.py"))
    assert scripts
    for script in scripts:
        tail = script.read_text().rstrip().splitlines()[-2:]
        assert tail == ['if __name__ == "__main__":', "    run_main(main)"], script.name
