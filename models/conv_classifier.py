"""A small convolutional classifier trained by predictive coding and by its backprop twin (PCX's
parity row, Pinchetti et al. 2024).

PCX's conv classifier (VGG-5, tag v0.6.1; ../shared/notes/papers.md section 5.1) is four blocks
``3x3 conv -> activation -> 2x2 max-pool``, one PC node per block, then a linear classifier
(512 * 2 * 2 -> classes on 32 x 32 CIFAR images), a cross-entropy output clamped to the label
(PC-CE), forward-initialised hidden nodes, T = 8 inference steps per batch (VGG-5 CIFAR-10
PC-CE; gelu), one weight step per batch, batch size 128. Here, on 28 x 28 grey images::

    image (1, 28, 28) -conv 3x3 pad 1-> c1 (8, 28, 28) gelu -max-pool 2-> p1 (8, 14, 14)
      -conv-> c2 (16, 14, 14) gelu -max-pool 2-> p2 (16, 7, 7)
      -conv-> c3 (32, 7, 7) gelu -max-pool 2, pad 1-> p3 (32, 4, 4)
      -conv-> c4 (32, 4, 4) gelu -max-pool 2-> p4 (32, 2, 2)
      -dense (flatten)-> label (10,) npc.Categorical("KL"), role target

(the activation belongs to the presynaptic population in neuropc: ``c_i`` holds the convolution's
output, its gelu is applied as it is pooled). Deviations from PCX, documented:

* channels 8-16-32-32, PCX's 128-256-512-512 divided by 16 (a 2-core CPU budget); the third
  pool pads by one so that 28 -> 14 -> 7 -> 4 -> 2 ends, as PCX's 32 -> 2, at 2 x 2;
* every population is a PC node: each block has two (the convolution's output and the pooled
  one), where PCX has one per block;
* inference is plain gradient descent on the energy (rate 0.1), PCX's is SGD with momentum;
  weights learn with Adam (lr 1e-3, no weight decay, no schedule), PCX's with AdamW and a
  warmup-cosine schedule; a few epochs, PCX's 50.

PC arm: ``npc.Simulator(net, backend="torch")`` (shaped populations run on torch only, so
``--backend`` is ignored), 8 inference steps at rate 0.1 from the forward-initialised state,
then the local gradients drive Adam. BP arm: ``BackpropModel.from_simulator(sim)`` before
training (the same initial weights, optimiser settings and minibatch order), trained on the
cross-entropy of the same predictions. Test accuracy: PC's from test-phase inference with the
label free (forward-initialised, as ``models/digits_classifier.py``: with energy "KL" the
forward pass is a fixed point), BP's from ``BackpropModel.accuracy`` (the feed-forward argmax).

``--json`` keys: ``test_accuracy`` (PC), ``bp_test_accuracy``, ``accuracy_gap_points`` (PC - BP,
percentage points), ``ms_per_batch_pc``, ``ms_per_batch_bp`` (training wall time per batch),
``train_seconds``, ``bp_train_seconds``, ``seconds`` (the whole run), ``data``, ``epochs``,
``n_train``, ``n_test``, ``channels``, ``backend`` (torch). With ``--full`` the accuracies and
times are means over the seeds and ``per_seed`` lists each seed's.

Data: Fashion-MNIST complete (Debian package ``dataset-fashion-mnist``; 60,000 / 10,000) when
installed, else the embedded MNIST subset (8,000 / 2,000); ``data`` in the JSON says which;
``--data mnist`` forces the embedded set. Default: 2 epochs, one seed. ``--quick``: the embedded
MNIST, 1,024 / 500 images, channels 4-8-8-8, 2 epochs. ``--full``: 10 epochs, 3 seeds.
``history.json`` (per-epoch training energy / loss and test accuracy of both arms) and the
figure ``conv_classifier.png`` (test accuracy per epoch) go to ``--out``. ``--record PATH``
records the PC simulator of the first seed. Results and commands: docs/beyond_gaussian.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

import neuropc as npc
from neuropc.reference.backprop import BackpropModel
from neuropc.runner import (
    print_progress,
    pyplot,
    report,
    run_main,
    save_figure,
    script_args,
    torch_threads,
    wrote,
)


@dataclass(frozen=True)
class Config:
    channels: tuple[int, ...] = (8, 16, 32, 32)
    activation: str = "gelu"
    epochs: int = 2
    batch_size: int = 128
    n_train: int = 60000  # capped at the training set's size
    n_test: int = 10000
    steps: int = 8
    rate: float = 0.1
    lr: float = 1e-3
    seeds: int = 1


DEFAULT = Config()
FULL = replace(DEFAULT, epochs=10, seeds=3)
QUICK = Config(channels=(4, 8, 8, 8), batch_size=32, n_train=1024, n_test=500)


def load_data(cfg: Config, which: str):
    """``(name, (x_train, y_train), (x_test, y_test))``, images ``(N, 784)`` in [0, 1]."""
    name, tr, te = npc.data.images(which)
    return (name, (tr[0][: cfg.n_train], tr[1][: cfg.n_train]),
            (te[0][: cfg.n_test], te[1][: cfg.n_test]))  # fmt: skip


def build_network(cfg: Config) -> npc.Network:
    """The network of the module docstring (``len(cfg.channels)`` blocks)."""
    net = npc.Network()
    net.population("image", shape=(1, 28, 28), dims=("channel", "y", "x"), role="input")
    prev, size = "image", 28
    for i, c in enumerate(cfg.channels, 1):
        net.population(f"c{i}", shape=(c, size, size), activation=cfg.activation)
        net.connect(prev, f"c{i}", kind="conv2d", kernel_size=3, padding=1)
        pad = size % 2  # an odd side pools with one row / column of padding: 7 -> 4
        size = (size + 2 * pad - 2) // 2 + 1
        net.population(f"p{i}", shape=(c, size, size))
        net.connect(f"c{i}", f"p{i}", kind="max_pool2d", kernel_size=2, padding=pad)
        prev = f"p{i}"
    net.population("label", 10, role="target", distribution=npc.Categorical("KL"))
    net.connect(prev, "label", flatten=True)
    return net


def run_seed(cfg: Config, seed: int, data, recordings=None) -> dict:
    """Train the PC arm, then its twin, epoch by epoch; test accuracy after each epoch."""
    _, (x, y), (xt, yt) = data
    sim = npc.Simulator(build_network(cfg), backend="torch", seed=seed,
                        inference=npc.Inference(steps=cfg.steps, rate=cfg.rate),
                        optimizer=npc.Adam(cfg.lr))  # fmt: skip
    twin = BackpropModel.from_simulator(sim)  # same initial weights, optimiser and batch order
    if recordings is not None:
        recordings.attach(sim)
    train = {"image": x, "label": npc.one_hot(y)}
    n_batches = cfg.epochs * -(-len(x) // cfg.batch_size)
    history: dict[str, list] = {"pc": [], "bp": []}
    pc_s = 0.0
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        h = sim.fit(train, epochs=1, batch_size=cfg.batch_size, progress=False)
        pc_s += time.perf_counter() - t0
        acc = sim.accuracy({"image": xt}, yt)
        history["pc"].append({"epoch": ep, "energy": h.last["energy"], "test_accuracy": acc})
        print_progress(
            f"PC epoch {ep}/{cfg.epochs}",
            {"energy": h.last["energy"], "test_accuracy": acc, "seconds": pc_s},
        )
    bp_s = 0.0
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        rec = twin.fit(train, epochs=1, batch_size=cfg.batch_size)[-1]
        bp_s += time.perf_counter() - t0
        acc = twin.accuracy({"image": xt}, yt)
        history["bp"].append({"epoch": ep, "loss": rec["loss"], "test_accuracy": acc})
        print_progress(f"BP epoch {ep}/{cfg.epochs}",
                       {"loss": rec["loss"], "test_accuracy": acc, "seconds": bp_s})  # fmt: skip
    m = {
        "test_accuracy": history["pc"][-1]["test_accuracy"],
        "bp_test_accuracy": history["bp"][-1]["test_accuracy"],
        "train_seconds": pc_s, "bp_train_seconds": bp_s,
        "ms_per_batch_pc": 1000 * pc_s / n_batches, "ms_per_batch_bp": 1000 * bp_s / n_batches,
    }  # fmt: skip
    m["accuracy_gap_points"] = 100 * (m["test_accuracy"] - m["bp_test_accuracy"])
    return {"metrics": m, "history": history}


def draw(histories: list[dict], path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, hist in enumerate(histories):
        for arm, color in (("pc", "tab:blue"), ("bp", "tab:orange")):
            pts = hist[arm]
            ax.plot([p["epoch"] for p in pts], [100 * p["test_accuracy"] for p in pts], "o-",
                    color=color, label=arm.upper() if i == 0 else None)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("conv classifier: PC vs its backprop twin")
    ax.legend()
    return save_figure(fig, path)


def _options(ap) -> None:
    ap.add_argument("--full", action="store_true", help="the whole protocol: 10 epochs, 3 seeds")
    ap.add_argument("--data", choices=("auto", "mnist"), default="auto",
                    help="auto: Fashion-MNIST when installed, else the embedded MNIST")  # fmt: skip


@torch_threads(1)  # deterministic and fair to both arms on a small, shared machine
def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="conv_classifier", extra=_options)
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    data = load_data(cfg, "mnist" if args.quick else args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = [run_seed(cfg, args.seed + s, data, args.recordings if s == 0 else None)
            for s in range(cfg.seeds)]  # fmt: skip
    per_seed = [r["metrics"] for r in runs]
    metrics = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
    if cfg.seeds > 1:
        metrics["per_seed"] = per_seed
    metrics.update(data=data[0], n_train=len(data[1][0]), n_test=len(data[2][0]),
                   epochs=cfg.epochs, channels=list(cfg.channels), steps=cfg.steps,
                   rate=cfg.rate, batch_size=cfg.batch_size, seed=args.seed, seeds=cfg.seeds,
                   backend="torch", quick=args.quick, full=args.full,
                   seconds=time.perf_counter() - t0)  # fmt: skip
    print(f"test accuracy: PC {100 * metrics['test_accuracy']:.2f}%, BP twin "
          f"{100 * metrics['bp_test_accuracy']:.2f}% ({metrics['ms_per_batch_pc']:.0f} vs "
          f"{metrics['ms_per_batch_bp']:.0f} ms per batch)")  # fmt: skip
    history = [r["history"] for r in runs]
    (args.out / "history.json").write_text(
        json.dumps({"config": asdict(cfg), "metrics": metrics, "history": history}, indent=1)
    )
    wrote(args.out / "history.json")
    fig = draw(history, args.out / "conv_classifier.png")
    if fig:
        wrote(fig)
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
