"""Mismatch responses of a generative PC network: oddball, many-standards control and roving.

The network is a three-level generative model of one "tone" on a 1-D tonotopic axis (in the
spirit of SPM's ``DEM_demo_MMN``; all populations have unit precision)::

    z (8, linear, learnable prior mean b_z)  ->  h1 (16, tanh)  ->  obs (32, clamped to the tone)

``mu_h1 = W1 z`` and ``mu_obs = W2 tanh(h1)`` (no biases below the prior), so everything the
network expects is carried by the prior ``b_z`` and the weights. A tone is a Gaussian bump of
width 1.2 units centred on one of 8 evenly spaced frequencies (adjacent bumps overlap a little).
Each trial presents one tone (a batch of 1): inference runs :data:`STEPS` = 40 steps at rate 0.1
from the prior's forward prediction, then one SGD step (lr 0.05) on the local gradients, so the
prior and weights track the recent statistics of the sequence (online learning; SGD has no hidden
state, so the parameters are the whole memory).

Subjects and blocks. A subject is one network: its own initial weights (subject 0: those of
``--seed``), an unrecorded pre-exposure to equiprobable random tones, and its own sequences.
Each of its blocks starts from its pre-exposed state (independent sessions of one listener):

* ``oddball_a``: standard = tone 3, deviant = tone 4; ``oddball_b``: the flip-flop (standard 4,
  deviant 3). Deviants are separated by 3..11 standards (uniform, mean 7): p_dev = 1/8.
* ``control``: many standards. All 8 tones equiprobable (p = 1/8, as the deviant), in
  concatenated random permutations with no immediate repeat.
* ``roving``: trains of 2..10 repetitions of one tone, the next train on a different tone.

The subjects run one after another into one recording (``--quick``: 1 subject, 200 trials per
block; full: 4 subjects, 400). Trial labels (recording columns): ``condition`` (oddball:
standard / deviant; control: control; roving: deviant for the first tone of a train, standard
after), ``stimulus`` (tone index), ``block``, ``repetition`` (position in the current run of
identical tones, from 1), ``position`` (trial index within its block) and ``subject``.

Responses. Each error population is recorded at every step (``Probe(pop, "error")``, with the
default per-step energies, which for batches of one tone equal the quantity below). The response
of population p at lag l (inference step l after tone onset; lag 0 is the prior's prediction
error before any update) is its free energy, the precision-weighted summed squared error

    R_p[l] = sum_u eps_u[l]^2 / (2 Pi_u)       (eps = Pi (x - mu))

and the ERP is its trial average per condition (:func:`neuropc.analysis.measures.erp` on the epochs of the
squared errors, weights ``1 / (2 Pi)``). Compared trials (Parras et al. 2017): DEV = deviants of
both oddball blocks, STD = standards of both, CTR = tones 3 and 4 in the control block, so all
three hold the same two physical tones; the first :attr:`Config.skip` trials of each block
(before the prior has adapted) are left out; subjects are pooled. Reported per population:

* ERP peak amplitude and latency per condition (``erp_peak``, ``erp_latency``); the ordering
  DEV > CTR > STD of the peaks (``ordering``, ``ordering_holds``; ``ordering_per_subject``);
* the difference waves DEV-STD, DEV-CTR, CTR-STD: peak amplitude (``dev_minus_std`` ...) and
  latency (``difference_latency``);
* the Parras indices iMM, iPE, iRS (:func:`neuropc.analysis.measures.mismatch_indices`) of the population
  response, the ERP's mean over lags 0..40 (``response``: a spike count over the window), and
  the mean over units of the per-unit indices (``unit_iMM_mean`` ...). In ``obs`` the unit mean
  of iPE is negative: the diffuse prior of the control block predicts all eight tones, so units
  tuned to the six other tones err more in CTR than in DEV; units tuned to the oddball pair have
  iPE > 0 (``analysis/oddball.py`` plots the profile);
* roving: the repetition-suppression curve (each trial's mean energy over lags, averaged per
  repetition index, :func:`neuropc.analysis.measures.repetition_curve`) and the DEV-STD peak.

Results, seed 0. Full (4 subjects, about 6 s on 2 cores): every population orders
DEV > CTR > STD, in every subject; DEV/CTR = 1.58 / 1.51 / 1.58 and CTR/STD = 28 / 28 / 28 (z /
h1 / obs); iMM 0.83 / 0.81 / 0.83, iPE 0.31 / 0.28 / 0.31, iRS 0.52 / 0.53 / 0.51. Peak
latencies rise up the hierarchy: obs at lag 0, h1 at 1, z at 40 (a sustained response). In the
roving block the response falls to about 0.5-0.6 of the first tone's by the tenth repetition.
Quick (about 2 s, 10 s with a cold numba cache): DEV/CTR 1.51 / 1.55 / 1.55, CTR/STD about 16.
Writes ``oddball.h5`` (the recording) and ``oddball.json`` (metrics and summary) to ``--out``;
``analysis/oddball.py`` draws the figures.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import neuropc as npc
from neuropc.runner import print_progress, report, run_main, script_args, wrote

STEPS = 40
POPULATIONS = ("z", "h1", "obs")  # error populations, top to bottom
CONDITIONS = ("deviant", "control", "standard")
ODDBALL_BLOCKS = ("oddball_a", "oddball_b")
TRIAL_COLUMNS = ("condition", "stimulus", "block", "repetition", "position", "subject")


@dataclass(frozen=True)
class Config:
    """Sizes, learning rate and design of a run (:data:`FULL`, :data:`QUICK`)."""

    n_units: int = 32  # tonotopic axis
    n_tones: int = 8
    width: float = 1.2  # bump sd, in units
    latent: int = 8
    hidden: int = 16
    lr: float = 0.05
    subjects: int = 4  # independent networks (own weights, pre-exposure and sequences)
    pre_trials: int = 2000  # unrecorded pre-exposure to equiprobable tones, per subject
    block_trials: int = 400  # per block (4 blocks per subject)
    skip: int = 40  # first trials of each block left out of the comparisons
    tone_a: int = 3  # the oddball pair (standard of block a, deviant of block b)
    tone_b: int = 4
    gap: tuple[int, int] = (3, 11)  # standards between deviants (inclusive): p_dev = 1/8
    train: tuple[int, int] = (2, 10)  # roving train lengths (inclusive)


FULL = Config()
QUICK = Config(subjects=1, pre_trials=600, block_trials=200, skip=24)


# ---- stimuli and sequences ----------------------------------------------------------------------
def tones_centres(n_units: int, n_tones: int) -> np.ndarray:
    """Tonotopic positions of the tones: evenly spaced from 3.5 to ``n_units - 4.5``."""
    return np.linspace(3.5, n_units - 4.5, n_tones)


def tones(cfg: Config) -> np.ndarray:
    """The stimuli, ``(n_tones, n_units)``: ``exp(-(u - c_k)^2 / (2 width^2))`` at the centres
    ``c_k`` of :func:`tones_centres`."""
    centres = tones_centres(cfg.n_units, cfg.n_tones)
    u = np.arange(cfg.n_units)
    return np.exp(-0.5 * ((u[None, :] - centres[:, None]) / cfg.width) ** 2)


def oddball_sequence(rng: np.random.Generator, n: int, std: int, dev: int,
                     gap: tuple[int, int]) -> list[tuple[int, str, int]]:  # fmt: skip
    """``n`` trials ``(tone, condition, repetition)``: runs of ``gap[0]..gap[1]`` standards
    (uniform), each followed by one deviant."""
    out: list[tuple[int, str, int]] = []
    while len(out) < n:
        run = int(rng.integers(gap[0], gap[1] + 1))
        out += [(std, "standard", k + 1) for k in range(run)] + [(dev, "deviant", 1)]
    return out[:n]


def control_sequence(rng: np.random.Generator, n: int, n_tones: int) -> list[tuple[int, str, int]]:
    """``n`` trials of the many-standards control: concatenated random permutations of all tones,
    re-drawn when a permutation would start with the tone that ended the previous one."""
    seq: list[int] = []
    while len(seq) < n:
        p = rng.permutation(n_tones).tolist()
        if seq and p[0] == seq[-1]:
            continue
        seq += p
    return [(t, "control", 1) for t in seq[:n]]


def roving_sequence(rng: np.random.Generator, n: int, n_tones: int,
                    train: tuple[int, int]) -> list[tuple[int, str, int]]:  # fmt: skip
    """``n`` trials of a roving oddball: trains of ``train[0]..train[1]`` repetitions (uniform) of a
    tone that differs from the previous train's; the first of a train is the deviant."""
    out: list[tuple[int, str, int]] = []
    tone = -1
    while len(out) < n:
        tone = int(rng.choice([t for t in range(n_tones) if t != tone]))
        run = int(rng.integers(train[0], train[1] + 1))
        out += [(tone, "deviant" if k == 0 else "standard", k + 1) for k in range(run)]
    return out[:n]


def network(cfg: Config) -> npc.Network:
    """``z -> h1 -> obs``: a latent prior (learnable mean), a tanh hidden layer, the tone."""
    net = npc.Network()
    net.population("z", cfg.latent, activation="linear")  # root with bias: the prior b_z
    net.population("h1", cfg.hidden, activation="tanh", bias=False)
    net.population("obs", cfg.n_units, role="input", bias=False)
    net.connect("z", "h1")
    net.connect("h1", "obs")
    return net


# ---- analysis of the recording ------------------------------------------------------------------
def comparison_labels(trials: dict, meta: dict) -> np.ndarray:
    """The DEV / STD / CTR label of every trial ("" when it is not compared): oddball-block
    deviants and standards, and the control block's presentations of the oddball tones, all at
    ``position >= skip``."""
    block = trials["block"].astype(str)
    cond = trials["condition"].astype(str)
    late = np.array([int(p) for p in trials["position"]]) >= meta["skip"]
    odd = np.isin(block, meta["oddball_blocks"]) & late
    pair = np.isin(trials["stimulus"].astype(str), [str(t) for t in meta["control_tones"]])
    ctr = (block == meta["control_block"]) & pair & late
    out = np.full(len(block), "", dtype=object)
    out[odd & (cond == "deviant")] = "deviant"
    out[odd & (cond == "standard")] = "standard"
    out[ctr] = "control"
    return out


def population_precision(rec: npc.Recording, pop: str) -> np.ndarray:
    """Per-unit precision of population ``pop``, from the network stored in the recording."""
    for p in rec.config["network"]["populations"]:
        if p["name"] == pop:
            return np.broadcast_to(np.asarray(p["precision"], float), (p["size"],)).copy()
    raise KeyError(pop)


def summarise(path, meta: dict) -> dict:
    """ERPs, difference waves, peaks, mismatch indices and the roving repetition curve, all read
    back from the recording at ``path`` (definitions in the module docstring). Trials of all
    subjects are pooled; ``ordering_per_subject`` repeats the peak ordering per subject."""
    A = npc.analysis
    out: dict = {k: {} for k in ("erp", "erp_peak", "erp_latency", "difference", "response",
                                 "ordering", "ordering_per_subject", "indices", "unit_indices",
                                 "repetition", "roving_dev_minus_std")}  # fmt: skip
    with npc.open(path) as rec:
        trials = rec.trials
        labels = comparison_labels(trials, meta)
        keep = labels != ""
        subject = trials["subject"].astype(str)
        block = trials["block"].astype(str)
        late = np.array([int(p) for p in trials["position"]]) >= meta["skip"]
        rov = (block == meta["roving_block"]) & late
        reps = np.array([int(r) for r in trials["repetition"]])
        for pop in POPULATIONS:
            w = 1.0 / (2.0 * population_precision(rec, pop))
            ep = rec.epochs(f"{pop}:error", (0, meta["steps"] + 1)).values  # (trial, lag, unit)
            sq = ep**2
            waves = A.erp(sq[keep], labels[keep], weights=w)
            out["erp"][pop] = {c: waves[c].tolist() for c in CONDITIONS}
            pk = {c: A.peak(waves[c]) for c in CONDITIONS}
            out["erp_peak"][pop] = {c: pk[c][0] for c in CONDITIONS}
            out["erp_latency"][pop] = {c: pk[c][1] for c in CONDITIONS}
            out["ordering"][pop] = _ordered(out["erp_peak"][pop])
            per_subject = []
            for sub in np.unique(subject):
                m = keep & (subject == sub)
                sw = A.erp(sq[m], labels[m], weights=w)
                per_subject.append(_ordered({c: A.peak(sw[c])[0] for c in CONDITIONS}))
            out["ordering_per_subject"][pop] = per_subject
            diffs = {}
            for name, a, b in (("dev_minus_std", "deviant", "standard"),
                               ("dev_minus_ctr", "deviant", "control"),
                               ("ctr_minus_std", "control", "standard")):  # fmt: skip
                d = A.difference_wave(waves, a, b)
                amp, lat = A.peak(d)
                diffs[name] = {"wave": d.tolist(), "peak": amp, "latency": lat}
            out["difference"][pop] = diffs
            # response magnitude: the ERP's mean over lags (a spike count over the window)
            resp = {c: float(waves[c].mean()) for c in CONDITIONS}
            out["response"][pop] = resp
            idx = A.mismatch_indices(resp["deviant"], resp["standard"], resp["control"])
            out["indices"][pop] = {k: float(v) for k, v in idx.items()}
            per_unit = A.erp_units(sq[keep] * w, labels[keep])  # (lag, unit) per condition
            ur = {c: per_unit[c].mean(axis=0) for c in CONDITIONS}
            uidx = A.mismatch_indices(ur["deviant"], ur["standard"], ur["control"])
            out["unit_indices"][pop] = {k: float(v.mean()) for k, v in uidx.items()}
            out["unit_indices"][pop]["per_unit"] = {k: v.tolist() for k, v in uidx.items()}
            # roving: each trial's mean energy over lags against its repetition index
            k, curve = A.repetition_curve((sq[rov] @ w).mean(axis=1), reps[rov])
            out["repetition"][pop] = {"repetition": k.tolist(), "response": curve.tolist()}
            rwaves = A.erp(sq[rov], trials["condition"].astype(str)[rov], weights=w)
            d = A.difference_wave(rwaves, "deviant", "standard")
            out["roving_dev_minus_std"][pop] = A.peak(d)[0]
        out["n_trials"] = {c: int(np.sum(labels == c)) for c in CONDITIONS}
        odd = np.isin(block, meta["oddball_blocks"])
        out["p_deviant"] = float(np.mean(trials["condition"].astype(str)[odd] == "deviant"))
    return out


def _ordered(peaks: dict) -> bool:
    """DEV > CTR > STD."""
    return bool(peaks["deviant"] > peaks["control"] > peaks["standard"])


def main(argv: list[str] | None = None) -> dict:
    """Pre-expose each subject, run its four blocks with recording, then summarise the
    recording (see the module docstring)."""
    args = script_args(__doc__.splitlines()[0], argv, name="oddball")
    record_to = args.recordings.next_path()  # --record PATH: this script's own recording
    cfg = QUICK if args.quick else FULL
    stim = tones(cfg)
    net = network(cfg)
    meta = {"skip": cfg.skip, "oddball_blocks": list(ODDBALL_BLOCKS), "control_block": "control",
            "control_tones": [cfg.tone_a, cfg.tone_b], "roving_block": "roving", "steps": STEPS,
            "subjects": cfg.subjects, "config": asdict(cfg)}  # fmt: skip
    sim = npc.Simulator(net, backend=args.backend, seed=args.seed,
                        inference=npc.Inference(steps=STEPS, rate=0.1),
                        optimizer=npc.SGD(lr=cfg.lr))  # fmt: skip

    # ---- subjects: own initial weights, pre-exposure and sequences (unrecorded) ----------------
    t0 = time.perf_counter()
    naive, sequences = [], []
    init = sim.parameters()
    for i, ss in enumerate(np.random.SeedSequence(args.seed).spawn(cfg.subjects)):
        t1 = time.perf_counter()
        init_ss, pre_ss, seq_ss = ss.spawn(3)
        if i:  # subject 0 keeps the simulator's own initial weights (from --seed)
            init = npc.Simulator(net, backend=args.backend,
                                 seed=int(init_ss.generate_state(1)[0])).parameters()  # fmt: skip
        sim.load_parameters(init)
        for t in np.random.default_rng(pre_ss).integers(0, cfg.n_tones, cfg.pre_trials):
            sim.learn({"obs": stim[t][None]}, state=False)
        naive.append(sim.parameters())
        sequences.append(make_blocks(cfg, np.random.default_rng(seq_ss)))
        print_progress(f"subject {i + 1}/{cfg.subjects} pre-exposure",
                       {"trials": cfg.pre_trials, "seconds": time.perf_counter() - t1})  # fmt: skip
    pre_seconds = time.perf_counter() - t0

    # ---- the recorded blocks -------------------------------------------------------------------
    args.out.mkdir(parents=True, exist_ok=True)
    path = Path(record_to or args.out / "oddball.h5")
    probes = [npc.Probe(p, "error") for p in POPULATIONS]
    t0 = time.perf_counter()
    with sim.record(path, probes, trial_columns=TRIAL_COLUMNS, metadata=meta):
        for subject, blocks in enumerate(sequences):
            t1 = time.perf_counter()
            for name, seq in blocks.items():
                sim.load_parameters(naive[subject])  # every block: the same pre-exposed listener
                for pos, (tone, cond, rep) in enumerate(seq):
                    row = (cond, tone, name, rep, pos, subject)  # as TRIAL_COLUMNS
                    labels = {k: [v] for k, v in zip(TRIAL_COLUMNS, row)}
                    sim.learn({"obs": stim[tone][None]}, trials=labels, state=False)
            print_progress(f"subject {subject + 1}/{cfg.subjects} recorded blocks",
                           {"trials": sum(map(len, blocks.values())),
                            "seconds": time.perf_counter() - t1})  # fmt: skip
    run_seconds = time.perf_counter() - t0
    s = summarise(path, meta)

    peak, resp = s["erp_peak"], s["response"]
    metrics = {
        "erp_peak": peak,
        "erp_latency": s["erp_latency"],
        **{k: {p: s["difference"][p][k]["peak"] for p in POPULATIONS}
           for k in ("dev_minus_std", "dev_minus_ctr", "ctr_minus_std")},
        "difference_latency": {p: {k: v["latency"] for k, v in s["difference"][p].items()}
                               for p in POPULATIONS},
        "ratio_dev_ctr": {p: peak[p]["deviant"] / peak[p]["control"] for p in POPULATIONS},
        "ratio_ctr_std": {p: peak[p]["control"] / peak[p]["standard"] for p in POPULATIONS},
        "ordering": s["ordering"],
        "ordering_holds": all(s["ordering"].values()),
        "ordering_per_subject": s["ordering_per_subject"],
        "response": resp,
        **{k: {p: s["indices"][p][k] for p in POPULATIONS} for k in ("iMM", "iPE", "iRS")},
        **{f"unit_{k}_mean": {p: s["unit_indices"][p][k] for p in POPULATIONS}
           for k in ("iMM", "iPE", "iRS")},
        "roving_dev_minus_std": s["roving_dev_minus_std"],
        "repetition_curve": {p: s["repetition"][p]["response"] for p in POPULATIONS},
        "n_trials": s["n_trials"],
        "p_deviant": s["p_deviant"],
        "subjects": cfg.subjects,
        "pre_seconds": pre_seconds,
        "run_seconds": run_seconds,
        "recording": str(path),
        "backend": args.backend,
        "quick": args.quick,
    }  # fmt: skip
    (args.out / "oddball.json").write_text(json.dumps({"metrics": metrics, "summary": s}))
    for written in (path, args.out / "oddball.json"):
        wrote(written)
    _print_table(metrics)
    return report(metrics, args)


def make_blocks(cfg: Config, rng: np.random.Generator) -> dict[str, list[tuple[int, str, int]]]:
    """One subject's four block sequences, in presentation order."""
    n = cfg.block_trials
    return {
        "oddball_a": oddball_sequence(rng, n, cfg.tone_a, cfg.tone_b, cfg.gap),
        "oddball_b": oddball_sequence(rng, n, cfg.tone_b, cfg.tone_a, cfg.gap),
        "control": control_sequence(rng, n, cfg.n_tones),
        "roving": roving_sequence(rng, n, cfg.n_tones, cfg.train),
    }


def _print_table(m: dict) -> None:
    """A readable table of the peaks, ratios and indices per population."""
    print(f"{'pop':<5}{'DEV':>9}{'CTR':>9}{'STD':>9}{'DEV/CTR':>9}{'CTR/STD':>9}"
          f"{'iMM':>7}{'iPE':>7}{'iRS':>7}  lat D/C/S")  # fmt: skip
    for p in POPULATIONS:
        pk, lat = m["erp_peak"][p], m["erp_latency"][p]
        print(f"{p:<5}{pk['deviant']:9.4f}{pk['control']:9.4f}{pk['standard']:9.4f}"
              f"{m['ratio_dev_ctr'][p]:9.2f}{m['ratio_ctr_std'][p]:9.1f}{m['iMM'][p]:7.2f}"
              f"{m['iPE'][p]:7.2f}{m['iRS'][p]:7.2f}  {lat['deviant']}/{lat['control']}/"
              f"{lat['standard']}")  # fmt: skip
    print(f"DEV > CTR > STD in every error population: {m['ordering_holds']}")


if __name__ == "__main__":
    run_main(main)
