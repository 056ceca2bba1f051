"""Independent oracles for the model tests (test_oddball, test_representations, test_models_quick).

Nothing here calls :mod:`neuropc.analysis.measures`, :mod:`neuropc.model.energy` or a backend: every quantity is
recomputed from its written definition with numpy / scipy (or torch autograd of an energy written
out here), so that a test comparing the model's numbers with these is a comparison of two
implementations, and thresholds are derived from the data (chance levels, null distributions)
rather than read off the model's output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import stats

import neuropc as npc


# ---- capturing the simulators a model script builds ---------------------------------------------
@contextlib.contextmanager
def capture_simulators() -> Iterator[list]:
    """Within the block, every ``npc.Simulator(...)`` a model builds is appended to the yielded
    list (the model scripts call ``npc.Simulator`` through the module attribute), so a test can
    read the trained parameters after ``main()`` returned."""
    import pytest

    made: list = []
    real = npc.Simulator

    class Capturing(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(npc, "Simulator", Capturing)
        yield made


# ---- chance levels -------------------------------------------------------------------------------
def chance_threshold(labels: np.ndarray, alpha: float = 1e-3) -> float:
    """Smallest accuracy on ``len(labels)`` trials that a classifier at chance reaches with
    probability at most ``alpha``: the binomial threshold of Combrisson & Jerbi (2015, J Neurosci
    Methods 250:126, "Exceeding chance level by chance"), with the chance rate taken as the larger
    of 1/K and the majority-class rate of ``labels`` (always guessing the commonest class)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    n = int(counts.sum())
    p0 = max(1.0 / len(counts), counts.max() / n)
    k = int(stats.binom.isf(alpha, n, p0)) + 1  # P(X >= k) <= alpha
    assert stats.binom.sf(k - 1, n, p0) <= alpha < stats.binom.sf(k - 2, n, p0)
    return k / n


# ---- decoding ------------------------------------------------------------------------------------
def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class index (sorted labels) and fold of each trial, by the documented rule: each class's
    trials, permuted with ``default_rng(seed)`` class by class in sorted order, are dealt
    round-robin to the folds, continuing where the previous class stopped."""
    _, index = np.unique(np.asarray(labels), return_inverse=True)
    index = index.reshape(-1)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(index), dtype=int)
    dealt = 0
    for k in range(index.max() + 1):
        members = rng.permutation(np.flatnonzero(index == k))
        fold[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return index, fold


def ridge_decode(data: np.ndarray, labels: np.ndarray, folds: int = 5, ridge: float = 1.0,
                 seed: int = 0, steps: list[int] | None = None) -> np.ndarray:  # fmt: skip
    """Cross-validated accuracy per step of a one-vs-rest ridge least-squares classifier on
    ``data`` ``(trial, step, unit)``: per training fold, features standardised with the fold's
    mean and (population) sd (sd 0 -> 1), then the augmented normal equations
    ``([Z 1]^T [Z 1] + diag(ridge, ..., ridge, 0)) theta = [Z 1]^T Y`` (bias unpenalised) on
    one-hot targets; prediction ``argmax [z 1] theta``. Returns the accuracy at each of ``steps``
    (default: every step)."""
    index, fold = stratified_folds(labels, folds, seed)
    onehot = np.eye(index.max() + 1)[index]
    x = np.asarray(data, dtype=np.float64)
    n, n_steps, p = x.shape
    steps = list(range(n_steps)) if steps is None else list(steps)
    penalty = np.diag(np.r_[np.full(p, float(ridge)), 0.0])
    correct = np.zeros(len(steps))
    for i, t in enumerate(steps):
        for f in range(folds):
            tr, te = fold != f, fold == f
            mu, sd = x[tr, t].mean(axis=0), x[tr, t].std(axis=0)
            sd[sd == 0] = 1.0
            a = np.hstack([(x[tr, t] - mu) / sd, np.ones((tr.sum(), 1))])
            theta = np.linalg.solve(a.T @ a + penalty, a.T @ onehot[tr])
            b = np.hstack([(x[te, t] - mu) / sd, np.ones((te.sum(), 1))])
            correct[i] += np.count_nonzero((b @ theta).argmax(axis=1) == index[te])
    return correct / n


def majority_rule_accuracy(labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of guessing, in each test fold, the commonest class of the
    training fold: what any classifier of standardised features returns when the features are
    constant (they standardise to 0 and only the bias, the class frequencies, is left)."""
    index, fold = stratified_folds(labels, folds, seed)
    hits = 0
    for f in range(folds):
        guess = np.argmax(np.bincount(index[fold != f], minlength=index.max() + 1))
        hits += np.count_nonzero(index[fold == f] == guess)
    return hits / len(index)


# ---- representational similarity ----------------------------------------------------------------
def condition_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows: the mean pattern of each label, in sorted label order."""
    labels = np.asarray(labels)
    return np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)]).astype(np.float64)


def correlation_rdm(patterns: np.ndarray) -> np.ndarray:
    """``1 - Pearson r`` between rows (numpy's corrcoef)."""
    return 1.0 - np.corrcoef(np.asarray(patterns, dtype=np.float64))


def rdm_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of the upper off-diagonal triangles: Pearson r of their ranks."""
    iu = np.triu_indices(len(a), k=1)
    return float(np.corrcoef(stats.rankdata(a[iu]), stats.rankdata(b[iu]))[0, 1])


def rdm_permutation_p(a: np.ndarray, b: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> float:
    """One-sided p-value of :func:`rdm_spearman` ``(a, b)`` under the condition-label
    randomisation test of RSA (Kriegeskorte et al. 2008, Front Syst Neurosci 2:4; Nili et al.
    2014, PLoS Comput Biol 10:e1003553): rows and columns of ``a`` permuted together,
    ``p = (1 + #{rho_perm >= rho}) / (1 + n_perm)``."""
    n = len(a)
    iu = np.triu_indices(n, k=1)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, n)), axis=1)
    rb = stats.rankdata(b[iu])
    rb = (rb - rb.mean()) / np.linalg.norm(rb - rb.mean())
    ra = stats.rankdata(a[perms[:, iu[0]], perms[:, iu[1]]], axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    ra /= np.linalg.norm(ra, axis=1, keepdims=True)
    null = ra @ rb
    return float((1 + np.count_nonzero(null >= rdm_spearman(a, b) - 1e-12)) / (1 + n_perm))


# ---- feed-forward pass of the MLP classifiers ---------------------------------------------------
def gelu_tanh(a: np.ndarray) -> np.ndarray:
    """GELU, tanh form: ``0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))``."""
    return 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a**3)))


def mlp_feedforward(params: dict, x: np.ndarray, layers: list[str]) -> np.ndarray:
    """``mu_out`` of ``layers[0] -> ... -> layers[-1]`` (GELU hidden, linear input) in float64:
    the state a forward-initialised PC network with only its input clamped starts in, and stays
    in (every error is zero there, so dF/dx = 0)."""
    a = np.asarray(x, dtype=np.float64)
    for i, (pre, post) in enumerate(zip(layers[:-1], layers[1:])):
        a = (a if i == 0 else gelu_tanh(a)) @ params[f"{pre}->{post}"].T + params[f"{post}:bias"]
    return a


def argmax_accuracy_bounds(
    scores: np.ndarray, labels: np.ndarray, tol: float
) -> tuple[float, float]:
    """Accuracy of ``argmax scores`` on ``labels``, as the interval it can take when every score
    may be off by ``tol`` (trials whose top two scores are within ``2 tol`` may flip)."""
    top2 = np.sort(scores, axis=1)[:, -2:]
    unsure = (top2[:, 1] - top2[:, 0]) <= 2 * tol
    right = scores.argmax(axis=1) == np.asarray(labels)
    n = len(right)
    return np.count_nonzero(right & ~unsure) / n, np.count_nonzero(right | unsure) / n


# ---- the generative oddball network, in numpy ---------------------------------------------------
def tone_bumps(n_units: int, n_tones: int, width: float) -> np.ndarray:
    """``(n_tones, n_units)``: Gaussian bumps of sd ``width`` at ``linspace(3.5, n_units - 4.5)``."""
    centres = np.linspace(3.5, n_units - 4.5, n_tones)
    u = np.arange(n_units)
    return np.exp(-0.5 * ((u[None, :] - centres[:, None]) / width) ** 2)


def oddball_network(latent: int, hidden: int, n_units: int) -> npc.Network:
    """``z`` (linear, prior mean) -> ``h1`` (tanh, no bias) -> ``obs`` (input), unit precisions."""
    net = npc.Network()
    net.population("z", latent, activation="linear")
    net.population("h1", hidden, activation="tanh", bias=False)
    net.population("obs", n_units, role="input", bias=False)
    net.connect("z", "h1")
    net.connect("h1", "obs")
    return net


def run_generative(params: tuple[np.ndarray, np.ndarray, np.ndarray], stimuli: np.ndarray,
                   steps: int, rate: float, lr: float, trace: bool = False):  # fmt: skip
    """Online learning of ``F = |z - b|^2/2 + |h - W1 z|^2/2 + |x - W2 tanh h|^2/2`` in float64,
    one stimulus ``x`` per trial: forward initialisation ``z = b, h = W1 z``, ``steps`` steps of
    gradient descent ``z -= rate dF/dz, h -= rate dF/dh`` (hand-derived gradients), then one SGD
    step ``theta -= lr dF/dtheta`` at the final state. ``params = (W1, W2, b)``. Returns the final
    parameters and, with ``trace``, the errors ``(e_z, e_h, e_x)`` of every trial at every step
    ``0..steps``, arrays ``(trial, step, unit)``."""
    w1, w2, b = (np.array(p, dtype=np.float64) for p in params)
    n = len(stimuli)
    out = [np.empty((n, steps + 1, m)) for m in (len(b), w1.shape[0], w2.shape[0])] if trace else []
    for i, x in enumerate(np.asarray(stimuli, dtype=np.float64)):
        z = b.copy()
        h = w1 @ z
        for t in range(steps + 1):
            th = np.tanh(h)
            ez, eh, ex = z - b, h - w1 @ z, x - w2 @ th
            if trace:
                out[0][i, t], out[1][i, t], out[2][i, t] = ez, eh, ex
            if t < steps:
                z, h = z - rate * (ez - w1.T @ eh), h - rate * (eh - (1.0 - th * th) * (w2.T @ ex))
        # dF/dW1 = -eh z^T, dF/dW2 = -ex tanh(h)^T, dF/db = -ez
        w1 += lr * np.outer(eh, z)
        w2 += lr * np.outer(ex, th)
        b += lr * ez
    return (w1, w2, b), out


# ---- PNG figures --------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pixels_of_colour(path: Path, colour: str) -> int:
    """How many pixels of the PNG have exactly the matplotlib colour ``colour``."""
    import matplotlib.image as mpimg
    from matplotlib.colors import to_rgb

    rgb = mpimg.imread(path)[..., :3]
    return int(
        np.count_nonzero(np.all(np.abs(rgb - np.array(to_rgb(colour))) < 0.5 / 255, axis=-1))
    )


def load_script(name: str, path: Path):
    """Import the script at ``path`` as module ``name`` (once per process), to read the
    constants it declares (e.g. the colours of its figures)."""
    import importlib.util
    import sys

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


# ---- optimisers: torch.optim as the oracle of every update rule (test_optim, test_parameter_state)
OPTIMIZER_SETTINGS = [
    npc.SGD(lr=0.1),
    npc.SGD(lr=0.05, momentum=0.9),
    npc.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    npc.SGD(lr=0.05, momentum=0.7, dampening=0.3),
    npc.Adam(lr=1e-2),
    npc.Adam(lr=3e-3, betas=(0.8, 0.95), weight_decay=1e-2),
    npc.AdamW(lr=3e-3, weight_decay=0.1),
]


def torch_optimizer(opt, p):
    """The torch.optim optimiser with the settings of neuropc's ``opt``, over the tensor ``p``."""
    import torch

    if isinstance(opt, npc.SGD):
        return torch.optim.SGD([p], lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                               nesterov=opt.nesterov, dampening=opt.dampening)  # fmt: skip
    cls = torch.optim.AdamW if opt.decoupled else torch.optim.Adam
    return cls([p], lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
