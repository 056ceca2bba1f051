"""Malformed inputs, by class: each one must raise a clear error where it is given.

"Clear" means: the documented exception type, and a message that names the setting, population,
parameter or file, says what was expected and shows what was given (the regex of each case).
Oracle: each setting's documented domain; the bad value in every case breaks it.

Run as a script (``python tests/test_malformed_inputs.py``) for the per-class tally: clear, unclear
(another exception or message) and accepted (no error).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

import neuropc as npc

NAN, INF = float("nan"), float("inf")
Clear = (ValueError, TypeError)


def _net() -> npc.Network:
    return npc.mlp([3, 2])


def _pop(size: object = 3, **kw: object) -> npc.Population:
    return npc.Network().population("p", size, **kw)


def _gain(g: object, **kw: object) -> npc.Connection:
    net = npc.Network()
    net.population("a", 2)
    net.population("b", 2)
    return net.connect("a", "b", gain=g, **kw)


def _sim(**kw: object) -> npc.Simulator:
    return npc.Simulator(npc.mlp([4, 3, 2]), dtype="float32", seed=0, **kw)


def _d(b: int = 4, **over: object) -> dict:
    rng = np.random.default_rng(0)
    d = {"input": rng.random((b, 4)), "output": np.eye(2)[rng.integers(0, 2, b)]}
    d.update(over)
    return d


def _tmp() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="npc-malformed-"))


def _foreign_h5() -> Path:
    p = _tmp() / "foreign.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    return p


def _text_file() -> Path:
    p = _tmp() / "notes.txt"
    p.write_text("not a checkpoint")
    return p


# (class, label, call, exception types, message regex)
# fmt: off
CASES: list[tuple[str, str, Callable[[], object], tuple, str]] = [
    # ---- optimiser settings ----
    ("optimizer", "Adam eps 0", lambda: npc.Adam(eps=0), Clear, r"Adam.eps must be a finite number > 0; got 0"),
    ("optimizer", "Adam eps < 0", lambda: npc.Adam(eps=-1e-8), Clear, r"Adam.eps must be a finite number > 0"),
    ("optimizer", "Adam eps nan", lambda: npc.Adam(eps=NAN), Clear, r"Adam.eps must be a finite number"),
    ("optimizer", "Adam beta2 1", lambda: npc.Adam(betas=(0.9, 1.0)), Clear, r"Adam.betas\[1\] .* < 1; got 1.0"),
    ("optimizer", "Adam beta1 < 0", lambda: npc.Adam(betas=(-0.1, 0.9)), Clear, r"Adam.betas\[0\] .* >= 0"),
    ("optimizer", "Adam betas scalar", lambda: npc.Adam(betas=0.9), Clear, r"Adam.betas must be a pair"),
    ("optimizer", "Adam betas triple", lambda: npc.Adam(betas=(0.9, 0.9, 0.9)), Clear, r"Adam.betas must be a pair"),
    ("optimizer", "Adam betas string", lambda: npc.Adam(betas="09"), Clear, r"Adam.betas must be a pair"),
    ("optimizer", "Adam weight_decay nan", lambda: npc.Adam(weight_decay=NAN), Clear, r"Adam.weight_decay must be a finite"),
    ("optimizer", "Adam lr string", lambda: npc.Adam(lr="1e-3"), Clear, r"Adam.lr must be a number; got '1e-3'"),
    ("optimizer", "Adam lr inf", lambda: npc.Adam(lr=INF), Clear, r"Adam.lr must be a finite number >= 0"),
    ("optimizer", "Adam lr < 0", lambda: npc.Adam(lr=-1), Clear, r"Adam.lr must be a finite number >= 0"),
    ("optimizer", "Adam decoupled string", lambda: npc.Adam(decoupled="yes"), Clear, r"Adam.decoupled must be True or False"),
    ("optimizer", "AdamW weight_decay inf", lambda: npc.AdamW(weight_decay=INF), Clear, r"Adam.weight_decay must be a finite"),
    ("optimizer", "SGD momentum < 0", lambda: npc.SGD(momentum=-0.5), Clear, r"SGD.momentum must be a finite number >= 0"),
    ("optimizer", "SGD weight_decay nan", lambda: npc.SGD(weight_decay=NAN), Clear, r"SGD.weight_decay must be a finite"),
    ("optimizer", "SGD dampening 2", lambda: npc.SGD(dampening=2), Clear, r"SGD.dampening .* <= 1"),
    ("optimizer", "SGD nesterov no momentum", lambda: npc.SGD(nesterov=True), Clear, r"SGD.nesterov needs momentum > 0"),
    ("optimizer", "SGD lr None", lambda: npc.SGD(lr=None), Clear, r"SGD.lr must be a number; got None"),
    ("optimizer", "SGD lr bool", lambda: npc.SGD(lr=True), Clear, r"SGD.lr must be a number; got True"),
    ("optimizer", "SGD lr list", lambda: npc.SGD(lr=[0.1]), Clear, r"SGD.lr must be a number"),
    ("optimizer", "SGD lr 1e308 (runs)", lambda: _sim(optimizer=npc.SGD(1e308)).learn(_d(b=2, input=np.full((2, 4), 10.0), output=np.full((2, 2), -5.0))), (npc.DivergenceError,), r"the optimiser step diverged .* parameter 'input->h1'"),
    # ---- populations and connections ----
    ("network", "gain nan", lambda: _gain(NAN), Clear, r"connection a->b: gain must be a finite number"),
    ("network", "gain inf", lambda: _gain(INF), Clear, r"connection a->b: gain must be a finite number"),
    ("network", "gain string", lambda: _gain("2"), Clear, r"connection a->b: gain must be a number; got '2'"),
    ("network", "trainable string", lambda: _gain(1.0, trainable="no"), Clear, r"connection a->b: trainable must be True or False; got 'no'"),
    ("network", "slope nan", lambda: _pop(activation="leaky_relu", slope=NAN), Clear, r"'p': slope must be"),
    ("network", "slope string", lambda: _pop(activation="leaky_relu", slope="x"), Clear, r"'p': slope must be a"),
    ("network", "slope on tanh", lambda: _pop(activation="tanh", slope=0.1), Clear, r"'p': activation 'tanh' takes no slope"),
    ("network", "bias_init nan", lambda: _pop(bias_init=NAN), Clear, r"population 'p': bias_init must be finite"),
    ("network", "bias_init inf entry", lambda: _pop(bias_init=[1.0, INF, 0]), Clear, r"'p': bias_init must be finite"),
    ("network", "bias_init string", lambda: _pop(bias_init="0"), Clear, r"'p': bias_init must be a number"),
    ("network", "bias_init wrong length", lambda: _pop(bias_init=[0, 1]), Clear, r"'p': bias_init must be a scalar or have shape \(3,\)"),
    ("network", "precision string", lambda: _pop(precision="1"), Clear, r"'p': precision must be a number"),
    ("network", "precision < 0", lambda: _pop(precision=-1.0), Clear, r"'p': precision must be finite and > 0"),
    ("network", "precision nan", lambda: _pop(precision=NAN), Clear, r"'p': precision must be finite"),
    ("network", "precision None", lambda: _pop(precision=None), Clear, r"'p': precision must be a number"),
    ("network", "size float", lambda: _pop(size=2.0), Clear, r"'p': size must be a positive integer; got 2.0"),
    ("network", "size string", lambda: _pop(size="3"), Clear, r"'p': size must be a positive integer; got '3'"),
    ("network", "size 0", lambda: _pop(size=0), Clear, r"'p': size must be a positive integer; got 0"),
    ("network", "bias string", lambda: _pop(bias="yes"), Clear, r"'p': bias must be True or False"),
    ("network", "activation typo", lambda: _pop(activation="tahn"), Clear, r"'p': unknown activation 'tahn'"),
    ("network", "activation number", lambda: _pop(activation=3), Clear, r"'p': unknown activation 3"),
    ("network", "role typo", lambda: _pop(role="output"), Clear, r"'p': unknown role 'output'"),
    ("network", "name with colon", lambda: npc.Network().population("a:b", 2), Clear, r"population name must be .* got 'a:b'"),
    ("network", "unknown init", lambda: npc.mlp([2, 2], init="glorot"), Clear, r"unknown init 'glorot'"),
    ("network", "cycle", lambda: npc.mlp([2, 2, 2]).connect("output", "input"), Clear, r"cycle"),
    ("network", "mutate population", lambda: setattr(_net()["output"], "precision", 2.0), (AttributeError,), r"cannot assign to field 'precision'"),
    ("network", "update unknown field", lambda: _net().update("output", size=3), Clear, r"population 'output': cannot update size"),
    ("network", "mlp one size", lambda: npc.mlp([3]), Clear, r"mlp needs at least two sizes"),
    # ---- inference settings ----
    ("inference", "steps 1e12", lambda: npc.Inference(steps=10**12), Clear, r"Inference.steps .* <= 10000000; got 1000000000000"),
    ("inference", "steps string", lambda: npc.Inference(steps="20"), Clear, r"Inference.steps must be an integer; got '20'"),
    ("inference", "steps float", lambda: npc.Inference(steps=2.0), Clear, r"Inference.steps must be an integer"),
    ("inference", "steps < 0", lambda: npc.Inference(steps=-1), Clear, r"Inference.steps must be an integer >= 0"),
    ("inference", "rate string", lambda: npc.Inference(rate="0.1"), Clear, r"Inference.rate must be a number"),
    ("inference", "rate nan", lambda: npc.Inference(rate=NAN), Clear, r"Inference.rate must be a finite number >= 0"),
    ("inference", "temperature < 0", lambda: npc.Inference(temperature=-1), Clear, r"Inference.temperature .* >= 0"),
    ("inference", "tol inf", lambda: npc.Inference(tol=INF), Clear, r"Inference.tol must be a finite"),
    ("inference", "error_rate nan", lambda: npc.Inference(error_rate=NAN), Clear, r"Inference.error_rate .* > 0"),
    ("inference", "error_rate 0", lambda: npc.Inference(error_rate=0), Clear, r"Inference.error_rate .* > 0"),
    ("inference", "seed < 0", lambda: npc.Inference(seed=-1), Clear, r"Inference.seed must be an integer >= 0"),
    ("inference", "seed float", lambda: npc.Inference(seed=1.5), Clear, r"Inference.seed must be an integer"),
    ("inference", "seed 2**40", lambda: npc.Inference(seed=2**40), Clear, r"Inference.seed .* <= 4294967295"),
    ("inference", "mode number", lambda: npc.Inference(mode=3), Clear, r"Inference.mode must be one of"),
    ("inference", "init typo", lambda: npc.Inference(init="random"), Clear, r"Inference.init must be one of forward, zero, given"),
    ("inference", "errors typo", lambda: npc.Inference(errors="leak"), Clear, r"Inference.errors must be one of"),
    ("inference", "nudge string", lambda: npc.Inference(nudge="0.1"), Clear, r"Inference.nudge must be a number"),
    ("inference", "nudge 0", lambda: npc.Inference(nudge=0), Clear, r"Inference.nudge must be a finite nonzero"),
    ("inference", "zil with tol", lambda: npc.Inference(mode="zil", rate=1.0, tol=1e-3), Clear, r"mode 'zil' .* cannot stop early"),
    ("inference", "zil with noise", lambda: npc.Inference(mode="zil", rate=1.0, temperature=1), Clear, r"mode 'zil' is deterministic"),
    ("inference", "fpa with noise", lambda: npc.Inference(mode="fpa", temperature=1), Clear, r"mode 'fpa' is deterministic"),
    ("inference", "leaky error_rate unstable", lambda: _sim().learn(_d(), inference=npc.Inference(errors="leaky", rate=2.5)), Clear, r"population 'h1' has precision 1.* must be < 2"),
    # ---- the simulator ----
    ("simulator", "network string", lambda: npc.Simulator("mlp"), Clear, r"Simulator network must be a neuropc Network .*; got 'mlp' \(str\)"),
    ("simulator", "network None", lambda: npc.Simulator(None), Clear, r"Simulator network must be a neuropc Network"),
    ("simulator", "empty network", lambda: npc.Simulator(npc.Network()), Clear, r"the network has no populations"),
    ("simulator", "dtype float16", lambda: npc.Simulator(_net(), dtype="float16"), Clear, r"dtype must be 'float32' or 'float64'; got 'float16'"),
    ("simulator", "dtype typo", lambda: npc.Simulator(_net(), dtype="f32x"), Clear, r"dtype must be 'float32' or 'float64'; got 'f32x'"),
    ("simulator", "dtype int", lambda: npc.Simulator(_net(), dtype=int), Clear, r"dtype must be 'float32' or 'float64'"),
    ("simulator", "seed < 0", lambda: npc.Simulator(_net(), seed=-2), Clear, r"Simulator seed must be an integer >= 0; got -2"),
    ("simulator", "seed float", lambda: npc.Simulator(_net(), seed=0.5), Clear, r"Simulator seed must be an integer; got 0.5"),
    ("simulator", "seed string", lambda: npc.Simulator(_net(), seed="0"), Clear, r"Simulator seed must be an integer; got '0'"),
    ("simulator", "backend None", lambda: npc.Simulator(_net(), backend=None), Clear, r"Simulator backend must be a name"),
    ("simulator", "backend typo", lambda: npc.Simulator(_net(), backend="numpy"), Clear, r"unknown backend 'numpy'; valid: numba, torch"),
    ("simulator", "device on numba", lambda: npc.Simulator(_net(), device="cuda:0"), Clear, r"numba backend runs on the CPU only"),
    ("simulator", "compile on numba", lambda: npc.Simulator(_net(), compile=True), Clear, r"compile= applies to the torch backend"),
    ("simulator", "inference int", lambda: npc.Simulator(_net(), inference=20), Clear, r"Simulator inference must be an npc.Inference"),
    ("simulator", "optimizer string", lambda: npc.Simulator(_net(), optimizer="adam"), Clear, r"Simulator optimizer must be an optimiser"),
    ("simulator", "optimizer class", lambda: npc.Simulator(_net(), optimizer=npc.Adam), Clear, r"Simulator optimizer must be an optimiser"),
    ("simulator", "per-call inference dict", lambda: _sim().learn(_d(), inference={"steps": 5}), Clear, r"inference must be an npc.Inference"),
    ("simulator", "per-call optimizer float", lambda: _sim().learn(_d(), optimizer=0.1), Clear, r"optimizer must be an optimiser"),
    ("simulator", "phase typo", lambda: _sim().infer(_d(), phase="val"), Clear, r"phase must be 'train' or 'test'; got 'val'"),
    # ---- data ----
    ("data", "not a mapping", lambda: _sim().learn(np.ones((4, 4))), Clear, r"data must be a mapping from population name to array; got ndarray"),
    ("data", "unknown population", lambda: _sim().learn(_d(hidden=np.ones((4, 3)))), Clear, r"unknown population 'hidden'"),
    ("data", "wrong width", lambda: _sim().learn(_d(input=np.ones((4, 5)))), Clear, r"population 'input': expected data of shape \(batch, 4\); got shape \(4, 5\)"),
    ("data", "1-D array", lambda: _sim().learn(_d(input=np.ones(4))), Clear, r"population 'input': expected data of shape \(batch, 4\); got shape \(4,\)"),
    ("data", "batch mismatch", lambda: _sim().learn(_d(output=np.ones((3, 2)))), Clear, r"population 'output': batch size 3 differs from 4"),
    ("data", "empty batch", lambda: _sim().learn(_d(b=0)), Clear, r"data has an empty batch"),
    ("data", "missing target", lambda: _sim().learn({"input": np.ones((4, 4))}), Clear, r"population 'output' is clamped in phase 'train' but no data was given"),
    ("data", "label at test time", lambda: _sim().infer(_d()), Clear, r"population 'output' is not clamped in phase 'test' \(targets are never clamped"),
    ("data", "nan", lambda: _sim().learn(_d(input=np.full((4, 4), NAN))), Clear, r"population 'input': data contains NaN or inf \(first at index \(0, 0\)\)"),
    ("data", "inf", lambda: _sim().learn(_d(output=np.full((4, 2), -INF))), Clear, r"population 'output': data contains NaN or inf"),
    ("data", "strings", lambda: _sim().infer({"input": np.full((2, 4), "1")}), Clear, r"population 'input': expected real numbers; got dtype <U1"),
    ("data", "complex", lambda: _sim().infer({"input": np.ones((2, 4)) * 1j}), Clear, r"population 'input': expected real numbers"),
    ("data", "booleans", lambda: _sim().infer({"input": np.ones((2, 4), bool)}), Clear, r"population 'input': expected real numbers; got dtype bool"),
    ("data", "objects", lambda: _sim().infer({"input": np.full((2, 4), None)}), Clear, r"population 'input': expected real numbers; got dtype object"),
    ("data", "ragged list", lambda: _sim().infer({"input": [[1, 2, 3, 4], [1, 2]]}), Clear, r"population 'input': .*not a rectangular array"),
    ("data", "overflow float32", lambda: _sim().learn(_d(input=np.full((4, 4), 1e300))), Clear, r"population 'input': data overflow float32: the largest magnitude is 1e\+300"),
    ("data", "values without init=given", lambda: _sim().infer({"input": np.ones((2, 4))}, values={"h1": np.ones((2, 3))}), Clear, r"values= are used only with Inference\(init='given'\)"),
    ("data", "values of a clamped population", lambda: _sim().infer({"input": np.ones((2, 4))}, values={"input": np.ones((2, 4))}, inference=npc.Inference(init="given")), Clear, r"population 'input' is clamped in phase 'test'; pass its data"),
    ("data", "batch_size string", lambda: _gen().infer({}, batch_size="4"), Clear, r"batch_size must be an integer; got '4'"),
    ("data", "trial column undeclared", lambda: _sim().infer({"input": np.ones((2, 4))}, trials={"kind": ["a", "b"]}), Clear, r"trial column 'kind' was not declared"),
    # ---- training loop ----
    ("fit", "epochs string", lambda: _sim().fit(_d(), epochs="2"), Clear, r"epochs must be an integer; got '2'"),
    ("fit", "epochs < 0", lambda: _sim().fit(_d(), epochs=-1), Clear, r"epochs must be an integer >= 0; got -1"),
    ("fit", "batch_size 0", lambda: _sim().fit(_d(), batch_size=0), Clear, r"batch_size must be an integer >= 1; got 0"),
    ("fit", "batch_size float", lambda: _sim().fit(_d(), batch_size=8.0), Clear, r"batch_size must be an integer; got 8.0"),
    ("fit", "validation not a pair", lambda: _sim().fit(_d(), validation={"input": np.ones((3, 4))}), Clear, r"fit\(validation=...\) must be a pair \(inputs, labels\); got dict"),
    ("fit", "validation wrong width", lambda: _sim().fit(_d(), validation=({"input": np.ones((3, 5))}, np.zeros(3, int))), Clear, r"population 'input': expected data of shape \(batch, 4\)"),
    ("fit", "validation labels length", lambda: _sim().fit(_d(), validation=({"input": np.ones((3, 4))}, np.zeros(2, int))), Clear, r"labels must have shape \(3,\); got \(2,\)"),
    ("fit", "validation labels out of range", lambda: _sim().fit(_d(), validation=({"input": np.ones((3, 4))}, np.full(3, 2))), Clear, r"class indices in \[0, 2\) of population 'output'; got values from 2 to 2"),
    ("fit", "validation labels float", lambda: _sim().fit(_d(), validation=({"input": np.ones((3, 4))}, np.zeros(3))), Clear, r"labels must be integers; got dtype float64"),
    ("fit", "init given", lambda: _sim(inference=npc.Inference(init="given")).fit(_d()), Clear, r"fit\(\) has no initial values to give"),
    # ---- parameters ----
    ("parameters", "unknown connection", lambda: _sim().load_parameters({"input->output": np.ones((2, 4))}), Clear, r"unknown connection 'input->output'; valid: input->h1, h1->output"),
    ("parameters", "weight shape", lambda: _sim().set_weights("input->h1", np.ones((4, 3))), Clear, r"connection 'input->h1': expected weights of shape \(3, 4\); got \(4, 3\)"),
    ("parameters", "weight nan", lambda: _sim().set_weights("input->h1", np.full((3, 4), NAN)), Clear, r"connection 'input->h1': weights contains NaN or inf"),
    ("parameters", "bias shape", lambda: _sim().set_bias("h1", np.zeros(4)), Clear, r"population 'h1': expected a bias of shape \(3,\); got \(4,\)"),
    ("parameters", "bias of input", lambda: _sim().get_bias("input"), Clear, r"population 'input' has no bias"),
    # ---- checkpoints ----
    ("checkpoint", "load a text file", lambda: npc.load(_text_file()), (npc.CheckpointError,), r"notes.txt' is not an HDF5 file"),
    ("checkpoint", "load a foreign HDF5", lambda: npc.load(_foreign_h5()), (npc.CheckpointError,), r"foreign.h5' is not a neuropc checkpoint"),
    ("checkpoint", "load a directory", lambda: npc.load(_tmp()), (npc.CheckpointError,), r"is a directory, not a checkpoint file"),
    ("checkpoint", "load a missing file", lambda: npc.load(_tmp() / "none.h5"), (npc.CheckpointError,), r"no such checkpoint file"),
    ("checkpoint", "save over a foreign file", lambda: _sim().save(_text_file()), (npc.CheckpointError,), r"refusing to overwrite .*notes.txt'.* overwrite='force'"),
    ("checkpoint", "save into a missing folder", lambda: _sim().save(_tmp() / "no" / "a.h5"), (npc.CheckpointError,), r"no such folder"),
    ("checkpoint", "save overwrite typo", lambda: _sim().save(_tmp() / "a.h5", overwrite="yes"), Clear, r"overwrite must be True, False or 'force'; got 'yes'"),
    ("checkpoint", "restore another network", lambda: npc.Simulator(npc.mlp([4, 5, 2])).restore(_sim().save(_tmp() / "a.h5")), (npc.CheckpointError,), r"parameter 'input->h1': expected shape \(5, 4\); got \(3, 4\)"),
    # ---- recordings ----
    ("recording", "probe of unknown population", lambda: _sim().record(None, [npc.Probe("h9", "value")]), Clear, r"h9"),
    ("recording", "probe of unknown variable", lambda: _sim().record(None, [npc.Probe("h1", "rate")]), Clear, r"rate"),
    ("recording", "unknown preset", lambda: _sim().record(None, preset="all"), Clear, r"all"),
    ("recording", "open a text file", lambda: npc.open(_text_file()), (npc.RecordingError,), r"notes.txt"),
    ("recording", "open a directory", lambda: npc.open(_tmp()), (npc.RecordingError,), r"is a directory, not a recording"),
    ("recording", "open a missing file", lambda: npc.open(_tmp() / "none.h5"), (npc.RecordingError,), r"no such recording"),
    ("recording", "record over a text file", lambda: _sim().record(_text_file()), (npc.RecordingError,), r"notes.txt.: it exists and is not an HDF5 file.*overwrite=.force."),
    ("recording", "record overwrite typo", lambda: _sim().record(_tmp() / "r.h5", overwrite=1), Clear, r"overwrite must be True"),
    ("recording", "label too long", lambda: _sim_rec_label(), Clear, r"longer than 64 bytes"),
    ("recording", "open a foreign HDF5", lambda: npc.open(_foreign_h5()), (npc.RecordingError,), r"foreign.h5"),
]
# fmt: on


def _sim_rec_label() -> None:
    sim = _sim()
    sim.record(None, trial_columns=("c",))
    sim.infer({"input": np.ones((2, 4))}, trials={"c": ["x" * 65] * 2})


def _gen() -> npc.Simulator:
    net = npc.Network()
    net.population("z", 2)
    return npc.Simulator(net)


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [pytest.param(c[2], c[3], c[4], id=f"{c[0]}: {c[1]}") for c in CASES],
)
def test_malformed_input_gets_a_clear_error(make, exc, match) -> None:
    with pytest.raises(exc, match=match):
        make()


def tally() -> dict[str, Counter]:
    """Per class: how many cases got the clear error, an unclear one, or were accepted."""
    import re

    out: dict[str, Counter] = {}
    for cls, _label, make, exc, match in CASES:
        try:
            make()
            verdict = "accepted"
        except exc as e:
            verdict = "clear" if re.search(match, str(e)) else "unclear"
        except Exception:
            verdict = "unclear"
        out.setdefault(cls, Counter())[verdict] += 1
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    total = Counter()
    for cls, c in tally().items():
        total += c
        print(f"{cls:<12} {sum(c.values()):>4} cases  clear {c['clear']:>4}  unclear "
              f"{c['unclear']:>3}  accepted {c['accepted']:>3}")  # fmt: skip
    print(f"{'all':<12} {sum(total.values()):>4} cases  clear {total['clear']:>4}  unclear "
          f"{total['unclear']:>3}  accepted {total['accepted']:>3}")  # fmt: skip
