"""A VAE trained by predictive coding (PC-F_KL) against the same architecture trained by backprop.

Pinchetti et al. (2022) report that PC with the F_KL energy "reaches the same reconstruction
errors as BP" on a variational auto-encoder. This script puts that to the test.

Generative model (a PC graph; predictions point down the hierarchy)::

    z: (2, k) npc.Normal() root, rows (m, s): the mean and log-variance of q(z) = N(m, e^s),
       under a fixed N(0, 1) prior (bias 0, trainable_bias=False)
    h: H units, Gaussian of precision Pi_h, tanh,  mu_h = W_zh [m; s] + b_h   (dense, flatten=True)
    image: 784 units, npc.Bernoulli(), clamped,    mu_x = W_hx tanh(h) + b_x  (logits)

The decoder reads both rows of ``z``: under F_KL a node passes on its distribution's parameters
(the plug-in of Pinchetti et al. in place of a sample). ``image`` has role ``"input"``, so it is
clamped in training and at test time, and PC inference on ``(z, h)`` given the image is the
encoder. The energy of a sample is::

    F = BCE(x, sigmoid(mu_x)) + Pi_h / 2 |h - mu_h|^2 + KL(N(m, e^s) || N(0, 1))

with ``BCE = sum_i softplus(mu_x,i) - x_i mu_x,i`` (nats). At ``h = mu_h(z)`` (a deterministic
decoder, every hidden error zero) it is exactly the VAE's negative ELBO with the decoder reading
``(m, s)``: ``BCE(x, decoder(m, s)) + KL(q || N(0, 1))``, the objective of the backprop arm. PC
also relaxes ``h``, so its settled energy is at most that objective at the same ``z``. The
hidden precision ``Pi_h = 10`` keeps ``h`` close to ``mu_h(z)``, so that PC learns the decoder
the twin has: with ``Pi_h = 1`` the free hidden layer carries much of each image (a 256-unit
code per image), the settled energy keeps falling while the reconstruction from ``z`` gets
worse from epoch 2 on. Inference: ``steps`` gradient steps at ``rate`` from the prior mean
(``z = (0, 0)``, ``h = mu_h``), preconditioned per unit by ``npc.Preconditioner(beta2=0.9,
eps=0.01)`` (RMSprop statistics reset every batch, no noise): the log-variance's KL term has
curvature ``e^s / 2``, and without the preconditioner inference diverged in training once the
decoder had learned (``DivergenceError``; ``Pi_h = 1`` at rates 0.1 and 0.2, ``Pi_h = 4`` at 0.1,
``Pi_h = 10`` at 0.05 and 0.1), while both preconditioned settings tried (``Pi_h = 10`` at rate
0.05, 100 steps, and at 0.1, 50 steps) trained.

The backprop twin, "the same architecture trained by backprop", has the same decoder (the same
network and initial weights) and prior, an amortised encoder MLP ``784 -> H_enc (tanh) -> 2k``
producing ``(m, s)`` (Xavier-uniform weights from the seed, zero biases), and is trained end to
end on the same objective, written once: ``neuropc.model.energy.total_energy`` at the values
``{z: encoder(x), h: its prediction, image: x}``. Same minibatches in the same order (a copy of
the simulator's shuffling stream), epochs and optimiser (Adam, fresh state, same settings).

Metric: **test reconstruction error** ``recon_*``, the mean squared error per pixel between the
test images and ``sigmoid(decoder(m, s))``, averaged over the test images, with ``(m, s)`` from
PC inference (the training settings: same steps and rate, from the prior mean) for PC and from
the encoder for BP; the decoder is evaluated deterministically (``h = mu_h(z)``), for both arms,
so PC's free hidden values are not used. MSE has no data-entropy floor (the BCE of grey-level
images contains the images' own entropy, the same for every model), so it is the stricter
ratio; the summed BCE (nats per image) is reported as ``bce_*`` and the objective (BCE + KL) as
``objective_*``. ``recon_ratio = recon_pc / recon_bp``; ``within_5pct`` is true when PC's error
is at most 5% above BP's (``recon_ratio <= 1.05``; lower counts as reaching it).
``bce_pc_settled`` is PC's BCE at its settled state (free ``h``), for reference only.

``--json`` keys: ``recon_pc``, ``recon_bp``, ``recon_ratio``, ``within_5pct``, ``bce_pc``,
``bce_bp``, ``bce_ratio``, ``objective_pc``, ``objective_bp``, ``bce_pc_settled``, ``data``,
``epochs``, ``n_train``, ``n_test``, ``pc_seconds``, ``bp_seconds`` (training wall times),
``seconds`` (the whole run), ``backend`` (always torch: shaped populations run on the torch
backend only, so ``--backend`` is ignored). With ``--full`` the values are means over the seeds
and ``per_seed`` lists each seed's.

Data: Fashion-MNIST complete (Debian package ``dataset-fashion-mnist``, 60,000 / 10,000
grey-level images in [0, 1]) when installed, else the embedded MNIST subset (8,000 / 2,000);
``data`` in the JSON says which; ``--data mnist`` forces the embedded set. Default: latent
k = 16, H = 256, ``Pi_h = 10``, encoder hidden 256, 4 epochs, batch 64, 50 preconditioned
inference steps at rate 0.1 (training and test), Adam 1e-3, one seed. ``--quick``: the embedded
MNIST, 2,048 / 256 images, k = 8, H = 64, 4 epochs, batch 32, 20 steps, Adam 3e-3 (so that
seconds learn something). ``--full``: 20 epochs, 100 steps, 3 seeds (hours). Figure
``pc_vae.png`` in ``--out``: test images, PC and BP reconstructions, and the test MSE after every
epoch (on the first ``curve_test`` test images); ``pc_vae.json``: configuration, metrics and
curves. ``--record PATH`` records the PC simulator of the first seed. Results and commands:
docs/beyond_gaussian.md.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

import neuropc as npc
from neuropc.dynamics.optim import torch_optimizer
from neuropc.model import energy as _energy
from neuropc.model.operators import fan_init
from neuropc.reference.backprop import is_trainable, train_epochs
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
    latent: int = 16
    hidden: int = 256
    hidden_precision: float = 10.0  # Pi_h: near-deterministic hidden layer (docstring)
    encoder_hidden: int = 256
    epochs: int = 4
    batch_size: int = 64
    n_train: int = 60000  # capped at the training set's size
    n_test: int = 10000
    steps: int = 50
    rate: float = 0.1
    beta2: float = 0.9  # the inference preconditioner's (npc.Preconditioner)
    eps: float = 1e-2
    lr: float = 1e-3
    curve_test: int = 1000  # test images evaluated after every epoch (the curves)
    seeds: int = 1


DEFAULT = Config()
FULL = replace(DEFAULT, epochs=20, steps=100, seeds=3)
# quick: a higher learning rate and smaller batches, so that a few seconds learn something
QUICK = Config(latent=8, hidden=64, encoder_hidden=64, epochs=4, batch_size=32, n_train=2048,
               n_test=256, steps=20, lr=3e-3, curve_test=256)  # fmt: skip


# ---- data -----------------------------------------------------------------------------------
def load_data(cfg: Config, which: str) -> tuple[str, np.ndarray, np.ndarray]:
    """``(name, x_train, x_test)``: grey-level images in [0, 1], ``(N, 784)`` float32."""
    name, tr, te = npc.data.images(which)
    return name, tr[0][: cfg.n_train], te[0][: cfg.n_test]


# ---- the generative model -------------------------------------------------------------------
def build_network(cfg: Config) -> npc.Network:
    """The PC graph of the module docstring."""
    net = npc.Network()
    net.population("z", shape=(2, cfg.latent), dims=("moment", "latent"),
                   distribution=npc.Normal(), bias=True, bias_init=0.0,
                   trainable_bias=False)  # fmt: skip
    net.population("h", cfg.hidden, activation="tanh", precision=cfg.hidden_precision)
    net.population("image", 784, role="input", bias=True, distribution=npc.Bernoulli())
    net.connect("z", "h", flatten=True)
    net.connect("h", "image")
    return net


def inference(cfg: Config) -> npc.Inference:
    """PC inference: ``steps`` preconditioned gradient steps on ``(z, h)`` from the prior mean."""
    pre = npc.Preconditioner(beta2=cfg.beta2, eps=cfg.eps)
    return npc.Inference(steps=cfg.steps, rate=cfg.rate, preconditioner=pre)


def decode(net: npc.Network, params: dict, z: torch.Tensor) -> torch.Tensor:
    """The image logits ``mu_x`` of the deterministic decoder (``h = mu_h(z)``), ``(B, 784)``."""
    h = _energy.prediction(net, params, {"z": z}, "h")
    return _energy.prediction(net, params, {"h": h}, "image")


def scores(net: npc.Network, params: dict, z: np.ndarray, x: np.ndarray) -> dict:
    """Per-image means over the test images of the reconstruction MSE (per pixel), the summed
    BCE (nats) and the objective BCE + KL(q || N(0, 1)), decoding ``z`` deterministically."""
    with torch.no_grad():
        p = {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in params.items()}
        zt = torch.as_tensor(np.asarray(z, np.float64))
        xt = torch.as_tensor(np.asarray(x, np.float64))
        mu = decode(net, p, zt)
        bce = (torch.nn.functional.softplus(mu) - xt * mu).sum(dim=1)
        mse = ((torch.sigmoid(mu) - xt) ** 2).mean(dim=1)
        h = _energy.prediction(net, p, {"z": zt}, "h")
        objective = _energy.total_energy(net, p, {"z": zt, "h": h, "image": xt}, ("image",))
    return {
        "mse": float(mse.mean()),
        "bce": float(bce.mean()),
        "objective": float(objective.mean()),
        "reconstructions": torch.sigmoid(mu).numpy(),
    }


# ---- the PC arm -----------------------------------------------------------------------------
def pc_latents(sim: npc.Simulator, x: np.ndarray, chunk: int = 1000) -> tuple[np.ndarray, float]:
    """PC inference on the test images (the simulator's inference settings): the settled
    ``z`` and the mean settled image energy (BCE at the settled, free ``h``)."""
    zs, bce = [], 0.0
    for s in range(0, len(x), chunk):
        st = sim.infer({"image": x[s : s + chunk]})
        zs.append(st["z"])
        bce += float(st.energies["image"][-1]) * len(st["z"])
    return np.concatenate(zs), bce / len(x)


# ---- the backprop twin ----------------------------------------------------------------------
class AmortisedTwin:
    """The same decoder and prior with an amortised encoder ``x -> tanh -> (m, s)``, trained by
    backprop on ``total_energy`` at ``{z: encoder(x), h: mu_h(z), image: x}`` (module
    docstring). Built from a simulator before it trains: its parameters, optimiser settings,
    dtype and a copy of its shuffling stream."""

    def __init__(self, sim: npc.Simulator, encoder_hidden: int, seed: int) -> None:
        self.network = net = sim.network
        self.dtype = torch.float64 if sim.dtype == np.float64 else torch.float32
        self.decoder = {k: torch.tensor(np.asarray(v, np.float64), dtype=self.dtype,
                                        requires_grad=is_trainable(net, k))
                        for k, v in sim.parameters().items()}  # fmt: skip
        rng = np.random.default_rng([seed, 1])  # the encoder's own stream
        n_z = net["z"].size
        shapes = {"W1": (encoder_hidden, 784), "W2": (n_z, encoder_hidden)}
        self.encoder = {
            "W1": fan_init(rng, shapes["W1"], 784, encoder_hidden, "xavier_uniform", 1.0),
            "b1": np.zeros(encoder_hidden),
            "W2": fan_init(rng, shapes["W2"], encoder_hidden, n_z, "xavier_uniform", 1.0),
            "b2": np.zeros(n_z),
        }
        self.encoder = {k: torch.tensor(v, dtype=self.dtype, requires_grad=True)
                        for k, v in self.encoder.items()}  # fmt: skip
        learned = [p for p in self.decoder.values() if p.requires_grad]
        self.optimizer = torch_optimizer(sim.optimizer, learned + list(self.encoder.values()))
        self.rng = copy.deepcopy(sim.shuffle_rng)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(m, s)`` of ``q(z | x)`` as ``z``'s flat values ``(B, 2k)`` (means, log-variances)."""
        e = self.encoder
        return torch.tanh(x @ e["W1"].T + e["b1"]) @ e["W2"].T + e["b2"]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Batch mean of the PC energy at ``{z: encoder(x), h: mu_h(z), image: x}``."""
        z = self.encode(x)
        h = _energy.prediction(self.network, self.decoder, {"z": z}, "h")
        values = {"z": z, "h": h, "image": x}
        return _energy.total_energy(self.network, self.decoder, values, ("image",)).mean()

    def step(self, batch: dict) -> float:
        value = self.loss(batch["image"])
        self.optimizer.zero_grad()
        value.backward()
        self.optimizer.step()
        return float(value.detach())

    def fit(self, x: np.ndarray, epochs: int, batch_size: int) -> list[dict]:
        """Minibatches as ``Simulator.fit`` orders them (one permutation per epoch)."""
        arrays = {"image": torch.as_tensor(x, dtype=self.dtype)}
        return train_epochs(self.step, arrays, self.rng, epochs=epochs, batch_size=batch_size)

    def latents(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.encode(torch.as_tensor(x, dtype=self.dtype)).numpy()

    def parameters(self) -> dict[str, np.ndarray]:
        """The decoder's parameters, keyed like ``Simulator.parameters()``."""
        return {k: v.detach().numpy().astype(np.float64) for k, v in self.decoder.items()}


# ---- one seed -------------------------------------------------------------------------------
def run_seed(cfg: Config, seed: int, data, recordings=None) -> dict:
    """Train and test both arms from the same initial decoder; curves after every epoch."""
    _, xtr, xte = data
    net = build_network(cfg)
    sim = npc.Simulator(net, backend="torch", seed=seed, optimizer=npc.Adam(cfg.lr),
                        inference=inference(cfg))  # fmt: skip
    twin = AmortisedTwin(sim, cfg.encoder_hidden, seed)  # before sim trains: same decoder
    if recordings is not None:
        recordings.attach(sim)
    xc = xte[: cfg.curve_test]
    curve: dict[str, list] = {"pc": [], "bp": []}
    pc_s = 0.0
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        hist = sim.fit({"image": xtr}, epochs=1, batch_size=cfg.batch_size, progress=False)
        pc_s += time.perf_counter() - t0
        mse = scores(net, sim.parameters(), pc_latents(sim, xc)[0], xc)["mse"]
        curve["pc"].append({"epoch": ep, "train_energy": hist.last["energy"], "test_mse": mse})
        print_progress(
            f"PC epoch {ep}/{cfg.epochs}",
            {"energy": hist.last["energy"], "test_mse": mse, "seconds": pc_s},
        )
    bp_s = 0.0
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        hist = twin.fit(xtr, 1, cfg.batch_size)
        bp_s += time.perf_counter() - t0
        mse = scores(net, twin.parameters(), twin.latents(xc), xc)["mse"]
        curve["bp"].append({"epoch": ep, "train_loss": hist[-1]["loss"], "test_mse": mse})
        print_progress(f"BP epoch {ep}/{cfg.epochs}",
                       {"loss": hist[-1]["loss"], "test_mse": mse, "seconds": bp_s})  # fmt: skip
    z_pc, settled = pc_latents(sim, xte)
    pc = scores(net, sim.parameters(), z_pc, xte)
    bp = scores(net, twin.parameters(), twin.latents(xte), xte)
    m = {
        "recon_pc": pc["mse"], "recon_bp": bp["mse"], "recon_ratio": pc["mse"] / bp["mse"],
        "bce_pc": pc["bce"], "bce_bp": bp["bce"], "bce_ratio": pc["bce"] / bp["bce"],
        "objective_pc": pc["objective"], "objective_bp": bp["objective"],
        "bce_pc_settled": settled, "pc_seconds": pc_s, "bp_seconds": bp_s,
    }  # fmt: skip
    m["within_5pct"] = bool(m["recon_ratio"] <= 1.05)
    images = {"test": xte[:8], "pc": pc["reconstructions"][:8], "bp": bp["reconstructions"][:8]}
    return {"metrics": m, "curve": curve, "images": images}


# ---- figure ---------------------------------------------------------------------------------
def draw(res: dict, path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.ticker import MaxNLocator

    imgs = res["images"]
    fig = plt.figure(figsize=(9, 3.6))
    grid = fig.add_gridspec(3, 13)
    for r, (key, label) in enumerate((("test", "test"), ("pc", "PC"), ("bp", "BP"))):
        for c in range(8):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(imgs[key][c].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    ax = fig.add_subplot(grid[:, 10:])
    for arm, color in (("pc", "tab:blue"), ("bp", "tab:orange")):
        pts = res["curve"][arm]
        ax.plot([p["epoch"] for p in pts], [p["test_mse"] for p in pts], "o-", color=color,
                label=arm.upper())  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("test MSE per pixel")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.suptitle("PC-VAE (F_KL) vs the same VAE trained by backprop")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.88, wspace=0.1, hspace=0.1)
    return save_figure(fig, path, tight=False)


def _options(ap) -> None:
    ap.add_argument("--full", action="store_true",
                    help="the whole protocol: 20 epochs, 100 inference steps, 3 seeds")  # fmt: skip
    ap.add_argument("--data", choices=("auto", "mnist"), default="auto",
                    help="auto: Fashion-MNIST when installed, else the embedded MNIST")  # fmt: skip


@torch_threads(1)  # small dense layers: threads only contend on a small machine
def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="pc_vae", extra=_options)
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    data = load_data(cfg, "mnist" if args.quick else args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = [run_seed(cfg, args.seed + s, data, args.recordings if s == 0 else None)
            for s in range(cfg.seeds)]  # fmt: skip
    per_seed = [r["metrics"] for r in runs]
    metrics = dict(per_seed[0])
    if cfg.seeds > 1:
        for k in metrics:
            if k != "within_5pct":
                metrics[k] = float(np.mean([s[k] for s in per_seed]))
        metrics["recon_ratio"] = metrics["recon_pc"] / metrics["recon_bp"]
        metrics["within_5pct"] = bool(metrics["recon_ratio"] <= 1.05)
        metrics["per_seed"] = per_seed
    metrics.update(data=data[0], n_train=len(data[1]), n_test=len(data[2]), epochs=cfg.epochs,
                   steps=cfg.steps, rate=cfg.rate, latent=cfg.latent, metric="mse",
                   seed=args.seed, seeds=cfg.seeds, backend="torch", quick=args.quick,
                   full=args.full, seconds=time.perf_counter() - t0)  # fmt: skip
    print(f"test reconstruction MSE per pixel: PC {metrics['recon_pc']:.5f}, "
          f"BP {metrics['recon_bp']:.5f} (PC / BP = {metrics['recon_ratio']:.3f}); "
          f"BCE {metrics['bce_pc']:.2f} vs {metrics['bce_bp']:.2f} nats per image")  # fmt: skip
    saved = {"config": asdict(cfg), "metrics": metrics, "curves": [r["curve"] for r in runs]}
    (args.out / "pc_vae.json").write_text(json.dumps(saved, indent=1))
    wrote(args.out / "pc_vae.json")
    fig = draw(runs[0], args.out / "pc_vae.png")
    if fig:
        wrote(fig)
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
