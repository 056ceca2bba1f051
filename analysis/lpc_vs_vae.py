"""Figures of Langevin PC against the VAE (``models/langevin_pc.py``).

    python analysis/lpc_vs_vae.py [runs/langevin_pc] [--out DIR]

Reads ``langevin_pc.json`` and ``langevin_pc_samples.npz`` from the run folder and draws, into
``--out`` (default: the run folder):

* ``lpc_vs_vae_curves.png``: FID-like, coverage and ELBO (nats per image, the model's encoder
  as q) of LPC (Jeffreys encoder) and of the VAE after every epoch, against SGD iterations
  (minibatches; the two models take the same number per epoch);
* ``lpc_objectives.png``: the final FID-like of each encoder objective and of no encoder, with
  the VAE's as a line;
* ``lpc_step_sizes.png``: the step-size sweep, stable (filled) or not (open), final inference
  energy against ``eta``, with and without the preconditioner;
* ``lpc_samples.png``: 8 x 8 samples of each model (latents drawn, images at their Bernoulli
  means).

Prints the absolute path of every figure, and a table of the headline numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neuropc.analysis.generative import sample_grid
from neuropc.analysis.plotting import save_png
from neuropc.runner import ArgumentParser, check_input_file, run_main, wrote

ROOT = Path(__file__).resolve().parents[1]


def load(run: Path) -> tuple[dict, dict]:
    """``(saved JSON, samples)`` of a ``models/langevin_pc.py`` run folder."""
    saved = json.loads(check_input_file(run / "langevin_pc.json", "run file").read_text())
    with np.load(check_input_file(run / "langevin_pc_samples.npz", "samples file"),
                 allow_pickle=False) as z:  # fmt: skip
        samples = {k: z[k] for k in z.files}
    return saved, samples


def table(saved: dict) -> str:
    m = saved["metrics"]
    rows = [("", "LPC (Jeffreys)", "VAE")]
    for key in ("fid", "coverage", "elbo", "iwae"):
        rows.append((key, f"{m[f'{key}_lpc']:.4g}", f"{m[f'{key}_vae']:.4g}"))
    rows.append(("epoch seconds", f"{m['lpc_epoch_seconds']:.3g}", f"{m['vae_epoch_seconds']:.3g}"))
    return "\n".join(f"{a:<14} {b:>15} {c:>10}" for a, b, c in rows)


def draw(saved: dict, samples: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = saved["results"][0]
    lpc, vae = res["arms"]["jeffreys"]["curve"], res["vae"]["curve"]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ("fid", "coverage", "elbo"),
                              ("FID-like", "coverage", "ELBO (nats/image)")):  # fmt: skip
        for curve, name in ((lpc, "LPC (Jeffreys)"), (vae, "VAE")):
            ax.plot([r["iterations"] for r in curve], [r[key] for r in curve], "o-", label=name)
        ax.set_xlabel("SGD iterations")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle(f"LPC vs VAE, equal decoder ({saved['metrics']['data']})")
    fig.tight_layout()
    paths.append(save_png(fig, out / "lpc_vs_vae_curves.png"))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    arms = ["forward_kl", "reverse_kl", "jeffreys", "no_encoder"]
    ax.bar(arms, [res["arms"][a]["final"]["fid"] for a in arms], color="tab:blue")
    ax.axhline(vae[-1]["fid"], color="tab:orange", label="VAE")
    ax.set_ylabel("FID-like (lower is better)")
    ax.legend()
    fig.tight_layout()
    paths.append(save_png(fig, out / "lpc_objectives.png"))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for pre, color in ((True, "tab:green"), (False, "tab:red")):
        rows = [r for r in res["sweep"]["rows"] if r["precondition"] == pre]
        eta = np.array([r["eta"] for r in rows])
        e = np.array([np.nan if r["final_energy"] is None else r["final_energy"] for r in rows])
        ok = np.array([r["stable"] for r in rows])
        label = "preconditioned" if pre else "plain"
        ax.plot(eta, e, "-", color=color, label=label)
        ax.scatter(eta[ok], e[ok], color=color)
        ax.scatter(eta[~ok], np.where(np.isfinite(e[~ok]), e[~ok], np.nanmax(e)), color=color,
                   facecolors="none")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("symlog")
    ax.set_xlabel("Langevin step size eta")
    ax.set_ylabel("final inference energy")
    ax.legend()
    fig.tight_layout()
    paths.append(save_png(fig, out / "lpc_step_sizes.png"))

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, key, title in zip(axes, ("lpc", "vae"), ("LPC (Jeffreys)", "VAE")):
        ax.imshow(sample_grid(samples[key], 8, 8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    paths.append(save_png(fig, out / "lpc_samples.png"))
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    ap = ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", default=ROOT / "runs" / "langevin_pc",
                    help="the --out folder of models/langevin_pc.py")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    saved, samples = load(args.run)
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    print(table(saved))
    paths = draw(saved, samples, out)
    for p in paths:
        wrote(p)
    return paths


if __name__ == "__main__":
    run_main(main)
