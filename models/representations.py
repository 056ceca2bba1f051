"""What value and error populations of a PC classifier represent: decoding and RSA of MNIST digits.

A supervised PC network ``784 -> h1 -> h2 -> 10`` (:func:`neuropc.mlp`, GELU hidden activation,
linear output of precision 0.1, as ``models/digits_classifier.py``) is trained on the embedded
MNIST digits (image clamped to ``input``, one-hot label to ``output``; 20 inference steps at rate
0.1 per minibatch of 64, then Adam, lr 1e-3). Then test-phase inference runs on held-out digits
with the label free, recorded at every step (``Probe(p, "value")`` and ``Probe(p, "error")`` for
``p`` in ``h1``, ``h2``, ``output``; trial column ``label``). This recorded inference starts from
zero (``Inference(init="zero")``, :data:`STEPS` = 50 steps at rate 0.1), so the state has to
settle: from the forward initialisation every test-phase error would be zero from the start.

Analyses (:mod:`neuropc.analysis.measures`, all read back from the recording):

* decoding: :func:`~neuropc.analysis.measures.decode_over_steps` of the digit label from each population's
  values and from its errors, at every step (5 stratified folds shuffled with ``--seed``, ridge
  1). Reported: accuracy at step 0 (the initial state), at the last step, and the mean over
  steps (``decoding``), and the whole curves (``decoding_curve``). Chance is 0.1.
* RSA: per population the condition-mean value pattern of each digit at the last (settled) step
  (:func:`~neuropc.analysis.measures.condition_patterns`), its correlation-distance RDM
  (:func:`~neuropc.analysis.measures.rdms_by_population`), and the Spearman correlation
  (:func:`~neuropc.analysis.measures.compare_rdms`) of every pair of RDMs and of each with the RDM of the
  digits' mean input pixels (``rdm_vs_input``, ``rdm_between``).

``test_accuracy`` is :meth:`Simulator.accuracy` (forward-initialised test inference);
``settled_accuracy`` the argmax of the recorded output values at the last step.

Measured, seed 0 (numba, 2 cores). Quick (784-64-64-10, 1 epoch on 2,000 digits, 300 test
digits; about 2 s): test accuracy 0.79, settled 0.76. At step 0 every value population is 0
(decoding at 0.12, the majority class) and so are the errors above h1, while h1's error,
``-mu_h1 = -(W x + b)``, already decodes at 0.75; each population's information then arrives
one step later per level (errors one step before values). At the last step: h1 value / error
0.76 / 0.74, h2 0.77 / 0.76, output 0.81 / 0.81. RDM vs input pixels (Spearman): h1 0.93, h2
0.87, output 0.57. Full (784-256-256-10, 5 epochs on 8,000, 1,000 test digits; about 11 s):
test accuracy 0.949, settled 0.944; last step value / error: h1 0.81 / 0.93 (h1's value decoding
peaks at 0.86 around step 12, then falls as the state settles), h2 0.945 / 0.95, output
0.947 / 0.953; RDM vs input 0.86 / 0.86 / 0.76 (h1 / h2 / output), h1~h2 0.90.
Writes ``representations.h5`` (the recording) and ``representations.json``
to ``--out``; ``analysis/representations.py`` draws the figures.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.runner import epoch_printer, report, run_main, script_args, wrote

STEPS = 50
POPULATIONS = ("h1", "h2", "output")
VARIABLES = ("value", "error")
FOLDS = 5


@dataclass(frozen=True)
class Config:
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 5
    batch_size: int = 64
    n_train: int = 8000
    n_test: int = 1000


FULL = Config()
QUICK = Config(hidden=(64, 64), epochs=1, n_train=2000, n_test=300)


def test_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` held-out digits (images, labels) of the embedded MNIST subset."""
    x, y = npc.data.mnist("test")
    return x[:n], y[:n]


def analyse(path, seed: int, pixels: np.ndarray) -> dict:
    """Decoding over steps and RSA of the recording at ``path`` (see the module docstring);
    ``pixels`` are the recorded trials' input images, in trial order."""
    A = npc.analysis
    dec, curves, patterns = {}, {}, {}
    with npc.open(path) as rec:
        labels = rec.trials["label"].astype(str)
        for pop in POPULATIONS:
            dec[pop], curves[pop] = {}, {}
            for var in VARIABLES:
                acc = A.decode_over_steps(rec[f"{pop}:{var}"].values, labels, folds=FOLDS,
                                          seed=seed)  # fmt: skip
                curves[pop][var] = acc.tolist()
                dec[pop][var] = {"step0": float(acc[0]), "last": float(acc[-1]),
                                 "mean": float(acc.mean())}  # fmt: skip
            conds, patterns[pop] = A.condition_patterns(rec[f"{pop}:value"].values[:, -1], labels)
        settled = float(np.mean(rec["output:value"].values[:, -1].argmax(axis=1).astype(str)
                                == labels))  # fmt: skip
    _, patterns["input"] = A.condition_patterns(pixels, labels)
    rdms = A.rdms_by_population(patterns, method="correlation")
    vs_input = {p: A.compare_rdms(rdms[p], rdms["input"]) for p in POPULATIONS}
    between = {f"{a}~{b}": A.compare_rdms(rdms[a], rdms[b])
               for a, b in itertools.combinations(POPULATIONS, 2)}  # fmt: skip
    return {"decoding": dec, "decoding_curve": curves, "conditions": [str(c) for c in conds],
            "rdms": {k: v.tolist() for k, v in rdms.items()}, "rdm_vs_input": vs_input,
            "rdm_between": between, "settled_accuracy": settled}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Train, record test-phase inference on held-out digits, analyse the recording."""
    args = script_args(__doc__.splitlines()[0], argv, name="representations")
    record_to = args.recordings.next_path()  # --record PATH: this script's own recording
    cfg = QUICK if args.quick else FULL
    x, y = npc.data.mnist("train")
    x, y = x[: cfg.n_train], y[: cfg.n_train]
    x_test, y_test = test_digits(cfg.n_test)

    net = npc.mlp([784, *cfg.hidden, 10], activation="gelu", output_precision=0.1)
    sim = npc.Simulator(net, backend=args.backend, seed=args.seed,
                        inference=npc.Inference(steps=20, rate=0.1),
                        optimizer=npc.Adam(lr=1e-3))  # fmt: skip
    t0 = time.perf_counter()
    sim.fit({"input": x, "output": npc.one_hot(y)}, epochs=cfg.epochs,
            batch_size=cfg.batch_size, progress=False,
            callback=epoch_printer(cfg.epochs))  # fmt: skip
    train_seconds = time.perf_counter() - t0
    test_accuracy = sim.accuracy({"input": x_test}, y_test)

    args.out.mkdir(parents=True, exist_ok=True)
    path = Path(record_to or args.out / "representations.h5")
    probes = [npc.Probe(p, v) for p in POPULATIONS for v in VARIABLES]
    meta = {"seed": args.seed, "steps": STEPS, "n_test": cfg.n_test, "folds": FOLDS,
            "populations": list(POPULATIONS), "config": asdict(cfg)}  # fmt: skip
    t0 = time.perf_counter()
    with sim.record(path, probes, trial_columns=("label",), metadata=meta):
        sim.infer({"input": x_test}, inference=npc.Inference(steps=STEPS, rate=0.1, init="zero"),
                  trials={"label": y_test})  # fmt: skip
    record_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = analyse(path, args.seed, x_test)
    analysis_seconds = time.perf_counter() - t0

    metrics = {
        "test_accuracy": test_accuracy,
        "settled_accuracy": s["settled_accuracy"],
        "decoding": s["decoding"],
        "decoding_curve": s["decoding_curve"],
        "rdm_vs_input": s["rdm_vs_input"],
        "rdm_between": s["rdm_between"],
        "steps": STEPS,
        "hidden": list(cfg.hidden),
        "epochs": cfg.epochs,
        "n_train": len(x),
        "n_test": len(x_test),
        "train_seconds": train_seconds,
        "record_seconds": record_seconds,
        "analysis_seconds": analysis_seconds,
        "recording": str(path),
        "backend": args.backend,
        "quick": args.quick,
    }
    (args.out / "representations.json").write_text(json.dumps({"metrics": metrics, "summary": s}))
    for written in (path, args.out / "representations.json"):
        wrote(written)
    for pop in POPULATIONS:
        d = s["decoding"][pop]
        print(f"{pop:<7} decoding value {d['value']['step0']:.3f} -> {d['value']['last']:.3f}"
              f"  error {d['error']['step0']:.3f} -> {d['error']['last']:.3f}"
              f"  RDM vs input {s['rdm_vs_input'][pop]:.3f}")  # fmt: skip
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
