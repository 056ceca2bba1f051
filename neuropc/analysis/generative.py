"""Metrics of generative models (issue 12, item 5): likelihood bounds and sample quality.

Likelihood bounds, from log importance weights ``log w_k = log p(x, z_k) - log q(z_k | x)`` of
``K`` samples ``z_k ~ q(. | x)`` per data point (the caller computes them for its model):

* ``elbo``: ``mean_k log w_k``, whose expectation is the evidence lower bound;
* ``iwae``: ``log (1/K sum_k w_k)`` (Burda et al. 2016), a tighter bound that rises to
  ``log p(x)`` as ``K`` grows; with many samples it is the importance-sampled ``log p(x)``.

Sample quality, on feature vectors (rows) of real and generated data:

* ``frechet_distance``: ``|mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)``, the
  squared 2-Wasserstein distance between two Gaussians; ``fid`` applies it to the means and
  covariances of two feature sets (FID when the features are an Inception network's; here a
  classifier trained on the same data);
* ``prdc``: precision, recall, density and coverage (Naeem et al. 2020) with ``k`` nearest
  neighbours: a real point's ball has the radius of its k-th nearest real neighbour; precision
  is the fraction of fake points inside some real ball, recall the fraction of real points
  inside some fake ball (radii from the fakes), density ``1/(k M) sum_fake #(real balls
  containing it)``, coverage the fraction of real balls that contain at least one fake point.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.special import logsumexp


def elbo(log_w: np.ndarray) -> np.ndarray:
    """``mean_k log w_k`` per data point; ``log_w`` is ``(N, K)``."""
    return np.mean(np.asarray(log_w, np.float64), axis=1)


def iwae(log_w: np.ndarray) -> np.ndarray:
    """``log (1/K sum_k exp(log w_k))`` per data point, computed stably; ``log_w`` ``(N, K)``."""
    log_w = np.asarray(log_w, np.float64)
    return logsumexp(log_w, axis=1) - np.log(log_w.shape[1])


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """The Fréchet (2-Wasserstein squared) distance between N(mu1, s1) and N(mu2, s2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(s1).astype(np.float64), np.atleast_2d(s2).astype(np.float64)
    with warnings.catch_warnings():
        # singular covariances are common (features that never fire): sqrtm warns, yet its
        # result is accurate to round-off there (the tests check known Gaussians)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        r1 = linalg.sqrtm(s1)
        cross = linalg.sqrtm(r1 @ s2 @ r1)
    if np.iscomplexobj(cross):  # round-off in a (near) singular product
        cross = cross.real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * cross))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets (rows)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0),
                            np.cov(fake, rowvar=False))  # fmt: skip


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d, 0.0))


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    d = _distances(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (Naeem et al. 2020;
    see the module docstring). ``k`` must be below both set sizes."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"prdc: k must be in [1, {min(len(real), len(fake)) - 1}]; got {k}")
    r_real, r_fake = _radii(real, k), _radii(fake, k)
    d = _distances(real, fake)  # (N real, M fake)
    inside = d <= r_real[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum() / (k * len(fake))),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }


def sample_grid(
    images: np.ndarray,
    rows: int,
    cols: int,
    shape: tuple[int, int] = (28, 28),
    pad: int = 1,
    fill: float = 1.0,
) -> np.ndarray:
    """Tile the first ``rows * cols`` images (rows of ``shape[0] * shape[1]`` pixels, or arrays of
    ``shape``) into one ``(rows (h + pad) - pad, cols (w + pad) - pad)`` array, row-major, with
    ``pad`` pixels of ``fill`` between them; missing images are left as ``fill``. For figures:
    ``plt.imshow(sample_grid(sim.sample(64)["image"], 8, 8), cmap="gray")``."""
    h, w = shape
    images = np.asarray(images, np.float64).reshape(-1, h, w)
    if rows < 1 or cols < 1 or pad < 0:
        raise ValueError(f"sample_grid: rows, cols >= 1 and pad >= 0; got {rows}, {cols}, {pad}")
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), fill)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return out
