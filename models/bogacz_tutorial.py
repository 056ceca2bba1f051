"""Bogacz (2017), "A tutorial on the free-energy framework for modelling perception and learning",
J Math Psychol 76:198-211: exercises 1, 2, 3 and 5, plus a Langevin check of the posterior.

The toy problem: an organism infers the size ``v`` of a food item from the light intensity ``u`` it
reflects. Generative model (all Sigma are *variances*)::

    prior       v ~ N(v_p = 3, Sigma_p = 1)
    likelihood  u ~ N(g(v), Sigma_u = 1),  g(v) = v^2,  observed u = 2

In neuropc terms this is a two-population network (see :func:`build_network`):

* ``"v"``: 1 unit, role hidden, activation ``square`` (f(v) = v^2), with a bias ``b = v_p = 3``.
  A root population with a bias has the prior mean ``mu_v = b`` and an error population
  ``eps_p = (v - v_p) / Sigma_p`` (precision 1 / Sigma_p = 1).
* ``"u"``: 1 unit, role input (clamped to u = 2 in every phase), no bias, precision
  1 / Sigma_u = 1; its prediction is ``mu_u = W f(v) = v^2`` through the fixed connection
  ``v -> u`` with ``W = 1``, and its error is ``eps_u = (u - v^2) / Sigma_u``.

The energy is ``F = (v - v_p)^2 / (2 Sigma_p) + (u - v^2)^2 / (2 Sigma_u)`` (the negative log joint
up to a constant), and neuropc's inference step ``v <- v - rate dF/dv`` is the tutorial's Euler step
with ``DT = rate``.

Exercise 1 (exact posterior). ``p(v | u) = p(v) p(u | v) / p(u)``, on the tutorial's grid
``v = 0.01:0.01:5`` normalised by ``sum(numerator) * 0.01`` (mode 1.57, mean 1.485 on that grid),
and on the whole real line by fine quadrature (mean 1.480, sd 0.342). Computed with numpy.

Exercise 2 (MAP by gradient ascent on -F, the paper's eq. 8)::

    dphi/dt = (v_p - phi) / Sigma_p + (u - g(phi)) / Sigma_u * g'(phi),   phi(0) = v_p

Run with the library: ``Inference(rate=DT, init="forward")`` (forward init puts ``v`` at its prior
mean 3). ``phi -> 1.567``, settled within about 0.5 time units.

Exercise 3 (the network with error nodes, eqs 12-14)::

    dphi/dt   = eps_u g'(phi) - eps_p
    deps_p/dt = phi - v_p - Sigma_p eps_p
    deps_u/dt = u - g(phi) - Sigma_u eps_u

with ``phi(0) = v_p``, ``eps_p(0) = eps_u(0) = 0``: the library's leaky error neurons
(``Inference(errors="leaky")``, ``eps <- eps + DT ((x - mu) - eps / Pi)``). At T = 5: phi = 1.552
(still approaching 1.567 after a dip to about 0.89 at t = 0.84), eps_p = -1.430, eps_u = -0.442;
the errors converge to their instant values eps_p = (phi - v_p) / Sigma_p, eps_u = (u - g(phi)) /
Sigma_u.

Step count. The tutorial's MATLAB listings integrate with ``phi(1) = v_p; for i = 2:MAXT/DT``,
i.e. ``MAXT / DT - 1 = 499`` Euler steps, and plot ``phi(i)`` at ``t = i DT``, so the value shown at
t = 5 is the state after 499 steps (exact time 4.99). The paper's numbers (1.552, -1.430, -0.442)
are those of 499 steps, so this script uses :data:`TUTORIAL_STEPS` = 499 for the headline numbers
and reports the 500-step state (exact t = 5) as extra metrics (``*_t5``); both agree within 0.001.

Posterior sampling (Langevin predictive coding). With ``temperature = 1`` every inference step is
an Euler-Maruyama step of the overdamped Langevin equation ``dv = -F'(v) dt + sqrt(2) dW``, whose
stationary density is the posterior ``exp(-F) / Z``. Many independent chains (one batch row per
copy of ``u = 2``) start at the prior mean, run a burn-in, then continue in chunks of
:data:`SAMPLE_EVERY` steps with ``init="given"`` (the simulator draws a fresh noise seed per call);
the value after each chunk is one sample. Their mean and sd must match the exact 1.480 and 0.342.
The Monte Carlo standard errors are computed from the spread of the per-chain estimates (the
chains are independent). With rate 1e-3 the Euler-Maruyama bias of the sd is below 0.001.

Exercise 5 (learning the variance with an inhibitory interneuron, eqs 59-60). An error node ``eps``
and an interneuron ``e``::

    deps/dt = phi - g(phi_above) - e,       de/dt = Sigma eps - e,

settle to ``e = phi - phi_above``, ``eps = (phi - phi_above) / Sigma``; after each trial
``Delta Sigma = alpha (eps e - 1)``, whose fixed point is ``Sigma = E[(phi - phi_above)^2]``. Trials
draw ``phi ~ N(5, 2)`` with ``phi_above = 5`` (g linear), 2000 trials, Sigma(1) = 1: Sigma
converges to about 2. Here the library's own learnable precision does it: a population clamped to
each trial's ``phi``, with the prior mean ``phi_above`` and ``npc.Precision("scalar",
learn="gradient")``, which steps ``Pi = 1 / Sigma`` down the energy's gradient
``1/2 ((phi - phi_above)^2 - Sigma)`` after every trial. The fixed point is the tutorial's
(``Sigma = E[(phi - phi_above)^2]``); the step is on ``Pi`` rather than on ``Sigma``, so the
learning rate differs (0.01 on ``Pi``, against alpha = 0.01 on ``Sigma``).

Run as ``python models/bogacz_tutorial.py [--quick] [--json] [--seed N] [--backend numba]
[--out DIR]``. ``--quick`` only shortens the posterior sampling (exercises 1, 2, 3 and 5 are
identical). It prints one line per exercise as it finishes. Figures (PNG) go to ``--out`` when
matplotlib is installed, and their absolute paths are printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc import Inference, Network, Simulator
from neuropc.runner import (
    ScriptRecordings,
    print_progress,
    report,
    run_main,
    script_args,
    wrote,
)

# ---- the tutorial's constants ----------------------------------------------------------------
V_P = 3.0  # prior mean of v
SIGMA_P = 1.0  # prior variance
SIGMA_U = 1.0  # sensory noise variance
U_OBS = 2.0  # observed light intensity
DT = 0.01
MAXT = 5.0
TUTORIAL_STEPS = round(MAXT / DT) - 1  # 499: the MATLAB loop `for i = 2:MAXT/DT`
FULL_STEPS = round(MAXT / DT)  # 500: exact t = MAXT

# Langevin sampling
LANGEVIN_RATE = 1e-3
SAMPLE_EVERY = 100

# exercise 5
EX5_MEAN_PHI = 5.0
EX5_SIGMA_PHI = 2.0
EX5_PHI_ABOVE = 5.0
EX5_TRIALS = 2000
EX5_LRATE = 0.01  # on Pi = 1 / Sigma
EX5_SIGMA0 = 1.0


# ---- the model ---------------------------------------------------------------------------------
def build_network() -> Network:
    """``v`` (prior N(v_p, Sigma_p), f = v^2) predicts the clamped input ``u`` with W = 1."""
    net = Network()
    net.population(
        "v", 1, activation="square", role="hidden", precision=1.0 / SIGMA_P, bias=True,
        bias_init=V_P,
    )  # fmt: skip
    net.population("u", 1, role="input", precision=1.0 / SIGMA_U, bias=False)
    net.connect("v", "u", init="ones", trainable=False)
    return net


def make_simulator(
    backend: str = "numba", seed: int = 0, recordings: ScriptRecordings | None = None
) -> Simulator:
    """The tutorial's simulator; ``recordings`` (a script's ``--record``) records its runs."""
    sim = Simulator(build_network(), backend=backend, dtype="float64", seed=seed)
    if recordings is not None:
        recordings.attach(sim)
    return sim


def log_joint(v: np.ndarray) -> np.ndarray:
    """log p(v) + log p(u | v), i.e. -F up to a constant."""
    v = np.asarray(v, dtype=np.float64)
    return -((v - V_P) ** 2) / (2 * SIGMA_P) - (U_OBS - v**2) ** 2 / (2 * SIGMA_U)


def _normpdf(x: np.ndarray, mean: np.ndarray | float, var: float) -> np.ndarray:
    return np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)


# ---- exercise 1 --------------------------------------------------------------------------------
def exercise1() -> dict:
    """Exact posterior on the tutorial's grid and, by quadrature, on the real line."""
    v = np.arange(1, 501) * 0.01  # 0.01:0.01:5
    numerator = _normpdf(v, V_P, SIGMA_P) * _normpdf(U_OBS, v**2, SIGMA_U)
    p = numerator / (np.sum(numerator) * 0.01)
    mean_grid = float(np.sum(v * p) * 0.01)
    # the real line: outside [-6, 8] the density is below e^-25 of its peak, so a Riemann sum on a
    # fine uniform grid is the trapezoid rule (the end points are ~0) and accurate to ~1e-10
    x = np.linspace(-6.0, 8.0, 140_001)
    dx = x[1] - x[0]
    w = np.exp(log_joint(x) - log_joint(x).max())
    z = np.sum(w) * dx
    mean = float(np.sum(x * w) * dx / z)
    sd = float(np.sqrt(np.sum((x - mean) ** 2 * w) * dx / z))
    return {
        "v": v,
        "p": p,
        "mode_grid": float(v[np.argmax(p)]),
        "mean_grid": mean_grid,
        "x": x,
        "density": w / z,
        "exact_mean": mean,
        "exact_sd": sd,
        "exact_map": _map_estimate(),
        "mass_below_zero": float(np.sum(w[x < 0]) * dx / z),
    }


def _map_estimate() -> float:
    """The posterior mode: the real root of ``dF/dv = (v - v_p) / Sigma_p - 2 v (u - v^2) /
    Sigma_u = 0`` (times ``Sigma_p Sigma_u``: a cubic) with the largest log joint."""
    cubic = [2 * SIGMA_P, 0.0, SIGMA_U - 2 * SIGMA_P * U_OBS, -SIGMA_U * V_P]
    roots = np.roots(cubic)
    real = roots[np.abs(roots.imag) < 1e-9].real
    return float(real[np.argmax(log_joint(real))])


# ---- exercise 2 --------------------------------------------------------------------------------
def exercise2(
    backend: str = "numba", seed: int = 0, recordings: ScriptRecordings | None = None
) -> dict:
    """MAP estimate by gradient descent on F (plain PC inference, instant errors)."""
    sim = make_simulator(backend, seed, recordings)
    data = {"u": [[U_OBS]]}
    st = sim.infer(data, phase="test", inference=Inference(steps=TUTORIAL_STEPS, rate=DT))
    phi = float(st["v"][0, 0])
    st5 = sim.infer(data, phase="test", inference=Inference(steps=FULL_STEPS, rate=DT))
    # trajectory: continue the state one step per call
    one = Inference(steps=1, rate=DT, init="given")
    traj = [V_P]
    cur = np.array([[V_P]])
    for _ in range(FULL_STEPS):
        cur = sim.infer(data, phase="test", values={"v": cur}, inference=one)["v"]
        traj.append(float(cur[0, 0]))
    traj = np.array(traj)
    return {
        "phi": phi,
        "phi_t5": float(st5["v"][0, 0]),
        "t": np.arange(FULL_STEPS + 1) * DT,
        "phi_traj": traj,
        "chunked_vs_direct": float(abs(traj[TUTORIAL_STEPS] - phi)),
    }


# ---- exercise 3 --------------------------------------------------------------------------------
def exercise3(
    backend: str = "numba", seed: int = 0, recordings: ScriptRecordings | None = None
) -> dict:
    """The network with leaky error nodes (eqs 12-14).

    Leaky error neurons restart at 0 on every call, so a run cannot be continued in chunks; the
    trajectory re-runs the whole integration for every step count k = 0..500 (cheap)."""
    sim = make_simulator(backend, seed, recordings)
    data = {"u": [[U_OBS]]}
    phi, eps_p, eps_u = [], [], []
    for k in range(FULL_STEPS + 1):
        st = sim.infer(data, phase="test", inference=Inference(steps=k, rate=DT, errors="leaky"))
        phi.append(float(st["v"][0, 0]))
        eps_p.append(float(st["v:error"][0, 0]))
        eps_u.append(float(st["u:error"][0, 0]))
    phi, eps_p, eps_u = np.array(phi), np.array(eps_p), np.array(eps_u)
    t = np.arange(FULL_STEPS + 1) * DT
    k = TUTORIAL_STEPS
    i_min = int(np.argmin(phi))
    return {
        "phi": phi[k],
        "eps_p": eps_p[k],
        "eps_u": eps_u[k],
        "phi_t5": phi[-1],
        "eps_p_t5": eps_p[-1],
        "eps_u_t5": eps_u[-1],
        "phi_min": float(phi[i_min]),
        "t_min": float(t[i_min]),
        "t": t,
        "phi_traj": phi,
        "eps_p_traj": eps_p,
        "eps_u_traj": eps_u,
    }


# ---- posterior sampling ------------------------------------------------------------------------
def posterior_sampling(
    backend: str = "numba",
    seed: int = 0,
    *,
    chains: int = 4000,
    steps: int = 20_000,
    burn_in: int = 2_000,
    every: int = SAMPLE_EVERY,
    recordings: ScriptRecordings | None = None,
) -> dict:
    """Langevin PC (temperature 1): ``chains`` parallel chains from the prior mean, ``steps`` steps
    in all at rate 1e-3; after ``burn_in`` steps one sample per chain every ``every`` steps."""
    if burn_in % every or steps % every or burn_in >= steps:
        raise ValueError("burn_in and steps must be multiples of every, with burn_in < steps")
    sim = make_simulator(backend, seed, recordings)
    data = {"u": np.full((chains, 1), U_OBS)}
    cur = np.full((chains, 1), V_P)
    burn = Inference(steps=burn_in, rate=LANGEVIN_RATE, temperature=1.0, init="given")
    cur = sim.infer(data, values={"v": cur}, inference=burn)["v"]
    chunk = Inference(steps=every, rate=LANGEVIN_RATE, temperature=1.0, init="given")
    samples = np.empty(((steps - burn_in) // every, chains))
    for i in range(samples.shape[0]):
        cur = sim.infer(data, values={"v": cur}, inference=chunk)["v"]
        samples[i] = cur[:, 0]
    mean = float(samples.mean())
    sq = ((samples - mean) ** 2).mean(axis=0)  # per-chain variance about the pooled mean
    var = float(sq.mean())
    sd = float(np.sqrt(var))
    se_mean = float(samples.mean(axis=0).std(ddof=1) / np.sqrt(chains))
    se_sd = float(sq.std(ddof=1) / np.sqrt(chains) / (2 * sd))
    return {
        "mean": mean,
        "sd": sd,
        "se_mean": se_mean,
        "se_sd": se_sd,
        "chains": chains,
        "n_samples": int(samples.size),
        "samples": samples.ravel(),
    }


# ---- exercise 5 --------------------------------------------------------------------------------
def exercise5(seed: int = 0, trials: int = EX5_TRIALS) -> dict:
    """Learning Sigma through the library's learnable precision: one learning batch per trial."""
    rng = np.random.default_rng(seed)
    phis = rng.normal(EX5_MEAN_PHI, np.sqrt(EX5_SIGMA_PHI), trials - 1)
    net = Network()
    prec = npc.Precision("scalar", learn="gradient", init=1.0 / EX5_SIGMA0, lr=EX5_LRATE)
    net.population("phi", 1, role="input", bias=True, bias_init=EX5_PHI_ABOVE,
                   trainable_bias=False, distribution=npc.Gaussian(precision=prec))  # fmt: skip
    sim = Simulator(net, dtype="float64", optimizer=npc.SGD(0.0), inference=Inference(steps=0))
    sigma = np.empty(trials)
    sigma[0] = EX5_SIGMA0
    for k, phi in enumerate(phis, start=1):
        sim.learn({"phi": np.array([[phi]])}, state=False)
        sigma[k] = 1.0 / float(sim.precision("phi"))
    return {"sigma": sigma, "sigma_last_half": float(sigma[trials // 2 :].mean())}


# ---- figures -----------------------------------------------------------------------------------
def make_plots(out: Path, ex1: dict, ex2: dict, ex3: dict, post: dict, ex5: dict) -> list[str]:
    """Write the PNG figures into ``out`` and print their absolute paths; returns their file
    names (empty without matplotlib). ``v``, ``u`` and time are in the tutorial's arbitrary
    units (a.u.); every reference line is in a legend, placed off the data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the figures")
        return []
    from neuropc.analysis.plotting import save_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    time_label = f"time (a.u.; Euler steps of DT = {DT})"
    ref = dict(ls=":", c="gray", lw=1.2)

    def figure() -> tuple:
        return plt.subplots(figsize=(5.6, 3.6), layout="constrained")

    def save(fig, name: str) -> None:
        wrote(save_png(fig, out / name, dpi=100))
        written.append(name)

    fig, ax = figure()
    ax.plot(ex1["v"], ex1["p"], "k", label="p(v | u = 2), grid 0.01:0.01:5")
    ax.axvline(ex1["mode_grid"], **ref, label=f"mode {ex1['mode_grid']:.2f}")
    ax.set(xlabel="v, food size (a.u.)", ylabel="posterior density (1 / a.u.)",
           title="Exercise 1: exact posterior (u = 2)")  # fmt: skip
    ax.legend(loc="upper right", fontsize=8)
    save(fig, "ex1_posterior.png")

    fig, ax = figure()
    ax.plot(ex2["t"], ex2["phi_traj"], "k", label="φ (gradient ascent on -F)")
    ax.axhline(ex1["exact_map"], **ref, label=f"exact MAP {ex1['exact_map']:.3f}")
    ax.set(xlabel=time_label, ylabel="φ, estimate of v (a.u.)",
           title=f"Exercise 2: MAP by gradient ascent (φ → {ex2['phi']:.3f})")  # fmt: skip
    ax.legend(loc="upper right", fontsize=8)
    save(fig, "ex2_map.png")

    fig, ax = figure()
    phi = ex1["exact_map"]  # the fixed point: phi at the MAP, errors at their instant values
    fixed = [phi, (phi - V_P) / SIGMA_P, (U_OBS - phi**2) / SIGMA_U]
    ax.plot(ex3["t"], ex3["phi_traj"], "k-", label="φ")
    ax.plot(ex3["t"], ex3["eps_p_traj"], "k--", label="ε_p")
    ax.plot(ex3["t"], ex3["eps_u_traj"], "k-.", label="ε_u")
    for i, v in enumerate(fixed):
        ax.axhline(v, **ref, label="fixed points\n(φ = MAP)" if i == 0 else None)
    ax.set(xlabel=time_label, ylabel="node activity (a.u.)",
           title="Exercise 3: network with error nodes")  # fmt: skip
    fig.legend(loc="outside right center", fontsize=8)
    save(fig, "ex3_error_nodes.png")

    fig, ax = figure()
    ax.hist(post["samples"], bins=120, range=(-0.5, 2.5), density=True, color="0.75",
            label=f"Langevin PC ({post['n_samples']} samples)")  # fmt: skip
    ax.plot(ex1["x"], ex1["density"], "k", label="exact posterior")
    ax.set(xlim=(-0.5, 2.5), xlabel="v, food size (a.u.)", ylabel="density (1 / a.u.)",
           title="Posterior sampling (u = 2)")  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "posterior_samples.png")

    fig, ax = figure()
    ax.plot(np.arange(1, ex5["sigma"].size + 1), ex5["sigma"], "k", label="learned Σ")
    ax.axhline(EX5_SIGMA_PHI, **ref, label=f"true variance of φ ({EX5_SIGMA_PHI:g})")
    ax.set(xlabel="trial", ylabel="Σ, variance estimate (a.u.²)",
           title="Exercise 5: learning the variance")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    save(fig, "ex5_variance.png")
    return written


# ---- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = script_args(
        "Bogacz (2017) free-energy tutorial: exercises 1, 2, 3, 5 and Langevin posterior sampling",
        argv,
        name="bogacz_tutorial",
    )
    t0 = time.perf_counter()
    ex1 = exercise1()
    print_progress(
        "exercise 1 (exact posterior)", {"mean": ex1["exact_mean"], "sd": ex1["exact_sd"]}
    )
    t = time.perf_counter()
    ex2 = exercise2(args.backend, args.seed, args.recordings)
    print_progress("exercise 2 (MAP)", {"phi": ex2["phi"], "seconds": time.perf_counter() - t})
    t = time.perf_counter()
    ex3 = exercise3(args.backend, args.seed, args.recordings)
    print_progress("exercise 3 (error nodes)", {"phi": ex3["phi"], "eps_p": ex3["eps_p"],
                                                "eps_u": ex3["eps_u"],
                                                "seconds": time.perf_counter() - t})  # fmt: skip
    t = time.perf_counter()
    if args.quick:
        post = posterior_sampling(args.backend, args.seed, chains=2000, steps=8000, burn_in=1000,
                                  recordings=args.recordings)  # fmt: skip
    else:
        post = posterior_sampling(args.backend, args.seed, recordings=args.recordings)
    print_progress("Langevin sampling", {"mean": post["mean"], "sd": post["sd"],
                                         "seconds": time.perf_counter() - t})  # fmt: skip
    t = time.perf_counter()
    ex5 = exercise5(args.seed)
    print_progress("exercise 5 (variance)", {"sigma": ex5["sigma_last_half"],
                                             "seconds": time.perf_counter() - t})  # fmt: skip
    figures = make_plots(args.out, ex1, ex2, ex3, post, ex5)
    metrics = {
        "phi_ex2": ex2["phi"],
        "phi_ex3": ex3["phi"],
        "eps_p_ex3": ex3["eps_p"],
        "eps_u_ex3": ex3["eps_u"],
        "sigma_ex5": ex5["sigma_last_half"],
        "posterior_mean": post["mean"],
        "posterior_sd": post["sd"],
        # extras
        "posterior_se_mean": post["se_mean"],
        "posterior_se_sd": post["se_sd"],
        "posterior_chains": post["chains"],
        "posterior_samples": post["n_samples"],
        "exact_mean": ex1["exact_mean"],
        "exact_sd": ex1["exact_sd"],
        "ex1_mode_grid": ex1["mode_grid"],
        "ex1_mean_grid": ex1["mean_grid"],
        "phi_ex2_t5": ex2["phi_t5"],
        "phi_ex3_t5": ex3["phi_t5"],
        "eps_p_ex3_t5": ex3["eps_p_t5"],
        "eps_u_ex3_t5": ex3["eps_u_t5"],
        "ex2_chunked_vs_direct": ex2["chunked_vs_direct"],
        "exact_mass_below_zero": ex1["mass_below_zero"],
        "ex3_phi_min": ex3["phi_min"],
        "ex3_t_min": ex3["t_min"],
        "figures": figures,
        "seconds": time.perf_counter() - t0,
    }
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
