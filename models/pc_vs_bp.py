"""PC's local weight updates against backprop's gradients, through training (strict, FPA, Z-IL).

A ``784 -> 64 -> 64 -> 10`` tanh MLP on the embedded MNIST digits, in float64, is trained with
each inference mode (Adam 1e-3, batch 64). After every epoch, on a fixed probe batch, the local
gradient after t inference steps is compared with the feed-forward twin's autograd gradient
(:func:`neuropc.gradient_alignment`): cosine, relative error and norm ratio per connection, for
t = 0..T. Then, at the final weights, strict PC's error against the output nudging beta and the
output precision.

* strict: T = 20 steps at rate 0.1 (not equal to backprop);
* FPA: rate 1, T = 3 (the longest path from a hidden layer to the output is 2): exact;
* Z-IL: rate 1, T = 3, unit hidden precision: exact (Song et al. 2020).

Metrics: ``fpa_max_abs_err`` and ``zil_max_abs_err`` (largest |PC - BP| over all parameters at
the end, float64), ``strict_cosine`` (per connection at the final step), ``strict_slope_beta``
(log-log slope of strict PC's relative error against beta: about 1), per-mode test accuracy.
Writes ``alignment.json`` for ``analysis/pc_vs_bp.py``.
"""

from __future__ import annotations

import json
import time

import numpy as np

import neuropc as npc
from neuropc.runner import print_progress, report, run_main, script_args, wrote

MODES = {
    "strict": npc.Inference(steps=20, rate=0.1),
    "fpa": npc.Inference(mode="fpa", steps=3, rate=1.0),
    "zil": npc.Inference(mode="zil", steps=3, rate=1.0),
}


def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="pc_vs_bp")
    n_train, epochs, hidden = (512, 1, 16) if args.quick else (4000, 3, 64)
    x, y = npc.data.mnist("train")
    xt, yt = npc.data.mnist("test")
    data = {"input": x[:n_train], "output": npc.one_hot(y[:n_train])}
    probe = {"input": x[-64:], "output": npc.one_hot(y[-64:])}
    net = npc.mlp([784, hidden, hidden, 10], activation="tanh")

    curves: dict = {}
    metrics: dict = {}
    for mode, cfg in MODES.items():
        sim = npc.Simulator(
            net, backend=args.backend, dtype="float64", seed=args.seed, inference=cfg
        )
        args.recordings.attach(sim)  # --record PATH
        per_epoch = []
        for ep in range(epochs + 1):
            fitted = sim.fit(data, epochs=1, batch_size=64, progress=False).last if ep else {}
            al = npc.gradient_alignment(sim, probe, inference=cfg, weights_only=True)
            if ep:
                print_progress(f"{mode} epoch {ep}/{epochs}", {
                    "energy": fitted["energy"], "seconds": fitted["seconds"],
                    "mean_cosine": float(np.mean(al.cosine[-1])),
                })  # fmt: skip
            per_epoch.append({"epoch": ep, "steps": al.steps.tolist(), "names": al.names,
                              "cosine": al.cosine.tolist(), "rel_error": al.rel_error.tolist(),
                              "norm_ratio": al.norm_ratio.tolist()})  # fmt: skip
        curves[mode] = per_epoch
        final = npc.gradient_alignment(sim, probe, inference=cfg, steps=[cfg.steps])
        metrics[f"{mode}_test_accuracy"] = sim.accuracy({"input": xt}, yt)
        if mode == "strict":
            metrics["strict_cosine"] = {
                k: v["cosine"] for k, v in final.final().items() if "->" in k
            }
            t0 = time.perf_counter()
            sweep = _beta_sweep(sim, probe)
            curves["beta"] = sweep
            metrics["strict_slope_beta"] = sweep["slope"]
            curves["output_precision"] = _precision_sweep(sim, probe, args)
            print_progress("strict sweeps of beta and output precision", {
                "slope_beta": sweep["slope"], "seconds": time.perf_counter() - t0,
            })  # fmt: skip
        else:
            metrics[f"{mode}_max_abs_err"] = final.max_abs_error()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alignment.json").write_text(json.dumps(curves))
    wrote(args.out / "alignment.json")
    return report(metrics, args)


def _beta_sweep(sim: npc.Simulator, probe: dict) -> dict:
    """Strict PC at its equilibrium with the output nudged by beta: relative error against BP."""
    betas = [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    errs = []
    for beta in betas:
        cfg = npc.Inference(steps=4000, rate=0.1, tol=1e-12, nudge=beta)
        al = npc.gradient_alignment(sim, probe, inference=cfg, steps=[cfg.steps])
        errs.append(_total_rel_error(al))
    slope = float(np.polyfit(np.log(betas[-3:]), np.log(errs[-3:]), 1)[0])
    return {"beta": betas, "rel_error": errs, "slope": slope}


def _precision_sweep(sim: npc.Simulator, probe: dict, args) -> dict:
    """Strict PC (clamped output, 20 steps) against the output precision (hidden precision 1)."""
    precs = [3.0, 1.0, 0.3, 0.1, 0.03, 0.01]
    errs = []
    for p in precs:
        net = npc.mlp([784, *[sim.network[n].size for n in ("h1", "h2")], 10], activation="tanh",
                      output_precision=p)  # fmt: skip
        other = npc.Simulator(net, backend=args.backend, dtype="float64", seed=args.seed)
        args.recordings.attach(other)
        other.load_parameters(sim.parameters())
        cfg = npc.Inference(steps=200, rate=0.1)
        errs.append(
            _total_rel_error(npc.gradient_alignment(other, probe, inference=cfg, steps=[200]))
        )
    return {"output_precision": precs, "rel_error": errs}


def _total_rel_error(al) -> float:
    num = sum(float(np.sum((al.pc[k] - al.bp[k]) ** 2)) for k in al.names)
    den = sum(float(np.sum(al.bp[k] ** 2)) for k in al.names)
    return float(np.sqrt(num / den))


if __name__ == "__main__":
    run_main(main)
