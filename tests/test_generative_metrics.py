"""Generative metrics (neuropc.analysis.generative) against closed forms and constructed sets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from neuropc.analysis import generative as gm


def test_frechet_distance_between_known_gaussians() -> None:
    """Diagonal (commuting) covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2; a general pair
    against the eigendecomposition form tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)."""
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert gm.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, 1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.sum(np.sqrt(np.linalg.eigvalsh(r1 @ s2 @ r1)))
    want = np.trace(s1) + np.trace(s2) - 2 * cross
    assert gm.frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(want, 1e-10)
    assert gm.frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0, abs=1e-12)


def test_fid_of_two_samples_of_one_gaussian_is_small_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3))
    assert gm.fid(a, b) < 0.01
    assert gm.fid(a, b + [2.0, 0, 0]) == pytest.approx(4.0, abs=0.05)


def test_iwae_on_a_linear_gaussian_model() -> None:
    """z ~ N(0, 1), x | z ~ N(w z, s^2): log p(x) = log N(x; 0, w^2 + s^2). With q = the exact
    posterior every weight is p(x), so ELBO = IWAE = log p(x); with another q, ELBO <= IWAE_k
    <= log p(x), IWAE rises with K, and the ELBO equals its closed form."""
    w, s, x = 1.5, 0.5, np.array([0.3, -1.2, 2.0])
    logpx = norm.logpdf(x, 0, np.sqrt(w * w + s * s))
    pv = s * s / (w * w + s * s)  # posterior variance; posterior mean pv w x / s^2
    pm = pv * w * x / (s * s)
    rng = np.random.default_rng(2)

    def log_w(qm, qv, k):
        z = qm[:, None] + np.sqrt(qv) * rng.standard_normal((len(x), k))
        return (norm.logpdf(z, 0, 1) + norm.logpdf(x[:, None], w * z, s)
                - norm.logpdf(z, qm[:, None], np.sqrt(qv)))  # fmt: skip

    exact = log_w(pm, pv, 16)
    np.testing.assert_allclose(gm.elbo(exact), logpx, atol=1e-12)
    np.testing.assert_allclose(gm.iwae(exact), logpx, atol=1e-12)
    qm, qv = pm + 0.4, 2.0 * pv  # a worse q
    # ELBO closed form: E_q[log p(z) + log p(x|z)] + H(q)
    ez2 = qm**2 + qv
    e = (-0.5 * np.log(2 * np.pi) - 0.5 * ez2
         - 0.5 * np.log(2 * np.pi * s * s) - (x**2 - 2 * w * x * qm + w * w * ez2) / (2 * s * s)
         + 0.5 * np.log(2 * np.pi * np.e * qv))  # fmt: skip
    many = log_w(qm, qv, 400_000)
    assert np.all(np.abs(gm.elbo(many) - e) < 0.01)
    # E[IWAE_K] rises with K towards log p(x): means over 2000 replicates per point
    reps = 2000
    means = []
    for k in (1, 10, 100):
        b = np.stack([gm.iwae(log_w(qm, qv, k)) for _ in range(reps)])
        means.append(b.mean(0))
    assert np.all(means[0] < means[1]) and np.all(means[1] < means[2])
    assert np.all(means[2] < logpx) and np.all(logpx - means[2] < 0.05)


def test_prdc_on_constructed_point_sets() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(400, 2))
    same = gm.prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0  # every fake point is in its own ball and its neighbours'
    far = gm.prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # fakes copy exactly the left half of the real points: every fake lies in a real ball
    # (precision 1), and a real ball is covered iff its point is in the left half or it has a
    # left-half point within its radius
    half = real[real[:, 0] < 0]
    got = gm.prdc(real, half, k=5)
    d = np.sqrt(((real[:, None] - half[None]) ** 2).sum(-1))
    radius = np.sort(np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1)), axis=1)[:, 5]
    assert got["precision"] == 1.0
    assert got["coverage"] == pytest.approx(float((d.min(1) <= radius).mean()), abs=1e-12)
    assert 0.5 < got["coverage"] < 0.75
    with pytest.raises(ValueError, match="k must be in"):
        gm.prdc(real[:3], half[:3], k=5)


def test_sample_grid_places_each_image() -> None:
    imgs = np.arange(5 * 6, dtype=float).reshape(5, 6)  # five 2 x 3 images
    g = gm.sample_grid(imgs, 2, 3, shape=(2, 3), pad=1, fill=-1.0)
    assert g.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(g[0:2, 4:7], imgs[1].reshape(2, 3))  # row 0, column 1
    np.testing.assert_array_equal(g[3:5, 0:3], imgs[3].reshape(2, 3))  # row 1, column 0
    assert np.all(g[3:5, 8:11] == -1.0) and np.all(g[2] == -1.0)  # the missing sixth, the pad
    with pytest.raises(ValueError, match="rows, cols >= 1"):
        gm.sample_grid(imgs, 0, 3, shape=(2, 3))
