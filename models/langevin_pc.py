"""Langevin predictive coding against a like-for-like VAE (Zahid et al. 2023).

Generative model (predictions point down the hierarchy)::

    z ~ N(0, I_L)                                    (latent: a free root, fixed zero prior mean)
    h ~ N(W_zh z + b_h, I_H / pi_h)                  (hidden, Gaussian)
    x ~ Bernoulli(sigmoid(W_hx tanh(h) + b_x))       (image, binarised at 0.5, clamped)

``F = 1/2 |z|^2 + pi_h/2 |h - mu_h|^2 + sum_i [softplus(mu_x,i) - x_i mu_x,i]`` = -log p(x, z, h)
up to constants. Inference is the unadjusted Langevin algorithm on (z, h)::

    (z, h) <- (z, h) - eta M dF/d(z, h) + sqrt(2 eta M) xi

with the diagonal preconditioner ``M = 1 / (eps + sqrt(vhat))`` (``npc.Preconditioner``, RMSprop
statistics per chain, reset every batch; ``M = 1`` without it), ``steps`` steps of which the last
``steps - burn_in`` are collected: the decoder learns from the average local gradient over them
(``Inference(collect="mean")``), Adam. An amortised encoder ``q(z, h | x)`` (``net.encoder``,
one tanh hidden layer of 256) starts the chains (``Inference(init="amortised")``) and learns
with one of three objectives: ``forward_kl`` (fit q to the chain's samples), ``reverse_kl``
(the reparameterised ELBO, decoder frozen) or ``jeffreys`` (both; the paper's Algorithm 1).
Without an encoder the chains start at the forward prediction (z = 0, h = mu_h).

The VAE (:class:`neuropc.reference.vae.VAE`) has the same decoder (the same network and initial
weights), the same encoder architecture and initial weights, the same optimiser, batch size,
epochs and minibatch order, and is trained on the reparameterised ELBO.

Experiments:

* (a) the three encoder objectives and no encoder: FID-like of each LPC model's samples
  (``fid_lpc_<objective>``);
* (b) LPC (Jeffreys) against the VAE: FID-like, coverage and ELBO after every epoch, against
  SGD iterations (``curves`` in the saved JSON); ``iters_lpc_to_vae_fid`` is the first evaluated
  iteration count at which LPC's FID-like is at most the VAE's final one (null if never);
* (c) a sweep of the Langevin step size ``eta`` with and without the preconditioner on a short
  training run; a setting is *stable* if it trains without a non-finite energy and its final
  inference energy stays below ``10 x`` the prior-start energy of the first batch, and
  ``eta_max_stable_*`` is the largest stable ``eta`` of the grid.

Metrics: FID-like and precision / recall / density / coverage (k = 5) on the features of the
packaged classifier of the same dataset (``npc.analysis.features``), between ``n_samples``
test images and as many ancestral samples (latents drawn, images at their Bernoulli means);
ELBO (one sample per image, the model's encoder as q) and IWAE-k (``iwae_k`` samples: an
importance-sampled log p(x)) on the binarised test images, in nats per image. The ELBO of an
LPC model uses its amortised encoder as q, which lower-bounds the bound LPC's chains reach.

Data: Fashion-MNIST (Debian package ``dataset-fashion-mnist``) when installed, else the
embedded MNIST subset; ``data`` in the JSON says which (``--data mnist`` forces the embedded set).
``--quick`` runs on the embedded data in seconds; ``--full`` runs the whole protocol (more epochs,
300 Langevin steps, 3 seeds). Results and commands: docs/langevin.md; figures:
``python analysis/lpc_vs_vae.py runs/langevin_pc``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

import neuropc as npc
from neuropc.analysis import features as _feat
from neuropc.analysis import generative as _gen
from neuropc.analysis.likelihood import encoder_log_weights
from neuropc.reference.vae import VAE
from neuropc.runner import print_progress, report, run_main, script_args, torch_threads, wrote

OBJECTIVES = ("forward_kl", "reverse_kl", "jeffreys")
# null in the JSON: never reached / no stable step size in the grid
NULLABLE = ("iters_lpc_to_vae_fid", "eta_max_stable_precond", "eta_max_stable_plain")


@dataclass(frozen=True)
class Config:
    latent: int = 16
    hidden: int = 128
    hidden_precision: float = 1.0
    encoder_hidden: int = 256
    epochs: int = 6
    batch_size: int = 64
    n_train: int = 8000
    n_test: int = 1000
    steps: int = 60
    burn_in: int = 30
    rate: float = 0.05
    beta2: float = 0.99
    eps: float = 1e-2
    lr: float = 1e-3
    n_samples: int = 1000
    iwae_k: int = 50
    sweep_rates: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    sweep_batches: int = 20
    seeds: int = 1


DEFAULT = Config()
FULL = replace(DEFAULT, epochs=30, steps=300, burn_in=150, n_test=2000, n_samples=2000,
               iwae_k=500, seeds=3, sweep_batches=100)  # fmt: skip
QUICK = Config(latent=4, hidden=16, encoder_hidden=32, epochs=2, n_train=256, n_test=128,
               steps=10, burn_in=5, n_samples=128, iwae_k=5, sweep_rates=(0.05, 2.0),
               sweep_batches=2)  # fmt: skip


# ---- data -----------------------------------------------------------------------------------
def load_data(cfg: Config, which: str):
    """``(name, x_train (binary), x_test (binary), x_test (grey), features)``."""
    data, tr, te = npc.data.images(which)
    name, feat = {"fashion_mnist": ("fashion", "fashion_mnist"),
                  "mnist10k-embedded": ("mnist10k-embedded", "mnist10k")}[data]  # fmt: skip
    xtr, xte = tr[0][: cfg.n_train], te[0][: cfg.n_test]
    binar = lambda a: (a > 0.5).astype(np.float32)
    return name, binar(xtr), binar(xte), xte.astype(np.float64), _feat.default_weights(feat)[0]


# ---- the network ----------------------------------------------------------------------------
def build_network(cfg: Config, objective: str = "jeffreys") -> npc.Network:
    net = npc.Network()
    net.population("z", cfg.latent, bias=True, trainable_bias=False)
    net.population("h", cfg.hidden, activation="tanh", precision=cfg.hidden_precision)
    net.population("x", 784, role="input", bias=True, distribution=npc.Bernoulli())
    net.connect("z", "h")
    net.connect("h", "x")
    net.encoder("x", ["z", "h"], hidden=(cfg.encoder_hidden,), objective=objective)
    return net


def inference(cfg: Config, *, encoder: bool, precondition: bool = True, rate: float | None = None,
              steps: int | None = None, burn_in: int | None = None) -> npc.Inference:  # fmt: skip
    pre = npc.Preconditioner(beta2=cfg.beta2, eps=cfg.eps) if precondition else None
    return npc.Inference(
        steps=steps or cfg.steps, rate=rate or cfg.rate, temperature=1.0,
        burn_in=cfg.burn_in if burn_in is None else burn_in, collect="mean",
        init="amortised" if encoder else "forward", preconditioner=pre,
    )  # fmt: skip


# ---- evaluation -----------------------------------------------------------------------------
def sample_quality(samples: np.ndarray, real_feats: np.ndarray, weights) -> dict:
    fake = _feat.features(weights, samples)
    out = {"fid": _gen.fid(real_feats, fake)}
    out.update(_gen.prdc(real_feats, fake, k=5))
    return out


def evaluate(model, x_test_bin, real_feats, weights, cfg: Config, seed: int) -> dict:
    """Sample quality, and the ELBO (1 sample) and IWAE-k per image (nats) with the model's
    encoder as q, of a trained LPC simulator or VAE (both have ``sample``, ``parameters``,
    ``network`` and ``encoder``); returns ``(metrics, samples)``."""
    samples = model.sample(cfg.n_samples, seed=seed, mean=["x"])["x"]
    out = sample_quality(samples, real_feats, weights)
    lw = encoder_log_weights(model.network, model.parameters(), model.encoder,
                             {"x": x_test_bin}, cfg.iwae_k, seed)  # fmt: skip
    out.update(elbo=float(np.mean(lw[:, 0])), iwae=float(np.mean(_gen.iwae(lw))))
    return out, samples


# ---- experiments ----------------------------------------------------------------------------
def train_lpc(cfg, data, objective: str | None, seed: int, backend: str, evaluate_each=None,
              recordings=None):  # fmt: skip
    """Train an LPC model (``objective`` None: no encoder); returns (sim, curve, seconds/epoch).
    ``recordings``: the script's ``--record`` (the simulator is attached to it)."""
    sim = npc.Simulator(build_network(cfg, objective or "jeffreys"), backend=backend, seed=seed,
                        inference=inference(cfg, encoder=objective is not None),
                        optimizer=npc.Adam(cfg.lr))  # fmt: skip
    if recordings is not None:
        recordings.attach(sim)
    return sim, *fit_epochs(sim, cfg, data, evaluate_each, f"LPC {objective or 'no encoder'}")


def fit_epochs(model, cfg, data, evaluate_each, label):
    curve, seconds = [], []
    n_batches = -(-len(data) // cfg.batch_size)
    for ep in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        if isinstance(model, VAE):
            model.fit({"x": data}, epochs=1, batch_size=cfg.batch_size)
        else:
            model.fit({"x": data}, epochs=1, batch_size=cfg.batch_size, progress=False)
        seconds.append(time.perf_counter() - t0)
        row = {"epoch": ep, "iterations": ep * n_batches, "seconds": seconds[-1]}
        if evaluate_each is not None:
            row.update(evaluate_each(model))
        curve.append(row)
        print_progress(f"{label} epoch {ep}/{cfg.epochs}",
                       {k: v for k, v in row.items() if k in ("seconds", "fid", "elbo")})  # fmt: skip
    return curve, float(np.mean(seconds))


def step_size_sweep(cfg, data, seed: int, backend: str) -> dict:
    """(c): for each eta, with and without the preconditioner, ``sweep_batches`` training
    batches with the Jeffreys encoder; stability as in the module docstring."""
    rows = []
    n = cfg.sweep_batches * cfg.batch_size
    x = data[:n]
    for pre in (True, False):
        for eta in cfg.sweep_rates:
            sim = npc.Simulator(build_network(cfg), backend=backend, seed=seed,
                                optimizer=npc.Adam(cfg.lr),
                                inference=inference(cfg, encoder=True, precondition=pre,
                                                    rate=eta))  # fmt: skip
            e0 = sim.infer({"x": x[: cfg.batch_size]},
                           inference=npc.Inference(steps=0)).energy.sum()  # fmt: skip
            stable, final = True, float("nan")
            try:
                h = sim.fit({"x": x}, epochs=1, batch_size=cfg.batch_size, progress=False)
                final = h.last["energy"]
                stable = bool(np.isfinite(final) and final < 10 * abs(float(e0)))
            except npc.DivergenceError:
                stable = False
            rows.append({"precondition": pre, "eta": eta, "stable": stable,
                         "final_energy": final, "start_energy": float(e0)})  # fmt: skip
            print_progress(f"sweep eta={eta} precondition={pre}", {"stable": stable})
    best = {}
    for pre in (True, False):
        ok = [r["eta"] for r in rows if r["precondition"] == pre and r["stable"]]
        best[pre] = max(ok) if ok else None
    return {"rows": rows, "eta_max_stable_precond": best[True], "eta_max_stable_plain": best[False]}


def run_seed(cfg: Config, seed: int, backend: str, data, recordings=None) -> dict:
    _, xtr, xte_bin, xte, weights = data
    real = _feat.features(weights, xte[: cfg.n_samples])
    results: dict = {"arms": {}}

    def lpc_eval(sim):
        return evaluate(sim, xte_bin, real, weights, cfg, seed)[0]

    # (b) the VAE, from the Jeffreys arm's initial simulator (same decoder, encoder, optimiser)
    sim0 = npc.Simulator(build_network(cfg), backend=backend, seed=seed,
                         optimizer=npc.Adam(cfg.lr))  # fmt: skip
    vae = VAE.from_simulator(sim0)
    vae_curve, vae_s = fit_epochs(
        vae, cfg, xtr, lambda m: evaluate(m, xte_bin, real, weights, cfg, seed)[0], "VAE"
    )
    results["vae"] = {"curve": vae_curve, "epoch_seconds": vae_s}
    # (a) + (b): the LPC arms (the Jeffreys arm evaluated every epoch)
    for obj in (*OBJECTIVES, None):
        each = lpc_eval if obj == "jeffreys" else None
        sim, curve, secs = train_lpc(
            cfg, xtr, obj, seed, backend, each, recordings if obj == "jeffreys" else None
        )
        final, samples = evaluate(sim, xte_bin, real, weights, cfg, seed)
        if obj is None:
            final.pop("elbo"), final.pop("iwae")  # no encoder: no q to bound with
        results["arms"][obj or "no_encoder"] = {"final": final, "curve": curve,
                                                "epoch_seconds": secs}  # fmt: skip
        if obj == "jeffreys":
            results["samples_lpc"] = samples[:64]
    results["samples_vae"] = evaluate(vae, xte_bin, real, weights, cfg, seed)[1][:64]
    results["sweep"] = step_size_sweep(cfg, xtr, seed, backend)
    return results


def summarise(res: dict) -> dict:
    lpc, vae = res["arms"]["jeffreys"], res["vae"]
    vf = vae["curve"][-1]
    hit = [r["iterations"] for r in lpc["curve"] if r["fid"] <= vf["fid"]]
    m = {
        "fid_lpc": lpc["final"]["fid"], "fid_vae": vf["fid"],
        "coverage_lpc": lpc["final"]["coverage"], "coverage_vae": vf["coverage"],
        "elbo_lpc": lpc["final"]["elbo"], "elbo_vae": vf["elbo"],
        "iwae_lpc": lpc["final"]["iwae"], "iwae_vae": vf["iwae"],
        "iters_lpc_to_vae_fid": hit[0] if hit else None, "iters_vae": vf["iterations"],
        "eta_max_stable_precond": res["sweep"]["eta_max_stable_precond"],
        "eta_max_stable_plain": res["sweep"]["eta_max_stable_plain"],
        "lpc_epoch_seconds": lpc["epoch_seconds"], "vae_epoch_seconds": vae["epoch_seconds"],
    }  # fmt: skip
    m["lpc_over_vae_epoch"] = m["lpc_epoch_seconds"] / m["vae_epoch_seconds"]
    for arm in (*OBJECTIVES, "no_encoder"):
        m[f"fid_lpc_{arm}"] = res["arms"][arm]["final"]["fid"]
    return m


def _options(ap) -> None:
    ap.add_argument(
        "--full",
        action="store_true",
        help="the whole protocol: 30 epochs, 300 Langevin steps, 3 seeds (hours)",
    )
    ap.add_argument("--data", choices=("auto", "mnist"), default="auto",
                    help="auto: Fashion-MNIST when installed, else the embedded MNIST")  # fmt: skip


# the numba backend's BLAS threads and torch's pool (the encoder, the VAE, the bounds) must not
# spin against each other on a small machine: torch runs on one thread
@torch_threads(1)
def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="langevin_pc", extra=_options)
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    data = load_data(cfg, "mnist" if args.quick else args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = [
        run_seed(cfg, args.seed + s, args.backend, data, args.recordings if s == 0 else None)
        for s in range(cfg.seeds)
    ]
    summaries = [summarise(r) for r in per_seed]
    metrics = {k: v for k, v in summaries[0].items()}
    if cfg.seeds > 1:  # --full: the mean over seeds, and each seed's values
        for k in metrics:
            vals = [s[k] for s in summaries]
            if all(isinstance(v, (int, float)) for v in vals):
                metrics[k] = float(np.mean(vals))
        metrics["per_seed"] = summaries
    metrics.update(data=data[0], seed=args.seed, seeds=cfg.seeds, backend=args.backend,
                   quick=args.quick, full=args.full, seconds=time.perf_counter() - t0,
                   nullable=list(NULLABLE))  # fmt: skip
    saved = {"config": asdict(cfg), "metrics": metrics,
             "results": [{k: v for k, v in r.items() if not k.startswith("samples")}
                         for r in per_seed]}  # fmt: skip
    (args.out / "langevin_pc.json").write_text(json.dumps(saved, default=_plain, indent=1))
    np.savez_compressed(args.out / "langevin_pc_samples.npz", lpc=per_seed[0]["samples_lpc"],
                        vae=per_seed[0]["samples_vae"])  # fmt: skip
    wrote(args.out / "langevin_pc.json")
    return report(metrics, args)


def _plain(v):
    """numpy scalars for ``json.dumps`` (floats, NaN included, it writes itself)."""
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))


if __name__ == "__main__":
    run_main(main)
