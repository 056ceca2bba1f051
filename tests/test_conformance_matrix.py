"""Backend conformance over every mode, distribution and optimiser, taken pairwise.

The factors below (inference mode, output distribution, hidden distribution, optimiser, frozen
parameters) have 9 * 8 * 6 * 6 * 2 = 5184 combinations (mode ``amortised``: an encoder warm-starts
the hidden population and learns); the Gaussian levels include a fixed
non-unit precision and precision parameters learned across batches (diagonal, gradient rule) and
re-estimated at every step (scalar, EMA, ``timescale="fast"``). A covering array holds every *pair* of
levels of two factors in at least one case (``test_covering_array_holds_every_valid_pair``); each
case runs on every backend against the numba reference in float64, on the network
``input(5) -> hidden(4, tanh) -> output(3)`` plus the skip ``input -> output``:

* deterministic modes: ``gradients()`` (every mode that has an end-of-inference gradient) and three
  ``learn()`` batches; the states (values, errors, per-step energies), the gradients and the
  parameters agree to 1e-10 (relative to the array's scale), as in
  ``tests/test_backend_conformance.py``;
* Langevin noise (``temperature > 0``): the backends draw their noise from different generators
  (numpy's inside the numba kernel, ``torch.Generator`` on the torch device), so noisy runs are not
  compared path by path across backends. What the library does guarantee is checked: on each backend
  a run is reproducible from the seed, the noise added by one step is ``sqrt(2 rate T) N(0, 1)`` on
  the free units and nothing on the clamped ones, the noise-free skeleton (same case at ``T = 0``)
  agrees with numba to 1e-10, and the compiled torch backend draws the eager one's stream and agrees
  with it to 1e-10;
* frozen parameters (``input->output`` with ``trainable=False``, the hidden bias with
  ``trainable_bias=False``) get a zero gradient and stay bit for bit unchanged under every
  optimiser, weight decay and momentum included, and under iPC's per-step updates.

Combinations refused by design are left out of the covering array (see :func:`valid`); the refusal
itself is checked in ``test_refused_combinations_are_refused``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import BACKEND_PARAMS, COMPILED_PARAMS
from test_oracle_gradients import random_parameters

import neuropc as npc

TOL = 1e-10
DTYPE = "float64"
OTHERS = [p for p in BACKEND_PARAMS if p.values[0]["backend"] != "numba"]
BATCH = 6
FROZEN_W, FROZEN_B = "input->output", "hidden:bias"

# ---- the factors and their levels -------------------------------------------------------------
FACTORS: dict[str, tuple[str, ...]] = {
    "mode": (
        "strict",
        "fpa",
        "zil",
        "ipc",
        "nudge",
        "leaky",
        "langevin",
        "langevin-ipc",
        "amortised",
    ),
    "output": (
        "gauss",
        "gauss-prec",
        "gauss-learn",
        "gauss-fast",
        "bern-F",
        "bern-KL",
        "cat-F",
        "cat-KL",
    ),
    "hidden": ("gauss", "gauss-prec", "gauss-learn", "gauss-fast", "bern-KL", "cat-F"),
    "optimizer": ("sgd", "momentum", "nesterov", "adam", "adamw", "sgd-wd"),
    "frozen": ("trainable", "frozen"),
}
NAMES = tuple(FACTORS)
GAUSSIAN_LEVELS = ("gauss", "gauss-prec", "gauss-learn", "gauss-fast")
LEARNED = ("gauss-learn", "gauss-fast")  # precision parameters with a rule
NOISY = ("langevin", "langevin-ipc")

INFERENCE = {
    "strict": npc.Inference(steps=5, rate=0.1),
    "fpa": npc.Inference(mode="fpa", steps=5, rate=0.2),
    # Z-IL: rate 1, forward init; the hidden population is 1 step from the target (the skip comes
    # from the clamped input, so the graph counts as levelled)
    "zil": npc.Inference(mode="zil", steps=2, rate=1.0),
    "ipc": npc.Inference(mode="ipc", steps=5, rate=0.1),
    "nudge": npc.Inference(steps=5, rate=0.1, nudge=0.5),
    "leaky": npc.Inference(steps=5, rate=0.1, errors="leaky"),
    "langevin": npc.Inference(steps=5, rate=0.1, temperature=0.05),
    "langevin-ipc": npc.Inference(mode="ipc", steps=5, rate=0.1, temperature=0.05),
    # an encoder input -> hidden (Jeffreys) starts the hidden chain from a draw of q and learns
    # after each batch: it runs on the host, so the backends must agree on it to 1e-10 as well
    "amortised": npc.Inference(steps=5, rate=0.1, init="amortised"),
}
LR = 0.05
OPTIMIZERS = {
    "sgd": npc.SGD(LR),
    "momentum": npc.SGD(LR, momentum=0.9),
    "nesterov": npc.SGD(LR, momentum=0.9, nesterov=True),
    "adam": npc.Adam(LR),
    "adamw": npc.AdamW(LR, weight_decay=0.1),
    "sgd-wd": npc.SGD(LR, weight_decay=0.01),
}
DISTRIBUTIONS = {
    "gauss": npc.Gaussian(),
    "gauss-prec": None,  # a Gaussian with a non-unit precision (see PRECISION)
    # precision parameters (from PRECISION) learned across batches, and re-estimated per step
    "gauss-learn": None,
    "gauss-fast": None,
    "bern-F": npc.Bernoulli("F"),
    "bern-KL": npc.Bernoulli("KL"),
    "cat-F": npc.Categorical("F"),
    "cat-KL": npc.Categorical("KL"),
}
PRECISION = {"output": (0.5, 2.0, 1.5), "hidden": 2.0}  # per unit / scalar


def valid(case: dict[str, str]) -> bool:
    """The combinations the library accepts. Refused by design (``neuropc/dynamics/modes.py``):

    * Z-IL, nudging and leaky error neurons are defined for Gaussian populations only
      (``_check_distributions``): with them, output and hidden must be Gaussian;
    * Z-IL needs unit precision on free populations: not with a hidden ``gauss-prec``,
      ``gauss-learn`` or ``gauss-fast`` (the output is clamped while learning, so its precision
      may differ from 1);
    * leaky error neurons do not combine with a fast precision;
    * iPC (weights learning during inference) does not combine with a learned precision yet;
    * an amortised encoder's targets are Gaussian (the hidden population).

    Langevin noise in modes fpa / zil is refused too; the mode levels hold it with strict and iPC.
    """
    if case["mode"] in ("zil", "nudge", "leaky") and not (
        case["output"] in GAUSSIAN_LEVELS and case["hidden"] in GAUSSIAN_LEVELS
    ):
        return False
    if case["mode"] == "zil" and case["hidden"] != "gauss":
        return False
    if case["mode"] == "leaky" and "gauss-fast" in (case["output"], case["hidden"]):
        return False
    if case["mode"] == "amortised" and case["hidden"] not in GAUSSIAN_LEVELS:
        return False
    return not (case["mode"] in ("ipc", "langevin-ipc") and {case["output"], case["hidden"]} &
                set(LEARNED))  # fmt: skip


def _pairs(case: dict[str, str]) -> set[tuple[str, str, str, str]]:
    return {(f, case[f], g, case[g]) for f, g in itertools.combinations(NAMES, 2)}


ALL_VALID = [
    dict(zip(NAMES, levels))
    for levels in itertools.product(*FACTORS.values())
    if valid(dict(zip(NAMES, levels)))
]
VALID_PAIRS = set().union(*(_pairs(c) for c in ALL_VALID))


def covering_array() -> list[dict[str, str]]:
    """A deterministic greedy all-pairs set: repeatedly take the first valid combination (in
    product order) that covers the most pairs not yet covered, until every valid pair is."""
    todo = set(VALID_PAIRS)
    pairs = [_pairs(c) for c in ALL_VALID]
    out = []
    while todo:
        best = max(range(len(ALL_VALID)), key=lambda i: (len(pairs[i] & todo), -i))
        out.append(ALL_VALID[best])
        todo -= pairs[best]
    return out


MATRIX = covering_array()


def _id(case: dict[str, str]) -> str:
    return "-".join(case[f] for f in NAMES)


# ---- building and running a case --------------------------------------------------------------
def build(case: dict[str, str]) -> npc.Network:
    net = npc.Network()
    net.population("input", 5, role="input")
    hid_kw = _kw(case["hidden"], PRECISION["hidden"])
    net.population(
        "hidden", 4, activation="tanh", trainable_bias=case["frozen"] != "frozen", **hid_kw
    )
    out_kw = _kw(case["output"], PRECISION["output"])
    net.population("output", 3, role="target", **out_kw)
    net.connect("input", "hidden")
    net.connect("hidden", "output")
    net.connect("input", "output", trainable=case["frozen"] != "frozen")
    if case["mode"] == "amortised":
        net.encoder("input", ["hidden"], hidden=(3,))
    return net


def _kw(level: str, pi) -> dict:
    """A population's distribution keywords for ``level``."""
    if level == "gauss-prec":
        return {"precision": pi}
    if level == "gauss-learn":  # a diagonal precision learned by gradient across batches
        prec = npc.Precision("diag", learn="gradient", init=pi, lr=0.1)
    elif level == "gauss-fast":  # a scalar precision re-estimated by EMA at every step
        prec = npc.Precision("scalar", learn="ema", init=2.0, decay=0.3, timescale="fast")
    else:
        return {"distribution": DISTRIBUTIONS[level]}
    return {"distribution": npc.Gaussian(precision=prec)}


def simulator(case: dict[str, str], be: dict, seed: int, temperature: float | None = None):
    inf = INFERENCE[case["mode"]]
    if temperature is not None:
        inf = inf.replace(temperature=temperature)
    net = build(case)
    sim = npc.Simulator(
        net, **be, dtype=DTYPE, seed=seed, inference=inf, optimizer=OPTIMIZERS[case["optimizer"]]
    )
    sim.load_parameters(random_parameters(net, np.random.default_rng(seed + 77)))
    return sim


def data(case: dict[str, str], seed: int, batch: int = BATCH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (batch, 5))
    kind = case["output"].split("-")[0]
    if kind == "bern":  # probabilities
        y = rng.random((batch, 3))
    elif kind == "cat":  # one-hot
        y = np.eye(3)[rng.integers(0, 3, batch)]
    else:
        y = rng.normal(0.0, 1.0, (batch, 3))
    return {"input": x, "output": y}


def _scaled(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(
        np.max(np.abs(a - b), initial=0.0) / max(1.0, float(np.max(np.abs(b), initial=0.0)))
    )


def run(sim: npc.Simulator, case: dict[str, str], seed: int) -> list:
    """What a case compares: the gradients (modes that have them) and three learning batches."""
    out: list = []
    if case["mode"] not in ("ipc", "langevin-ipc"):  # iPC has no end-of-inference gradient
        st, g = sim.gradients(data(case, seed))
        out.append(("gradients", st, g))
    for i in range(3):
        out.append((f"learn {i}", sim.learn(data(case, seed + 1 + i)), None))
    out.append(("parameters", None, sim.parameters()))
    return out


def assert_same(ra: list, rb: list, tol: float) -> None:
    """``rb`` (backend under test) agrees with ``ra`` (reference) to ``tol``."""
    assert [r[0] for r in ra] == [r[0] for r in rb]
    for (what, sa, ga), (_, sb, gb) in zip(ra, rb):
        if sa is not None:
            assert sa.steps == sb.steps, what
            for table in ("values", "errors", "energies"):
                ta, tb = getattr(sa, table), getattr(sb, table)
                assert ta.keys() == tb.keys(), (what, table)
                for n in ta:
                    assert _scaled(tb[n], ta[n]) <= tol, (what, table, n, _scaled(tb[n], ta[n]))
        if ga is not None:
            assert ga.keys() == gb.keys(), what
            for k in ga:
                assert _scaled(gb[k], ga[k]) <= tol, (what, k, _scaled(gb[k], ga[k]))


def assert_frozen(case: dict[str, str], result: list, start: dict[str, np.ndarray]) -> None:
    """Frozen parameters: a zero gradient and bit for bit unchanged; the others did learn."""
    end = result[-1][2]
    frozen = case["frozen"] == "frozen"
    for what, _, g in result[:-1]:
        if g is not None and frozen:
            assert not np.any(g[FROZEN_W]) and not np.any(g[FROZEN_B]), what
    for k in start:
        same = np.array_equal(end[k], start[k])
        assert same == (frozen and k in (FROZEN_W, FROZEN_B)), (k, "frozen" if frozen else "moved")


# ---- the covering array -----------------------------------------------------------------------
def test_covering_array_holds_every_valid_pair() -> None:
    """Every pair of levels that some accepted combination holds is in some case; every level of
    every factor is used; nothing refused is in the array; and it is deterministic."""
    covered = set().union(*(_pairs(c) for c in MATRIX))
    assert VALID_PAIRS <= covered
    assert all(valid(c) for c in MATRIX)
    for f, levels in FACTORS.items():
        assert {c[f] for c in MATRIX} == set(levels), f
    # the pairs left out are exactly those that only refused combinations hold: Z-IL, nudging
    # and leaky errors with a non-Gaussian output or hidden population, Z-IL with hidden precision
    every = {
        (f, a, g, b)
        for f, g in itertools.combinations(NAMES, 2)
        for a in FACTORS[f]
        for b in FACTORS[g]
    }
    gaussian_only = ("zil", "nudge", "leaky")
    refused = (
        {
            ("mode", m, "output", o)
            for m in gaussian_only
            for o in FACTORS["output"]
            if o not in GAUSSIAN_LEVELS
        }
        | {
            ("mode", m, "hidden", h)
            for m in gaussian_only
            for h in FACTORS["hidden"]
            if h not in GAUSSIAN_LEVELS
        }
        | {("mode", "zil", "hidden", h) for h in ("gauss-prec", *LEARNED)}
        | {("mode", "leaky", f, "gauss-fast") for f in ("output", "hidden")}
        | {
            ("mode", m, f, lv)
            for m in ("ipc", "langevin-ipc")
            for f in ("output", "hidden")
            for lv in LEARNED
        }
        | {
            ("mode", "amortised", "hidden", h)
            for h in FACTORS["hidden"]
            if h not in GAUSSIAN_LEVELS
        }
    )
    assert every - VALID_PAIRS == refused and len(refused) == 12 + 6 + 3 + 2 + 8 + 2
    assert covering_array() == MATRIX
    # at least the most valid pairs of two factors (mode x optimiser, output x hidden: 48)
    assert 48 <= len(MATRIX) <= 66


@pytest.mark.parametrize(
    "case",
    [
        {"mode": "zil", "output": "bern-F", "hidden": "gauss"},
        {"mode": "nudge", "output": "cat-KL", "hidden": "gauss"},
        {"mode": "leaky", "output": "gauss", "hidden": "bern-KL"},
        {"mode": "zil", "output": "gauss", "hidden": "gauss-prec"},
        {"mode": "zil", "output": "gauss", "hidden": "gauss-learn"},
        {"mode": "leaky", "output": "gauss-fast", "hidden": "gauss"},
        {"mode": "ipc", "output": "gauss-learn", "hidden": "gauss"},
        {"mode": "amortised", "output": "gauss", "hidden": "cat-F"},
    ],
    ids=lambda c: "-".join(c.values()),
)
def test_refused_combinations_are_refused(case: dict[str, str]) -> None:
    """What :func:`valid` leaves out, the library refuses (ValueError naming the reason)."""
    case = {**case, "optimizer": "sgd", "frozen": "trainable"}
    assert not valid(case)
    with pytest.raises(ValueError, match="Gaussian|unit precision|fast precision|does not combine"):
        simulator(case, {"backend": "numba"}, 0).learn(data(case, 1))


# ---- every case on every backend against numba ------------------------------------------------
CASES = [
    pytest.param(o.values[0], c, id=f"{o.id}-{_id(c)}", marks=o.marks)
    for o in OTHERS
    for c in MATRIX
]


@pytest.mark.parametrize(("other", "case"), CASES)
def test_matrix_case_agrees_with_numba(other: dict, case: dict[str, str]) -> None:
    seed = MATRIX.index(case)
    if case["mode"] in NOISY:
        _check_noisy(other, case, seed)
        return
    a, b = simulator(case, {"backend": "numba"}, seed), simulator(case, other, seed)
    start = a.parameters()
    ra, rb = run(a, case, seed), run(b, case, seed)
    assert_same(ra, rb, TOL)
    assert_frozen(case, ra, start)
    assert_frozen(case, rb, start)


def _check_noisy(other: dict, case: dict[str, str], seed: int) -> None:
    temp = INFERENCE[case["mode"]].temperature
    # the noise-free skeleton agrees with numba
    a0, b0 = simulator(case, {"backend": "numba"}, seed, 0.0), simulator(case, other, seed, 0.0)
    assert_same(run(a0, case, seed), run(b0, case, seed), TOL)
    for be in ({"backend": "numba"}, other):
        # reproducible from the seed, frozen parameters untouched by the noisy updates
        s1, s2 = simulator(case, be, seed), simulator(case, be, seed)
        start = s1.parameters()
        r1, r2 = run(s1, case, seed), run(s2, case, seed)
        # bit for bit on the CPU; a GPU's reductions are not promised to be bitwise reproducible
        assert_same(r1, r2, 0.0 if be.get("device") in (None, "cpu") else 1e-12)
        assert_frozen(case, r1, start)
        # the noise really is there: the learned parameters differ from the noise-free run's
        quiet = run(simulator(case, be, seed, 0.0), case, seed)[-1][2]
        assert _scaled(r1[-1][2]["hidden->output"], quiet["hidden->output"]) > 1e-6
        # one step from the forward state: noisy minus noise-free is sqrt(2 rate T) N(0, 1) on the
        # free populations (test phase: hidden and output) and 0 on the clamped input
        inf = INFERENCE[case["mode"]].replace(steps=1, seed=11)
        d = {"input": data(case, seed, 1000)["input"]}
        x1 = s1.infer(d, inference=inf)
        x0 = s1.infer(d, inference=inf.replace(temperature=0.0))
        assert np.array_equal(x1.values["input"], x0.values["input"])
        xi = np.concatenate(
            [(x1.values[n] - x0.values[n]).ravel() for n in ("hidden", "output")]
        ) / np.sqrt(2 * inf.rate * temp)
        assert abs(xi.mean()) < 0.05 and abs(xi.std() - 1) < 0.05, (xi.mean(), xi.std())


# ---- the compiled torch backend: one case per mode --------------------------------------------
COMPILED_CASES = [
    pytest.param(o.values[0], c, id=f"{o.id}-{_id(c)}", marks=o.marks)
    for o in COMPILED_PARAMS
    for c in [next(c for c in MATRIX if c["mode"] == m) for m in FACTORS["mode"]]
]


@pytest.mark.parametrize(("other", "case"), COMPILED_CASES)
def test_compiled_case_agrees(other: dict, case: dict[str, str]) -> None:
    """Deterministic modes against numba; Langevin against the eager torch backend on the same
    device, which draws the same noise stream (README: compiled matches eager with noise)."""
    seed = MATRIX.index(case)
    ref = {"backend": "numba"}
    if case["mode"] in NOISY:
        ref = {"backend": "torch", "device": other["device"]}
    a, b = simulator(case, ref, seed), simulator(case, other, seed)
    start = a.parameters()
    ra, rb = run(a, case, seed), run(b, case, seed)
    assert_same(ra, rb, TOL)
    assert_frozen(case, rb, start)
