"""Noise robustness of precision-weighted PC and natural gradients (Ofner et al. 2021).

The claims under test: hierarchical PC with learned precision beats plain gradient-descent PC
when heavy noise is embedded in the inputs or the labels, and performs like backprop with
natural gradients. Every arm trains the same classifier ``784 -> hidden (tanh) -> 10`` (linear
Gaussian output, unit precision unless learned) with the same epochs, batches and initial
weights, on the same corrupted training set, and is scored on the test set:

* settings: ``label0/20/40/60`` (symmetric label noise: with probability p a training label is
  replaced by one of the other 9 classes, uniformly; test labels clean), ``gauss05`` /
  ``gauss10`` (Gaussian pixel noise of sd 0.5 / 1.0 added to every image, training and test),
  ``hetero`` (a fixed random half of the pixels gets noise of sd 2.0, the other half none,
  training and test);
* arms: ``bp_sgd``, ``bp_adam``, ``bp_ngd`` (the backprop twin with K-FAC,
  ``npc.NaturalGradient(c_out="empirical")``), ``pc_sgd``, ``pc_adam``, ``pc_precision_<kind>``
  (learned precision on the hidden and output populations, EMA rule, decay 0.05, damping
  searched in 0.2/0.5/1 so that Pi <= 1 / damping, trained with SGD: Adam would normalise the
  precision's scaling of the gradients away) for kind scalar / diag / full, each also with ``_fast`` (re-estimated at every
  inference step), and ``pc_ngd`` (learned diagonal precision with damping 0.5,
  ``npc.NaturalGradient`` with ``c_out="precision"``). PC runs 20 strict inference steps (rate 0.1) per batch. Full
  precisions run on the torch backend, the other PC arms on ``--backend``.
* learning rates: each arm's from a grid (SGD 0.01/0.03/0.1, Adam 3e-4/1e-3/3e-3, SGD with a
  learned precision 0.003/0.01/0.03 with each damping, NGD 0.001/0.003/0.01/0.03/0.1), the one with the best accuracy on a validation split (the last
  ``n_val`` training images, corrupted like the rest: labels there are noisy too), never on the
  test set. The default run selects once per arm on the clean setting; ``--full`` per arm and
  setting. ``--quick`` uses the middle of each grid (no search).

Data: Fashion-MNIST (the complete 60k / 10k set of the Debian package
``dataset-fashion-mnist``) when installed, else the embedded MNIST subset (8k / 2k); the JSON's
``data`` says which. Metrics: ``acc_<setting>_<arm>`` (mean test accuracy over seeds),
``sd_<setting>_<arm>``, ``lr_<arm>`` and ``damping_<arm>`` (``--full``: ``lr_<setting>_<arm>``
...), ``seconds``. The table goes to
``--out/precision_noise.md`` (and docs/precision.md quotes it), the figure (accuracy against
noise level per arm) to ``--out/precision_noise.png``. ``--record PATH`` records the learned
precisions and energies of the first seed's ``pc_precision_diag`` training in every setting
(``PATH``, then ``PATH-2`` ... in the order of the settings above) for ``analysis/precision.py``. Measured numbers and conclusions:
docs/precision.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import numpy as np

import neuropc as npc
from neuropc.reference.backprop import BackpropModel
from neuropc.runner import report, run_main, script_args, torch_threads, wrote

SETTINGS = {
    "label0": ("label", 0.0), "label20": ("label", 0.2), "label40": ("label", 0.4),
    "label60": ("label", 0.6), "gauss05": ("gauss", 0.5), "gauss10": ("gauss", 1.0),
    "hetero": ("hetero", 2.0),
}  # fmt: skip
KINDS = ("scalar", "diag", "full")
ARMS = (
    "bp_sgd", "bp_adam", "bp_ngd", "pc_sgd", "pc_adam",
    *(f"pc_precision_{k}{s}" for s in ("", "_fast") for k in KINDS), "pc_ngd",
)  # fmt: skip
GRIDS = {
    "sgd": (0.01, 0.03, 0.1),
    "adam": (3e-4, 1e-3, 3e-3),
    # a learned precision rescales the gradients (Pi up to 1 / damping), so its SGD needs smaller
    # steps; the natural gradients' scale depends on their output factor
    "precision": (0.003, 0.01, 0.03),
    "ngd": (1e-3, 3e-3, 0.01, 0.03, 0.1),
}
# the EMA precision's damping: Pi = 1 / (running error variance + damping) <= 1 / damping. Hidden
# errors settle near 0, so hidden precisions sit at that cap, and inference at rate 0.1 needs
# rate * Pi < 2 to converge: the damping is searched with the learning rate
DAMPINGS = (0.2, 0.5, 1.0)
NGD_DAMPING = 0.5  # pc_ngd's diagonal precision
RECORDED = "pc_precision_diag"  # the arm --record records (first seed, every setting)


@dataclass(frozen=True)
class Config:
    hidden: int = 128
    epochs: int = 4
    batch_size: int = 128
    n_train: int | None = 8000  # None: all (less n_val)
    n_val: int = 2000
    n_test: int | None = None  # None: all
    seeds: tuple[int, ...] = (0, 1, 2)
    search: str = "clean"  # "none" (middle of the grid), "clean" (per arm), "each" (arm, setting)
    steps: int = 20


DEFAULT = Config(hidden=64, epochs=3, n_train=6000, n_val=1500, n_test=3000)
FULL = Config(hidden=256, epochs=10, n_train=None, n_val=5000, seeds=(0, 1, 2, 3, 4),
              search="each")  # fmt: skip
QUICK = Config(hidden=16, epochs=1, n_train=600, n_val=200, n_test=300, seeds=(0,),
               search="none", steps=8)  # fmt: skip


def load(cfg: Config) -> tuple[str, tuple, tuple]:
    """``(data name, (x, y) train, (x, y) test)``: Fashion-MNIST if installed, else the embedded
    MNIST subset."""
    try:
        tr, te, name = npc.data.fashion_mnist("train"), npc.data.fashion_mnist("test"), "fashion"
    except FileNotFoundError:
        tr, te, name = npc.data.mnist("train"), npc.data.mnist("test"), "mnist10k-embedded"
    n = None if cfg.n_train is None else cfg.n_train + cfg.n_val
    return name, (tr[0][:n], tr[1][:n]), (te[0][: cfg.n_test], te[1][: cfg.n_test])


def corrupt(setting: str, train: tuple, test: tuple, seed: int) -> tuple[tuple, tuple]:
    """The training and test sets of ``setting`` (see the module docstring); noise from
    ``seed``, the corrupted half of the pixels (``hetero``) fixed for all seeds."""
    kind, level = SETTINGS[setting]
    rng = np.random.default_rng(1000 + seed)
    (x, y), (xt, yt) = train, test
    if kind == "label" and level > 0:
        flip = rng.random(len(y)) < level
        y = np.where(flip, (y + rng.integers(1, 10, len(y))) % 10, y)  # another class
    elif kind == "gauss":
        x = x + level * rng.standard_normal(x.shape).astype(x.dtype)
        xt = xt + level * rng.standard_normal(xt.shape).astype(xt.dtype)
    elif kind == "hetero":
        half = np.random.default_rng(1234).permutation(x.shape[1])[: x.shape[1] // 2]
        mask = np.zeros(x.shape[1], x.dtype)
        mask[half] = level
        x = x + mask * rng.standard_normal(x.shape).astype(x.dtype)
        xt = xt + mask * rng.standard_normal(xt.shape).astype(xt.dtype)
    return (x, y), (xt, yt)


def arm_parts(arm: str, hp: dict) -> tuple[str, npc.Gaussian | None, object, str | None]:
    """``(family, hidden/output distribution, optimiser, backend override)`` of ``arm`` with
    hyper-parameters ``hp`` (``lr``, and ``damping`` for the learned-precision arms)."""
    lr = hp["lr"]
    if arm.startswith("bp_"):
        opt = {"bp_sgd": npc.SGD(lr), "bp_adam": npc.Adam(lr),
               "bp_ngd": npc.NaturalGradient(lr=lr, c_out="empirical")}[arm]  # fmt: skip
        return "bp", None, opt, None
    if arm in ("pc_sgd", "pc_adam"):
        return "pc", None, npc.SGD(lr) if arm == "pc_sgd" else npc.Adam(lr), None
    kind = "diag" if arm == "pc_ngd" else arm.split("_")[2]
    prec = npc.Precision(kind, learn="ema", decay=0.05, damping=hp.get("damping", NGD_DAMPING),
                         timescale="fast" if arm.endswith("_fast") else "slow")  # fmt: skip
    opt = npc.NaturalGradient(lr=lr) if arm == "pc_ngd" else npc.SGD(lr)
    return "pc", npc.Gaussian(precision=prec), opt, "torch" if kind == "full" else None


def grid(arm: str) -> list[dict]:
    """The hyper-parameters searched for ``arm``."""
    if arm.endswith("ngd"):
        return [{"lr": lr} for lr in GRIDS["ngd"]]
    if "precision" in arm:
        return [{"lr": lr, "damping": d} for d in DAMPINGS for lr in GRIDS["precision"]]
    return [{"lr": lr} for lr in GRIDS["adam" if arm.endswith("adam") else "sgd"]]


def middle(arm: str) -> dict:
    g = grid(arm)
    return g[len(g) // 2]


def train_eval(arm: str, hp: dict, train: tuple, evaluate: tuple, cfg: Config, seed: int,
               backend: str, record: str | None = None) -> float:  # fmt: skip
    """Train ``arm`` with ``hp`` on ``train`` and return its accuracy on ``evaluate``. With
    ``record`` (a PC arm), the training's learned precisions (``Probe(p, "precision")``) and
    energies go to that HDF5 file (``analysis/precision.py`` draws them)."""
    family, dist, opt, override = arm_parts(arm, hp)
    net = npc.mlp([784, cfg.hidden, 10], activation="tanh")
    if dist is not None:
        for name in ("h1", "output"):
            net.update(name, distribution=dist)
    sim = npc.Simulator(net, backend=override or backend, optimizer=opt, seed=seed,
                        inference=npc.Inference(steps=cfg.steps, rate=0.1))  # fmt: skip
    data = {"input": train[0], "output": npc.one_hot(train[1])}
    if family == "bp":
        twin = BackpropModel.from_simulator(sim)
        twin.fit(data, epochs=cfg.epochs, batch_size=cfg.batch_size)
        return float(twin.accuracy({"input": evaluate[0]}, evaluate[1]))
    if record is not None:
        probes = [npc.Probe(p, "precision", phases=("train",)) for p in ("h1", "output")]
        sim.record(record, probes if dist is not None else ())
    try:
        sim.fit(data, epochs=cfg.epochs, batch_size=cfg.batch_size, progress=False)
    except npc.DivergenceError as err:  # a learning rate too high for this arm: chance level
        print(f"  {arm} {hp}: diverged ({str(err).splitlines()[0][:80]})")
        return 0.1
    finally:
        if sim.recorder is not None:
            sim.recorder.close()
    return float(sim.accuracy({"input": evaluate[0]}, evaluate[1]))


def split(train: tuple, n_val: int) -> tuple[tuple, tuple]:
    x, y = train
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def select(arm: str, train: tuple, cfg: Config, backend: str) -> dict:
    """The hyper-parameters of ``arm``'s grid with the best validation accuracy (seed 0; ties
    to the smaller learning rate)."""
    if cfg.search == "none":
        return middle(arm)
    fit, val = split(train, cfg.n_val)
    scores = [(train_eval(arm, hp, fit, val, cfg, 0, backend), -hp["lr"], i)
              for i, hp in enumerate(grid(arm))]  # fmt: skip
    return grid(arm)[max(scores)[2]]


def _hp_metrics(key: str, hp: dict) -> dict:
    return {f"{name}_{key}": v for name, v in hp.items()}


# the arms alternate numba (OpenBLAS threads) and torch (its own pool): on a small machine two
# pools spinning against each other slow both several-fold, and these networks are small
@torch_threads(1)
def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="precision_noise",
                       extra=lambda ap: ap.add_argument("--full", action="store_true",
                                                        help="the whole protocol (hours)"))  # fmt: skip
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    cfg = replace(cfg, seeds=tuple(args.seed + s for s in cfg.seeds))
    name, train, test = load(cfg)
    t0 = time.perf_counter()
    metrics: dict = {"data": name, "n_train": len(train[1]) - cfg.n_val, "n_test": len(test[1]),
                     "epochs": cfg.epochs, "hidden": cfg.hidden, "seeds": list(cfg.seeds),
                     "search": cfg.search, "quick": args.quick}  # fmt: skip
    hps: dict[tuple[str, str], dict] = {}
    if cfg.search in ("none", "clean"):
        clean = corrupt("label0", train, test, cfg.seeds[0])[0]
        for arm in ARMS:
            hp = select(arm, clean, cfg, args.backend)
            hps.update({(s, arm): hp for s in SETTINGS})
            metrics.update(_hp_metrics(arm, hp))
    results: dict[tuple[str, str], list[float]] = {}
    for setting in SETTINGS:
        for arm in ARMS:
            accs = []
            for seed in cfg.seeds:
                tr, te = corrupt(setting, train, test, seed)
                if (setting, arm) not in hps:  # --full: per setting, on its own noisy split
                    hps[setting, arm] = select(arm, tr, cfg, args.backend)
                    metrics.update(_hp_metrics(f"{setting}_{arm}", hps[setting, arm]))
                # --record: the first seed's diagonal-precision run of every setting
                rec = args.recordings.next_path() if (
                    arm == RECORDED and seed == cfg.seeds[0]) else None  # fmt: skip
                accs.append(train_eval(arm, hps[setting, arm], split(tr, cfg.n_val)[0], te, cfg,
                                       seed, args.backend, rec))  # fmt: skip
            results[setting, arm] = accs
            metrics[f"acc_{setting}_{arm}"] = float(np.mean(accs))
            metrics[f"sd_{setting}_{arm}"] = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
            print(f"{setting:8s} {arm:26s} {100 * np.mean(accs):6.2f}%", flush=True)
    metrics["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision_noise.md").write_text(table(results, metrics))
    wrote(args.out / "precision_noise.md")
    (args.out / "precision_noise.json").write_text(json.dumps(
        {f"{s}/{a}": v for (s, a), v in results.items()}, indent=1))  # fmt: skip
    figure(results, args.out / "precision_noise.png")
    return report(metrics, args)


def table(results: dict, metrics: dict) -> str:
    """Markdown: one row per arm, one column per setting, mean +- sd in percent."""
    head = "| arm | " + " | ".join(SETTINGS) + " |\n|---|" + "---|" * len(SETTINGS) + "\n"
    rows = []
    for arm in ARMS:
        cells = []
        for s in SETTINGS:
            a = 100 * np.asarray(results[s, arm])
            cells.append(f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a[0]:.1f}")
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    note = (f"\n{metrics['data']}, {metrics['n_train']} training images, {metrics['epochs']} "
            f"epochs, hidden {metrics['hidden']}, seeds {metrics['seeds']}, learning rates "
            f"chosen on a validation split ({metrics['search']}).\n")  # fmt: skip
    return head + "\n".join(rows) + "\n" + note


def figure(results: dict, path) -> None:
    """Accuracy against the noise level per arm: label noise, and the input-noise settings."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    label = [s for s in SETTINGS if s.startswith("label")]
    inputs = ["label0", "gauss05", "gauss10", "hetero"]
    for i, arm in enumerate(ARMS):
        kw = {"ls": "--" if arm.startswith("bp") else "-", "marker": "o",
              "color": plt.cm.tab20(i / len(ARMS))}  # fmt: skip
        ax1.plot([SETTINGS[s][1] * 100 for s in label],
                 [100 * np.mean(results[s, arm]) for s in label], label=arm, **kw)  # fmt: skip
        ax2.plot(range(len(inputs)), [100 * np.mean(results[s, arm]) for s in inputs], **kw)
    ax1.set(xlabel="symmetric label noise (%)", ylabel="test accuracy (%)")
    ax2.set(xticks=range(len(inputs)), xticklabels=["clean", "gauss 0.5", "gauss 1.0", "hetero"])
    ax1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    wrote(path)


if __name__ == "__main__":
    run_main(main)
