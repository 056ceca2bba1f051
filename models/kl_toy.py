"""The toy gap between PC_F and PC_F_KL (Pinchetti et al. 2022): softmax and sigmoid hidden layers.

Network ``image (784) -> hidden (H) -> label (10)``, the label a Categorical clamped to the
one-hot class while training (cross-entropy), the hidden layer non-Gaussian:

* **F** (the naive generalisation, "PC_F"): the hidden node holds a *sample-like* value ``x`` whose
  energy is ``-log P(x; mu)`` (``npc.Categorical("F")`` / ``npc.Bernoulli("F")``), and the same
  value is passed on as the label's input (linear activation): samples and parameters at once;
* **KL** ("PC_F_KL"): the hidden node holds the *parameters* ``phi`` (logits) of its distribution,
  its energy is ``KL(P(phi) || P(mu))`` (``npc.Categorical("KL")`` / ``npc.Bernoulli("KL")``), and
  what it passes on is the distribution, ``softmax(phi)`` or ``sigmoid(phi)`` (the activation).

``mu_hidden = W_1 image + b_1`` (logits), ``mu_label = W_2 f(hidden) + b_2``. Equal budgets: the
same data, epochs, batch size, inference steps and rate, optimiser and initial weights per seed.
Test loss: the cross-entropy of ``softmax(mu_label)`` at the settled test state against the class
(nats); accuracy: its argmax. ``--json`` keys ``loss_F``, ``loss_KL``, ``acc_F``, ``acc_KL``
(means over seeds and both hidden kinds), and the same per kind (``loss_F_softmax``, ...);
``diverged_F`` / ``diverged_KL`` count runs whose energy became non-finite (their loss is
infinite, so the mean is null in the JSON and listed in ``nullable``).
Figure ``kl_toy.png`` in ``--out``: test loss per arm and seed.

Data: the embedded MNIST subset (the toy comparison needs no more). Default: 4,000 training and
1,000 test images, hidden 64, 5 epochs, 3 seeds, 20 steps at rate 0.1, Adam 1e-3. ``--quick``:
1,000 / 300 images, 2 epochs, 2 seeds. ``--full``: 10 epochs, 5 seeds. ``--record PATH`` records the
first arm (softmax hidden, F, first seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

import numpy as np

import neuropc as npc
from neuropc.runner import print_progress, pyplot, report, run_main, save_figure, script_args, wrote

KINDS = {"softmax": (npc.Categorical, "softmax"), "sigmoid": (npc.Bernoulli, "sigmoid")}


@dataclass(frozen=True)
class Config:
    hidden: int = 64
    epochs: int = 5
    batch_size: int = 64
    n_train: int = 4000
    n_test: int = 1000
    steps: int = 20
    rate: float = 0.1
    lr: float = 1e-3
    seeds: int = 3


DEFAULT = Config()
FULL = replace(DEFAULT, epochs=10, seeds=5)
QUICK = Config(epochs=2, n_train=1000, n_test=300, seeds=2)


def build(kind: str, energy: str, hidden: int) -> npc.Network:
    """The network of one arm (module docstring)."""
    dist, act = KINDS[kind]
    net = npc.Network()
    net.population("image", 784, role="input")
    net.population("hidden", hidden, distribution=dist(energy),
                   activation=act if energy == "KL" else "linear")  # fmt: skip
    net.population("label", 10, role="target", distribution=npc.Categorical())
    net.connect("image", "hidden")
    net.connect("hidden", "label")
    return net


def test_loss(sim: npc.Simulator, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(cross-entropy in nats, accuracy)`` of ``softmax(mu_label)`` at the settled test state."""
    st = sim.infer({"image": x})
    p = sim.parameters()
    f = sim.network["hidden"].activation.numpy(np.asarray(st["hidden"], np.float64))
    mu = f @ p["hidden->label"].T + p["label:bias"]
    mu = mu - mu.max(axis=1, keepdims=True)
    logp = mu - np.log(np.exp(mu).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(y)), y])), float(np.mean(mu.argmax(1) == y))


def run_arm(cfg: Config, kind: str, energy: str, seed: int, data, backend: str,
            recordings=None) -> dict:  # fmt: skip
    """Train and test one arm; ``recordings`` (the script's ``--record``) records it."""
    (xtr, ytr), (xte, yte) = data
    sim = npc.Simulator(build(kind, energy, cfg.hidden), backend=backend, seed=seed,
                        inference=npc.Inference(steps=cfg.steps, rate=cfg.rate),
                        optimizer=npc.Adam(cfg.lr))  # fmt: skip
    if recordings is not None:
        recordings.attach(sim)
    t0 = time.perf_counter()
    try:
        sim.fit({"image": xtr, "label": npc.one_hot(ytr)}, epochs=cfg.epochs,
                batch_size=cfg.batch_size, progress=False)  # fmt: skip
        loss, acc = test_loss(sim, xte, yte)
        diverged = not np.isfinite(loss)
    except npc.DivergenceError:  # PC_F's unbounded energy can overflow: a result, not a crash
        loss, acc, diverged = float("inf"), float("nan"), True
    return {"kind": kind, "energy": energy, "seed": seed, "loss": loss, "acc": acc,
            "diverged": diverged, "seconds": time.perf_counter() - t0}  # fmt: skip


def summarise(rows: list[dict]) -> dict:
    m: dict = {}
    for energy in ("F", "KL"):
        sel = [r for r in rows if r["energy"] == energy]
        m[f"diverged_{energy}"] = sum(r["diverged"] for r in sel)
        m[f"loss_{energy}"] = float(np.mean([r["loss"] for r in sel]))
        m[f"acc_{energy}"] = float(np.mean([r["acc"] for r in sel]))
        for kind in KINDS:
            k = [r for r in sel if r["kind"] == kind]
            m[f"loss_{energy}_{kind}"] = float(np.mean([r["loss"] for r in k]))
            m[f"acc_{energy}_{kind}"] = float(np.mean([r["acc"] for r in k]))
    return m


def table(rows: list[dict]) -> str:
    lines = ["hidden    energy  test loss (mean +- sd)   accuracy"]
    for kind in KINDS:
        for energy in ("F", "KL"):
            sel = [r for r in rows if r["kind"] == kind and r["energy"] == energy]
            lo, ac = [r["loss"] for r in sel], [r["acc"] for r in sel]
            lines.append(f"{kind:<9} {energy:<6}  {np.mean(lo):.4f} +- {np.std(lo):.4f}"
                         f"         {np.mean(ac):.4f}")  # fmt: skip
    return "\n".join(lines)


def draw(rows: list[dict], path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    arms = [(k, e) for k in KINDS for e in ("F", "KL")]
    for i, (k, e) in enumerate(arms):
        lo = [r["loss"] for r in rows if r["kind"] == k and r["energy"] == e]
        ax.scatter([i] * len(lo), lo, color="tab:blue" if e == "F" else "tab:orange")
        ax.plot([i - 0.2, i + 0.2], [np.mean(lo)] * 2, color="black")
    ax.set_xticks(range(len(arms)), [f"{k}\n{e}" for k, e in arms])
    ax.set_ylabel("test cross-entropy (nats)")
    ax.set_title("PC_F vs PC_F_KL, equal budgets")
    return save_figure(fig, path)


def _options(ap) -> None:
    ap.add_argument("--full", action="store_true", help="10 epochs, 5 seeds")


def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="kl_toy", extra=_options)
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    tr, te = npc.data.mnist("train"), npc.data.mnist("test")
    data = (
        (tr[0][: cfg.n_train], tr[1][: cfg.n_train]),
        (te[0][: cfg.n_test], te[1][: cfg.n_test]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seed, args.seed + cfg.seeds):
        for kind in KINDS:
            for energy in ("F", "KL"):
                # --record PATH records the first arm (softmax, F, first seed)
                r = run_arm(
                    cfg,
                    kind,
                    energy,
                    seed,
                    data,
                    args.backend,
                    args.recordings if not rows else None,
                )
                rows.append(r)
                print_progress(f"{kind} {energy} seed {seed}", {"loss": r["loss"], "acc": r["acc"]})
    print(table(rows))
    (args.out / "kl_toy.json").write_text(json.dumps(rows, indent=1))
    fig = draw(rows, args.out / "kl_toy.png")
    if fig:
        wrote(fig)
    metrics = summarise(rows)
    # a diverged run has no test loss (inf, null in the JSON) and no accuracy
    nullable = [k for k, v in metrics.items() if not np.isfinite(v)]
    metrics.update(data="mnist10k-embedded", seeds=cfg.seeds, quick=args.quick, full=args.full,
                   nullable=nullable)  # fmt: skip
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
