"""A recording writer run in a child process by tests/test_recording.py (live reading, SIGKILL).

Usage: python tests/recording_writer.py PATH N_BATCHES SLEEP_S
It records full per-step traces of a small network in float64 with small chunks and prints
"started" once the file exists in SWMR mode.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import neuropc as npc


def make():
    net = npc.mlp([12, 10, 6], activation="tanh")
    sim = npc.Simulator(net, backend="numba", dtype="float64", seed=3,
                        inference=npc.Inference(steps=8, rate=0.1))  # fmt: skip
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 12))
    return sim, X


PROBES = [npc.Probe("h1", "error", dtype="float64")]


def main() -> None:
    path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sim, X = make()
    rec = sim.record(path, PROBES, chunk_bytes=1024)
    print("started", flush=True)
    for i in range(n):
        sim.infer({"input": X + 0.01 * i})
        time.sleep(pause)
    rec.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
