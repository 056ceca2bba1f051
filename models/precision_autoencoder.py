"""An unsupervised PC autoencoder with learned precision (Ofner et al. 2021) and its backprop twin.

Generative network ``latent -> hidden -> image`` (predictions point down the hierarchy)::

    mu_latent = b_z                                   (learnable prior mean: bias=True)
    mu_hidden = W_zh z + b_h                          (the latent is linear)
    mu_image  = W_hx tanh(h) + b_x                    (the hidden activation is tanh)
    F = sum_p 1/2 (x_p - mu_p)^T Pi_p (x_p - mu_p) - 1/2 log det Pi_p,    eps_p = Pi_p (x_p - mu_p)

for ``p`` in latent, hidden, image (sizes 16 / 256 / 784 by default). ``image`` has role
``"input"``: it is clamped to the data in every phase and, since it receives a prediction, it has
an error population. The latent is a free root with a learnable prior mean (``bias=True``), so
it has errors too: ``eps_z = Pi_z (z - b_z)`` (positive when a value is above its prediction).
Every population therefore carries a learned diagonal precision,
``npc.Precision("diag", learn="ema", decay, damping)``: after each learning batch
``S <- (1 - decay) S + decay <d^2>`` per unit (``d = x - mu`` at the settled state, ``<.>`` the
batch mean) and ``Pi = 1 / (S + damping)`` (``neuropc/dynamics/precision.py``). EMA rather than
the gradient rule because its fixed point ``Pi = 1 / (residual variance + damping)`` is reached
in a few dozen batches whatever the scale, with no learning rate to tune; the damping keeps
``Pi <= 1 / damping`` where a unit never errs (the blank border pixels), and so bounds how
stiff inference gets: the hidden block of the energy's Hessian is about
``Pi_h + tanh'^2 W_hx^T Pi_x W_hx``, so the inference rate must stay below ``2 / lambda_max``,
which falls as ``W_hx`` grows in training. At damping 0.1 (``Pi <= 10``) rate 0.01 starts to
oscillate after about 7 epochs (the energy then rises during inference and the decode degrades);
rate 0.005 with 100 steps stays stable for 20 epochs. With so small a damping budget the
residual variances of clean data (about 0.005 to 0.03) lie below the damping, so the learned
precisions of clean runs end near the bound (9.5 to 9.8); the precision separates units only
where their residual variance is comparable to the damping or larger (``--hetero``).

Training: per minibatch of 64, ``steps`` steps of PC inference on ``latent`` and ``hidden`` with
the image clamped (forward initialisation: ``z = b_z``, ``h = mu_h``), then the local gradients
``dF/dW = -eps_post f(x_pre)^T`` and ``dF/db = -eps`` drive Adam (lr 1e-3), then every precision
takes its EMA step. An image's **latent code** is the settled latent of the same inference,
with the image clamped (phase ``"test"``). With Adam the precision's per-row scaling of the weight
gradients is normalised away; precision acts through inference (which units are believed).

Baseline (backprop): encoder ``image -> hidden (tanh) -> latent`` and decoder
``latent -> hidden (tanh) -> image`` of the same widths, linear latent and image, Xavier-uniform
weights and zero biases like the PC network, loss ``1/2 |x - xhat|^2`` per image (PC's image
energy at unit precision), same optimiser (torch.optim.Adam, lr 1e-3), epochs and batch size.

Measures (held-out images):

* ``recon_mse_pc``: the mean squared pixel error of the **top-down decode of the settled latent
  code**, ``W_hx tanh(W_zh z + b_h) + b_x``: the image the generative model predicts from the
  16 latents alone, comparable with the autoencoder's bottleneck. ``recon_mse_pc_settled`` is
  ``mu_image`` at the settled state, ``W_hx tanh(h*) + b_x``, where the settled hidden ``h*``
  has also been pulled towards the image (256 numbers per digit, no bottleneck).
  ``recon_mse_bp``: the autoencoder's output. ``recon_mse_mean_image``: predicting the mean
  training image (the floor any code must beat).
* ``probe_acc_*``: a linear probe of the class label from the latents: multinomial logistic
  regression (features standardised on the training codes, L2 penalty 1e-3 on the weights, full
  batch L-BFGS in float64), fitted on the training images' codes, scored on the test codes.
* ``mig_*``: the mutual information gap (Chen et al. 2018) of the test codes against the label:
  each latent is cut into 20 equal-width bins between its min and max, ``I(z_j; y)`` is the plug-in
  mutual information of the binned latent and the label (natural log), and
  ``MIG = (I_(1) - I_(2)) / H(y)`` with ``I_(1) >= I_(2)`` the two largest. The label is the
  only ground-truth factor, so MIG says how much one latent alone carries the class beyond the
  next best one (0: spread over latents, 1: one latent is the label).

Figures (matplotlib; skipped with a note without it): ``traversals.png`` (each row varies one
latent from -2.5 to +2.5 standard deviations around the mean test code, decoded; PC and BP side by
side) and ``latents_pca.png`` (test codes on their first two principal components, coloured by
class). The learned precisions over training are recorded (``Probe(pop, "precision")`` per
training batch, plus the settled total energy) to ``precision_autoencoder.h5`` in ``--out``
(or to ``--record PATH``); ``analysis/precision.py`` draws them.

``--hetero``: heteroscedastic pixel noise. A fixed random half of the pixels (from the seed) gets
Gaussian noise of sd ``--sigma`` (default 1.0), drawn afresh for every image in every epoch
(training) and once for the test images; the other half stays clean. Both models train on the
corrupted images; reconstruction is scored against the clean test images (denoising), and the
JSON adds the median learned image precision of the corrupted and the clean pixels and the
error on the clean pixels alone (``recon_mse_*_clean_pixels``). At the EMA fixed point
``Pi_j = 1 / (residual variance_j + damping)``, so a corrupted pixel, whose residual variance is
about ``sigma^2`` (less what the settled hidden state explains of the noise), ends well below a
clean one. ``recon_mse_pc_settled`` is then large: the settled hidden state follows the noise.

Data: Fashion-MNIST (Debian package ``dataset-fashion-mnist``) when installed, else the embedded
MNIST subset; ``data`` in the JSON says which. Default run: the first 8,000 training and 2,000
test images, 20 epochs, 100 inference steps at rate 0.005. ``--quick``: 8 / 64 / 784 units,
2 epochs on 2,000 images, 500 test images, 30 steps at rate 0.01. ``--full``: 50 epochs.

Measured, seed 0, numba, 2 cores (another job sharing them), default run, about 2 minutes
(PC training 108 s, BP 6 s). PC does worse than backprop on reconstruction from the code and on
the probe; the MIGs of both are near 0 (no single latent carries the class):

==================  ===============================  =================================
                    Fashion-MNIST (package present)  embedded MNIST (package absent)
==================  ===============================  =================================
recon MSE  PC / BP  0.0215 / 0.0178                  0.0284 / 0.0209
PC settled          0.0053                           0.0032
mean image          0.0860                           0.0672
probe acc  PC / BP  0.787 / 0.803                    0.844 / 0.856
MIG        PC / BP  0.022 / 0.017                    0.030 / 0.039
==================  ===============================  =================================

Learned precision means (latent / hidden / image): Fashion 9.51 / 9.72 / 9.59, MNIST
9.63 / 9.70 / 9.64, all near the bound 10. The latents shrink during training (test-code sd
about 0.07 after 20 epochs, while ``W_zh`` grows): the usual drift of MAP-trained priors, which
the learned prior precision follows up to its bound. ``--hetero`` (sigma 1): median image
precision of the corrupted / clean pixels Fashion 1.35 / 8.62 (ratio 0.16), MNIST 1.17 / 9.08
(0.13); denoising MSE against the clean test images PC / BP Fashion 0.0424 / 0.0406, MNIST
0.0478 / 0.0470; probe PC / BP Fashion 0.677 / 0.703, MNIST 0.722 / 0.700. With Adam and the
top-down decode, the low precision of the noisy pixels does not buy PC better denoising than
backprop's uniform squared error here. ``--full`` (Fashion, 50 epochs, 4 min 51 s): PC stays
at 0.0213 while BP goes on to 0.0152; probe 0.785 / 0.802; MIG 0.011 / 0.040. Quick (Fashion,
about 6 s in all, 0.4 s of PC training once the kernels are compiled): recon PC / BP
0.065 / 0.047 (mean image 0.088), probe 0.72 / 0.70.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

import neuropc as npc
from neuropc.runner import print_progress, report, run_main, script_args, wrote

POPULATIONS = ("latent", "hidden", "image")
BINS = 20  # equal-width bins per latent for the MIG
PROBE_L2 = 1e-3
TRAVERSAL_SD = np.linspace(-2.5, 2.5, 7)
CLASSES = {"fashion": npc.data.FASHION_MNIST_CLASSES}  # label names (MNIST: the digits)


@dataclass(frozen=True)
class Config:
    latent: int = 16
    hidden: int = 256
    epochs: int = 20
    batch_size: int = 64
    n_train: int = 8000
    n_test: int = 2000
    steps: int = 100
    rate: float = 0.005
    lr: float = 1e-3
    decay: float = 0.05
    damping: float = 0.1


DEFAULT = Config()
FULL = replace(DEFAULT, epochs=50)
QUICK = Config(latent=8, hidden=64, epochs=2, n_train=2000, n_test=500, steps=30, rate=0.01)


# ---- data -----------------------------------------------------------------------------------
def load_data(n_train: int, n_test: int) -> tuple[str, tuple, tuple]:
    """``(name, (x, y) train, (x, y) test)``: Fashion-MNIST if the Debian package is installed,
    else the embedded MNIST subset (``"mnist10k-embedded"``); pixels in [0, 1]."""
    try:
        tr, te, name = npc.data.fashion_mnist("train"), npc.data.fashion_mnist("test"), "fashion"
    except FileNotFoundError:
        tr, te, name = npc.data.mnist("train"), npc.data.mnist("test"), "mnist10k-embedded"
    return name, (tr[0][:n_train], tr[1][:n_train]), (te[0][:n_test], te[1][:n_test])


def hetero_mask(n_pixels: int, seed: int) -> np.ndarray:
    """A fixed random half of ``n_pixels`` (boolean mask, ``n_pixels // 2`` True), from ``seed``."""
    mask = np.zeros(n_pixels, bool)
    mask[np.random.default_rng([seed, 11]).permutation(n_pixels)[: n_pixels // 2]] = True
    return mask


def corrupt(x: np.ndarray, mask: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``x + sigma * xi * mask`` with ``xi ~ N(0, 1)`` drawn per image and pixel: heavy Gaussian
    noise on the pixels of ``mask`` only."""
    noise = rng.standard_normal(x.shape).astype(x.dtype)
    return x + np.float32(sigma) * noise * mask.astype(x.dtype)


# ---- the PC network -------------------------------------------------------------------------
def build_network(cfg: Config) -> npc.Network:
    """``latent -> hidden -> image`` with a learned diagonal EMA precision on every population
    (see the module docstring)."""

    def gauss() -> npc.Gaussian:
        return npc.Gaussian(
            precision=npc.Precision("diag", learn="ema", decay=cfg.decay, damping=cfg.damping)
        )

    net = npc.Network()
    net.population("latent", cfg.latent, bias=True, distribution=gauss())
    net.population("hidden", cfg.hidden, activation="tanh", distribution=gauss())
    net.population("image", 784, role="input", bias=True, distribution=gauss())
    net.connect("latent", "hidden")
    net.connect("hidden", "image")
    return net


def make_simulator(cfg: Config, seed: int, backend: str = "numba") -> npc.Simulator:
    """The PC simulator: ``cfg.steps`` strict inference steps at ``cfg.rate``, Adam(``cfg.lr``)."""
    return npc.Simulator(
        build_network(cfg), backend=backend, seed=seed,
        inference=npc.Inference(steps=cfg.steps, rate=cfg.rate), optimizer=npc.Adam(cfg.lr),
    )  # fmt: skip


def train_pc(
    sim: npc.Simulator,
    x: np.ndarray,
    cfg: Config,
    *,
    noise: tuple[np.ndarray, float, np.random.Generator] | None = None,
    verbose: bool = True,
) -> list[dict]:
    """Train ``sim`` on the images ``x`` for ``cfg.epochs`` epochs (one ``fit`` epoch at a time).
    ``noise = (mask, sigma, rng)`` corrupts every epoch's images afresh (:func:`corrupt`).
    Returns one record per epoch (``energy``: mean settled total energy, ``seconds``)."""
    history = []
    for ep in range(1, cfg.epochs + 1):
        xe = x if noise is None else corrupt(x, *noise)
        rec = sim.fit({"image": xe}, epochs=1, batch_size=cfg.batch_size, progress=False).last
        rec = {"epoch": ep, "energy": rec["energy"], "seconds": rec["seconds"]}
        history.append(rec)
        if verbose:
            print_progress(
                f"PC epoch {ep}/{cfg.epochs}", {k: rec[k] for k in ("energy", "seconds")}
            )
    return history


def pc_codes(sim: npc.Simulator, x: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Settled ``(latent, hidden)`` of test-phase inference with the images ``x`` clamped."""
    zs, hs = [], []
    for s in range(0, len(x), batch):
        st = sim.infer({"image": x[s : s + batch]})
        zs.append(st["latent"])
        hs.append(st["hidden"])
    return np.concatenate(zs).astype(np.float64), np.concatenate(hs).astype(np.float64)


def decode_pc(params: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """The generative model's top-down prediction of the image from latents ``z`` (B, n_z):
    ``W_hx tanh(W_zh z + b_h) + b_x`` (the hidden at its prediction)."""
    h = z @ params["latent->hidden"].T + params["hidden:bias"]
    return image_prediction(params, h)


def image_prediction(params: dict[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    """``mu_image = W_hx tanh(h) + b_x`` of hidden values ``h`` (B, n_h)."""
    return np.tanh(h) @ params["hidden->image"].T + params["image:bias"]


# ---- the backprop autoencoder ---------------------------------------------------------------
class Autoencoder(torch.nn.Module):
    """``image -> hidden (tanh) -> latent -> hidden (tanh) -> image``, linear latent and output,
    Xavier-uniform weights, zero biases (as the PC network's initialisation)."""

    def __init__(self, latent: int, hidden: int, n_in: int = 784) -> None:
        super().__init__()

        def lin(a: int, b: int) -> torch.nn.Linear:
            layer = torch.nn.Linear(a, b)
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
            return layer

        self.encoder = torch.nn.Sequential(lin(n_in, hidden), torch.nn.Tanh(), lin(hidden, latent))
        self.decoder = torch.nn.Sequential(lin(latent, hidden), torch.nn.Tanh(), lin(hidden, n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def train_bp(
    x: np.ndarray,
    cfg: Config,
    seed: int,
    *,
    noise: tuple[np.ndarray, float, np.random.Generator] | None = None,
    verbose: bool = True,
) -> tuple[Autoencoder, list[dict]]:
    """Train the :class:`Autoencoder` on ``x`` by backprop of ``1/2 |x - xhat|^2`` (batch mean),
    Adam(``cfg.lr``), ``cfg.epochs`` epochs of shuffled minibatches of ``cfg.batch_size``;
    ``noise`` as in :func:`train_pc`. Returns the model and one record per epoch."""
    torch.manual_seed(seed)
    model = Autoencoder(cfg.latent, cfg.hidden, x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    order_rng = np.random.default_rng([seed, 7])
    history = []
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        xe = torch.as_tensor(x if noise is None else corrupt(x, *noise))
        losses = []
        order = order_rng.permutation(len(x))
        for s in range(0, len(x), cfg.batch_size):
            xb = xe[order[s : s + cfg.batch_size]]
            loss = 0.5 * ((model(xb) - xb) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        rec = {"epoch": ep, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
        history.append(rec)
        if verbose:
            print_progress(f"BP epoch {ep}/{cfg.epochs}", {k: rec[k] for k in ("loss", "seconds")})
    return model, history


def bp_codes(model: Autoencoder, x: np.ndarray) -> np.ndarray:
    """The encoder's latent codes of ``x``."""
    with torch.no_grad():
        return model.encoder(torch.as_tensor(x)).double().numpy()


def decode_bp(model: Autoencoder, z: np.ndarray) -> np.ndarray:
    """The decoder's images of latents ``z``."""
    with torch.no_grad():
        return model.decoder(torch.as_tensor(z, dtype=torch.float32)).double().numpy()


# ---- measures -------------------------------------------------------------------------------
def linear_probe(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
    l2: float = PROBE_L2, classes: int = 10,
) -> float:  # fmt: skip
    """Test accuracy of multinomial logistic regression of the labels on the codes: features
    standardised with the training codes' mean and sd, loss
    ``mean_b CE(softmax(W z_b + c), y_b) + l2/2 |W|^2``, full-batch L-BFGS (float64)."""
    m, s = z_train.mean(0), z_train.std(0)
    s = np.where(s > 0, s, 1.0)
    a = torch.as_tensor((z_train - m) / s, dtype=torch.float64)
    at = torch.as_tensor((z_test - m) / s, dtype=torch.float64)
    y = torch.as_tensor(y_train, dtype=torch.long)
    w = torch.zeros(a.shape[1], classes, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], lr=1.0, max_iter=500, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + c, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (at @ w + c).argmax(1).numpy()
    return float(np.mean(pred == np.asarray(y_test)))


def discretise(z: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of ``z`` cut into ``bins`` equal-width bins between its min and max: integer
    codes in ``[0, bins)`` (a constant column is all 0)."""
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(np.floor((z - lo) / width), 0, bins - 1).astype(np.int64)


def entropy(codes: np.ndarray) -> float:
    """Plug-in entropy (nats) of integer codes."""
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer code arrays:
    ``sum p(a, b) log(p(a, b) / (p(a) p(b)))`` (rounding below 0 is returned as 0)."""
    a, b = np.asarray(a), np.asarray(b)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return max(0.0, float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum()))  # >= 0


def mutual_information_gap(
    z: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> tuple[float, np.ndarray]:
    """``(MIG, I)``: ``I[j] = I(binned z_j; y)`` and ``MIG = (I_(1) - I_(2)) / H(y)`` (see the
    module docstring; needs at least two latents)."""
    codes = discretise(z, bins)
    y = np.asarray(labels, np.int64)
    mi = np.array([mutual_information(codes[:, j], y) for j in range(z.shape[1])])
    top = np.sort(mi)[::-1]
    return float((top[0] - top[1]) / entropy(y)), mi


def principal_components(z: np.ndarray, k: int = 2) -> np.ndarray:
    """The projections of the centred codes on their first ``k`` principal axes."""
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt[:k].T


def traversal_codes(z: np.ndarray) -> np.ndarray:
    """Codes ``(n_latent, len(TRAVERSAL_SD), n_latent)``: row ``j`` varies latent ``j`` over
    ``mean_j + t sd_j`` (t in :data:`TRAVERSAL_SD`) with the others at the mean code."""
    m, s = z.mean(0), z.std(0)
    out = np.repeat(np.repeat(m[None, None], z.shape[1], 0), len(TRAVERSAL_SD), 1)
    for j in range(z.shape[1]):
        out[j, :, j] = m[j] + TRAVERSAL_SD * s[j]
    return out


# ---- figures --------------------------------------------------------------------------------
def draw_figures(
    out: Path, codes: dict, decoders: dict, labels: np.ndarray, classes: tuple[str, ...]
) -> list[Path]:
    """``traversals.png`` and ``latents_pca.png`` (see the module docstring); [] without
    matplotlib. ``codes[name]``: test codes; ``decoders[name]``: codes -> images;
    ``classes``: the label names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the figures")
        return []
    from neuropc.analysis.plotting import save_png

    names = list(codes)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 6.5), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, name in zip(axes[0], names):
        t = traversal_codes(codes[name])
        n_z, n_t = t.shape[:2]
        imgs = decoders[name](t.reshape(n_z * n_t, n_z)).reshape(n_z, n_t, 28, 28)
        grid = imgs.transpose(0, 2, 1, 3).reshape(n_z * 28, n_t * 28)
        ax.imshow(np.clip(grid, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}: latent traversals")
        ax.set_xticks(np.arange(n_t) * 28 + 14, [f"{v:+.1f}" for v in TRAVERSAL_SD])
        ax.set_yticks(np.arange(n_z) * 28 + 14, [str(j) for j in range(n_z)])
        ax.set_xlabel("latent value (sd from the mean code)")
        ax.set_ylabel("latent varied")
    written = [save_png(fig, out / "traversals.png", dpi=100)]

    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False,
                             layout="constrained")  # fmt: skip
    cmap = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names):
        pcs = principal_components(codes[name])
        for d, cls in enumerate(classes):
            sel = labels == d
            ax.scatter(pcs[sel, 0], pcs[sel, 1], s=4, color=cmap(d), alpha=0.6,
                       label=cls if name == names[0] else None)  # fmt: skip
        ax.set_title(f"{name}: test codes")
        ax.set_xlabel("principal component 1 (a.u.)")
        ax.set_ylabel("principal component 2 (a.u.)")
    fig.legend(loc="outside right center", title="class", markerscale=3, fontsize="small")
    written.append(save_png(fig, out / "latents_pca.png", dpi=100))
    return written


# ---- the experiment -------------------------------------------------------------------------
def _options(ap) -> None:
    ap.add_argument("--full", action="store_true", help="the long run (50 epochs)")
    ap.add_argument("--hetero", action="store_true",
                    help="corrupt a fixed random half of the pixels with Gaussian noise")  # fmt: skip
    ap.add_argument("--sigma", type=float, default=1.0,
                    help="sd of the --hetero pixel noise (default 1.0)")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Train PC and BP, measure codes and reconstructions, draw the figures."""
    args = script_args(__doc__.splitlines()[0], argv, name="precision_autoencoder", extra=_options)
    if not (np.isfinite(args.sigma) and args.sigma > 0):
        raise ValueError(f"--sigma must be a finite number > 0; got {args.sigma}")
    record_to = args.recordings.next_path()  # --record PATH: the precision recording
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    name, (x, y), (x_test, y_test) = load_data(cfg.n_train, cfg.n_test)
    mask = hetero_mask(x.shape[1], args.seed) if args.hetero else None
    noise_pc = noise_bp = None
    x_test_in = x_test
    if mask is not None:  # the same noise draws for both models
        noise_pc = (mask, args.sigma, np.random.default_rng([args.seed, 1]))
        noise_bp = (mask, args.sigma, np.random.default_rng([args.seed, 1]))
        x_test_in = corrupt(x_test, mask, args.sigma, np.random.default_rng([args.seed, 2]))
        x_train_in = corrupt(x, mask, args.sigma, np.random.default_rng([args.seed, 3]))
    else:
        x_train_in = x

    args.out.mkdir(parents=True, exist_ok=True)
    sim = make_simulator(cfg, args.seed, args.backend)
    path = Path(record_to or args.out / "precision_autoencoder.h5")
    path.parent.mkdir(parents=True, exist_ok=True)  # --record checked it can be created
    probes = [npc.Probe(p, "precision", phases=("train",)) for p in POPULATIONS]
    probes.append(npc.Probe("total", "energy", mode="settled", phases=("train",)))
    meta = {"seed": args.seed, "data": name, "populations": list(POPULATIONS),
            "batches_per_epoch": -(-len(x) // cfg.batch_size), "config": asdict(cfg),
            "hetero": bool(args.hetero), "sigma": args.sigma if args.hetero else None,
            "corrupted_pixels": None if mask is None else np.flatnonzero(mask).tolist()}  # fmt: skip
    sim.gradients({"image": x[:2]})  # loads the compiled kernels; no update
    t0 = time.perf_counter()
    with sim.record(path, probes, preset="none", metadata=meta):
        pc_hist = train_pc(sim, x, cfg, noise=noise_pc)
    pc_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, bp_hist = train_bp(x, cfg, args.seed, noise=noise_bp)
    bp_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    params = sim.parameters()
    z_pc_train, _ = pc_codes(sim, x_train_in)
    z_pc, h_pc = pc_codes(sim, x_test_in)
    z_bp_train, z_bp = bp_codes(model, x_train_in), bp_codes(model, x_test_in)
    target = x_test.astype(np.float64)  # clean images (also under --hetero)

    def mse(pred: np.ndarray) -> float:
        return float(np.mean((pred - target) ** 2))

    mig_pc, mi_pc = mutual_information_gap(z_pc, y_test)
    mig_bp, mi_bp = mutual_information_gap(z_bp, y_test)
    metrics: dict = {
        "recon_mse_pc": mse(decode_pc(params, z_pc)),
        "recon_mse_bp": mse(decode_bp(model, z_bp)),
        "recon_mse_pc_settled": mse(image_prediction(params, h_pc)),
        "recon_mse_mean_image": mse(np.broadcast_to(x.mean(0), target.shape)),
        "probe_acc_pc": linear_probe(z_pc_train, y, z_pc, y_test),
        "probe_acc_bp": linear_probe(z_bp_train, y, z_bp, y_test),
        "mig_pc": mig_pc,
        "mig_bp": mig_bp,
        "mi_latent_label_pc": mi_pc.tolist(),
        "mi_latent_label_bp": mi_bp.tolist(),
    }
    for p in POPULATIONS:
        pi = sim.precision(p)
        metrics[f"precision_mean_{p}"] = float(pi.mean())
        metrics[f"precision_median_{p}"] = float(np.median(pi))
    if mask is not None:
        pi = sim.precision("image")
        metrics["sigma"] = args.sigma
        metrics["precision_image_corrupted_median"] = float(np.median(pi[mask]))
        metrics["precision_image_clean_median"] = float(np.median(pi[~mask]))
        metrics["precision_ratio_corrupted_clean"] = (
            metrics["precision_image_corrupted_median"] / metrics["precision_image_clean_median"]
        )
        for key, d in (("pc", decode_pc(params, z_pc)), ("bp", decode_bp(model, z_bp))):
            metrics[f"recon_mse_{key}_clean_pixels"] = float(
                np.mean((d[:, ~mask] - target[:, ~mask]) ** 2)
            )
    analysis_seconds = time.perf_counter() - t0
    figures = draw_figures(args.out, {"PC": z_pc, "BP": z_bp},
                           {"PC": lambda z: decode_pc(params, z),
                            "BP": lambda z: decode_bp(model, z)}, y_test,
                           CLASSES.get(name, tuple(map(str, range(10)))))  # fmt: skip
    metrics.update({
        "data": name, "hetero": bool(args.hetero), "latent": cfg.latent, "hidden": cfg.hidden,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "steps": cfg.steps, "rate": cfg.rate,
        "n_train": len(x), "n_test": len(x_test), "train_seconds_pc": pc_seconds,
        "train_seconds_bp": bp_seconds, "analysis_seconds": analysis_seconds,
        "pc_final_energy": pc_hist[-1]["energy"], "bp_final_loss": bp_hist[-1]["loss"],
        "recording": str(path), "backend": args.backend, "quick": args.quick, "full": args.full,
    })  # fmt: skip
    out_json = args.out / "precision_autoencoder.json"
    out_json.write_text(json.dumps({"metrics": metrics,
                                    "history": {"pc": pc_hist, "bp": bp_hist}}))  # fmt: skip
    for written in (path, out_json, *figures):
        wrote(written)
    m = metrics
    print(f"recon MSE  PC {m['recon_mse_pc']:.4f} (settled {m['recon_mse_pc_settled']:.4f})"
          f"  BP {m['recon_mse_bp']:.4f}  mean image {m['recon_mse_mean_image']:.4f}\n"
          f"probe acc  PC {m['probe_acc_pc']:.3f}  BP {m['probe_acc_bp']:.3f}\n"
          f"MIG        PC {mig_pc:.3f}  BP {mig_bp:.3f}")  # fmt: skip
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
