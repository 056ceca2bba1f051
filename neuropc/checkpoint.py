"""Checkpoints: a simulator's whole training state in one HDF5 file, without pickle.

``sim.save(path)`` writes, and :func:`load` (``npc.load``) rebuilds a simulator from, a file that
holds:

* the network description (:meth:`Network.spec`, JSON) and the simulator's settings (backend,
  dtype, device, compile, seed, default :class:`Inference` and optimiser, as JSON);
* every parameter, one float64 dataset per name of :meth:`Simulator.parameters`
  (``"pre->post"`` weights ``(n_post, n_pre)``, ``"pop:bias"`` biases; float32 simulators store
  their values exactly);
* the optimiser state (first and second moments in the flat parameter layout, and the step count);
* the random streams (minibatch shuffling and the per-batch noise seeds) as bit-generator states;
* the state of learned precisions' rules (the EMA's running covariance, a full precision's
  Cholesky factor), beside ``"pop:precision"`` among the parameters;
* an encoder's parameters (``"encoder:..."``, among the parameters) and its optimiser's state.

Training 2 batches, saving, loading (in another process) and training 2 more gives parameters
bit-identical to 4 batches without a break, on every backend. Reading parses JSON and numbers only:
nothing in a file is executed. Writing goes to a temporary file in the same folder that replaces
``path`` only once complete, so a crash never leaves a half-written checkpoint or damages the file
that was there. Layout (schema version 1)::

    /                 attrs: format="neuropc-checkpoint", schema_version, neuropc_version, created,
                             network, simulator, inference, optimizer (JSON)
    /parameters/NAME  float64 datasets
    /optimizer/m, /optimizer/v   float64 (n_params,), attr t (steps taken)
    /rng              attrs: shuffle, noise (JSON bit-generator states)
    /precision_rules/POP/{cov, chol}   float64, where a learned precision has them
    /encoder_optimizer/PARAM/KEY       float64, where an encoder has learned (e.g. exp_avg, step)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dynamics.inference import Inference, Preconditioner
from .dynamics.natural_gradient import NaturalGradient, NGDState
from .dynamics.optim import SGD, Adam
from .errors import CheckpointError
from .model.network import Network

if TYPE_CHECKING:
    from .simulator import Simulator

FORMAT = "neuropc-checkpoint"
SCHEMA_VERSION = 1
_OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "NaturalGradient": NaturalGradient}


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, read and checked but not yet applied to a simulator."""

    network: dict
    simulator: dict
    inference: Inference
    optimizer: SGD | Adam | NaturalGradient
    parameters: dict[str, np.ndarray]
    opt_m: np.ndarray
    opt_v: np.ndarray
    opt_t: int
    rng: dict[str, dict]
    rules: dict[str, dict[str, np.ndarray]]  # precision rules' state: EMA covariance, Cholesky
    schema_version: int
    neuropc_version: str
    created: str
    ngd: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # NGDState.state()
    # an encoder's optimiser state ("<param>/<key>", AmortisedEncoder.optimizer_state())
    encoder_opt: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


# ---- writing ----------------------------------------------------------------------------------
def save(sim: Simulator, path: str | os.PathLike, *, overwrite: bool | str = True) -> Path:
    """Write ``sim``'s state to ``path`` (see the module docstring); returns the absolute path.

    ``overwrite``: ``True`` replaces an existing *checkpoint*, ``False`` refuses any existing
    file, ``"force"`` replaces whatever is there. Any other existing file (a recording, data) is
    refused, so a wrong path never destroys someone's file."""
    from . import __version__

    path = Path(path)
    _check_target(path, overwrite)
    opt = sim.backend.optimizer_state()
    attrs = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "neuropc_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "network": json.dumps(sim.network.spec()),
        "simulator": json.dumps(
            {
                "backend": sim.backend.name,
                "dtype": sim.dtype.name,
                "device": str(getattr(sim.backend, "device", "cpu")),
                "compile": sim.compile,
                "seed": sim.seed,
            }
        ),
        "inference": json.dumps(dataclasses.asdict(sim.inference)),
        "optimizer": json.dumps(_optimizer_spec(sim.optimizer)),
    }
    rng = {
        "shuffle": json.dumps(sim.shuffle_rng.bit_generator.state),
        "noise": json.dumps(sim.noise_rng.bit_generator.state),
    }
    rules = {  # the precision rules' own state, for a bit-identical resume
        name: {k: v for k, v in (("cov", st.cov), ("chol", st.chol)) if v is not None}
        for name, st in sim._precisions.items()
    }
    # the factors of the default optimiser's natural gradient (else of the last one used)
    st = sim._ngd.get(sim.optimizer) or next(reversed(sim._ngd.values()), None)
    ngd = st.state() if st is not None else {}
    enc = sim._encoder.optimizer_state() if sim._encoder is not None else {}
    _atomic_write(path, lambda f: _write(f, attrs, sim.parameters(), opt, rng, rules, ngd, enc))
    return path.resolve()


def _write(f, attrs: dict, params: Mapping[str, np.ndarray], opt: dict, rng: dict, rules: dict,
           ngd: dict, enc: dict) -> None:  # fmt: skip
    for k, v in attrs.items():
        f.attrs[k] = v
    g = f.create_group("parameters")
    for name, a in params.items():
        g.create_dataset(name, data=np.asarray(a, np.float64))
    o = f.create_group("optimizer")
    o.create_dataset("m", data=np.asarray(opt["m"], np.float64))
    o.create_dataset("v", data=np.asarray(opt["v"], np.float64))
    o.attrs["t"] = int(opt["t"])
    r = f.create_group("rng")
    for k, v in rng.items():
        r.attrs[k] = v
    pr = f.create_group("precision_rules")
    for name, arrays in rules.items():
        g = pr.create_group(name)
        for k, v in arrays.items():
            g.create_dataset(k, data=np.asarray(v, np.float64))
    if ngd:  # the natural-gradient factors ("in/<pop>", ..., "count")
        g = f.create_group("natural_gradient")
        for k, v in ngd.items():
            g.create_dataset(k, data=np.asarray(v, np.float64))
    if enc:
        g = f.create_group("encoder_optimizer")
        for k, v in enc.items():
            g.create_dataset(k, data=np.asarray(v, np.float64))


def _atomic_write(path: Path, fill) -> None:
    """Write a new HDF5 file with ``fill(h5file)`` next to ``path``, then move it into place."""
    import h5py

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(
            f"cannot save checkpoint {str(path)!r}: no such folder {str(folder)!r}"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_target(path: Path, overwrite: bool | str) -> None:
    if overwrite not in (True, False, "force"):
        raise ValueError(f"overwrite must be True, False or 'force'; got {overwrite!r}")
    if path.is_dir():
        raise CheckpointError(f"cannot save checkpoint to {str(path)!r}: it is a directory")
    if not path.exists() or overwrite == "force":
        return
    if overwrite is False:
        raise CheckpointError(
            f"cannot save checkpoint to {str(path)!r}: the file exists (overwrite=False)"
        )
    if not is_checkpoint(path):
        raise CheckpointError(
            f"refusing to overwrite {str(path)!r}: it exists and is not a neuropc checkpoint; "
            "pass overwrite='force' to replace it"
        )


def _optimizer_spec(opt: SGD | Adam | NaturalGradient) -> dict:
    fields = {f.name: getattr(opt, f.name) for f in dataclasses.fields(opt) if f.name != "kind"}
    return {"type": type(opt).__name__, **fields}


# ---- reading ----------------------------------------------------------------------------------
def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file marked as a neuropc checkpoint (reads one attribute)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint file; raises :class:`CheckpointError` naming what is wrong."""
    import h5py

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a directory, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"no such checkpoint file: {str(path)!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{str(path)!r} is not an HDF5 file ({e})") from None
    with f:
        fmt = f.attrs.get("format")
        if fmt != FORMAT:
            raise CheckpointError(
                f"{str(path)!r} is not a neuropc checkpoint (format attribute {fmt!r})"
            )
        version = int(f.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise CheckpointError(
                f"{str(path)!r} was written with checkpoint schema version {version}, newer than "
                f"this neuropc reads (version {SCHEMA_VERSION}); upgrade neuropc to load it"
            )
        if version < 1:
            raise CheckpointError(f"{str(path)!r}: unknown checkpoint schema version {version}")
        try:
            attrs = {k: json.loads(str(f.attrs[k])) for k in _JSON_ATTRS}
            params = {k: np.asarray(d[()], np.float64) for k, d in f["parameters"].items()}
            o = f["optimizer"]
            m, v, t = np.asarray(o["m"][()]), np.asarray(o["v"][()]), int(o.attrs["t"])
            rng = {k: json.loads(str(f["rng"].attrs[k])) for k in ("shuffle", "noise")}
            rules = {
                name: {k: np.asarray(d[()], np.float64) for k, d in g.items()}
                for name, g in f.get("precision_rules", {}).items()
            }
            created, nv = str(f.attrs["created"]), str(f.attrs["neuropc_version"])
            ngd, enc = _datasets(f, "natural_gradient"), _datasets(f, "encoder_optimizer")
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{str(path)!r}: damaged checkpoint ({e})") from None
    opt = attrs["optimizer"]
    cls = _OPTIMIZERS.get(opt.pop("type", None))
    if cls is None:
        raise CheckpointError(f"{str(path)!r}: unknown optimiser {attrs['optimizer']!r}")
    try:
        optimizer = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in opt.items()})
        inf = dict(attrs["inference"])
        if isinstance(inf.get("preconditioner"), dict):  # a nested settings object (asdict)
            inf["preconditioner"] = Preconditioner(**inf["preconditioner"])
        inference = Inference(**inf)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: bad settings ({e})") from None
    return Checkpoint(
        network=attrs["network"], simulator=attrs["simulator"], inference=inference,
        optimizer=optimizer, parameters=params, opt_m=m, opt_v=v, opt_t=t, rng=rng, rules=rules,
        schema_version=version, neuropc_version=nv, created=created, ngd=ngd, encoder_opt=enc,
    )  # fmt: skip


def _datasets(f, group: str) -> dict[str, np.ndarray]:
    """Every dataset under ``group`` (by path inside it) as float64; empty without the group."""
    out: dict[str, np.ndarray] = {}
    if group in f:
        f[group].visititems(
            lambda k, d: out.__setitem__(k, np.asarray(d[()], np.float64))
            if hasattr(d, "shape") else None
        )  # fmt: skip
    return out


_JSON_ATTRS = ("network", "simulator", "inference", "optimizer")


def load(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    device: str | None = None,
    compile: bool | str | None = None,
    distributed: bool | None = None,
) -> Simulator:
    """A new simulator with the network, settings, parameters, optimiser state and random streams
    of the checkpoint at ``path``. ``backend``, ``device`` and ``compile`` override the saved ones
    (e.g. to continue on the CPU a run trained on a GPU; bit-identity holds only on the same
    backend). ``distributed``: as in :class:`~neuropc.simulator.Simulator` (a checkpoint of a
    data-parallel run loads in one process, and the other way round)."""
    from .simulator import Simulator

    ck = read(path)
    try:
        net = Network.from_spec(ck.network)
    except ValueError as e:
        raise CheckpointError(f"{str(path)!r}: bad network description ({e})") from None
    s = ck.simulator
    sim = Simulator(
        net, backend=backend or s["backend"],
        device=device if device is not None else (s["device"] if not backend else None),
        dtype=s["dtype"], seed=int(s["seed"]), inference=ck.inference, optimizer=ck.optimizer,
        compile=s["compile"] if compile is None else compile, distributed=distributed,
    )  # fmt: skip
    apply(sim, ck, str(path))
    return sim


def restore(sim: Simulator, path: str | os.PathLike) -> None:
    """Load the checkpoint at ``path`` into ``sim``, whose network must be the one saved:
    parameters, optimiser state and random streams (not the default inference and optimiser
    settings). Everything is checked before anything changes."""
    ck = read(path)
    states = check(sim, ck, str(path))  # shapes first: they name the parameter
    if ck.network != sim.network.spec():
        diff = _network_difference(ck.network, sim.network.spec())
        raise CheckpointError(f"{str(path)!r} holds a different network: {diff}")
    _apply(sim, ck, states)


def apply(sim: Simulator, ck: Checkpoint, where: str = "checkpoint") -> None:
    """Check every array of ``ck`` against ``sim``'s plan, then set them all (or nothing)."""
    _apply(sim, ck, check(sim, ck, where))


def check(sim: Simulator, ck: Checkpoint, where: str = "checkpoint") -> dict[str, dict]:
    """Raise :class:`CheckpointError` unless every array of ``ck`` fits ``sim`` (naming the
    parameter, the expected and the given shape); returns the random streams' states."""
    expected = sim.parameters()
    missing = sorted(set(expected) - set(ck.parameters))
    extra = sorted(set(ck.parameters) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where}: parameters do not match the network: missing {missing or 'none'}, "
            f"unexpected {extra or 'none'}"
        )
    for name, want in expected.items():
        got = ck.parameters[name]
        if got.shape != want.shape:
            raise CheckpointError(
                f"{where}: parameter {name!r}: expected shape {want.shape}; got {got.shape}"
            )
        if not np.all(np.isfinite(got)):
            raise CheckpointError(f"{where}: parameter {name!r} holds NaN or inf")
    n = sim.plan.n_params
    for label, a in (("optimizer m", ck.opt_m), ("optimizer v", ck.opt_v)):
        if a.shape != (n,):
            raise CheckpointError(f"{where}: {label}: expected shape ({n},); got {a.shape}")
    for key, a in ck.encoder_opt.items():
        name = key.rpartition("/")[0]
        shape = expected.get(name, np.zeros(0)).shape if name.startswith("encoder:") else None
        if shape is None or sim._encoder is None or a.shape not in (shape, ()):
            raise CheckpointError(f"{where}: encoder optimiser state {key!r} does not fit the "
                                  f"encoder (shape {a.shape})")  # fmt: skip
    states = {}
    for k, rng in (("shuffle", sim.shuffle_rng), ("noise", sim.noise_rng)):
        st = ck.rng[k]
        if not isinstance(st, dict) or st.get("bit_generator") != type(rng.bit_generator).__name__:
            raise CheckpointError(f"{where}: random stream {k!r} has an unknown generator")
        states[k] = st
    return states


def _apply(sim: Simulator, ck: Checkpoint, states: dict[str, dict]) -> None:
    """Set what :func:`check` accepted (nothing can fail half-way: every array was checked)."""
    sim.load_parameters(ck.parameters)
    for name, arrays in ck.rules.items():
        st = sim._precisions.get(name)
        if st is not None:
            for k, v in arrays.items():
                setattr(st, k, v.copy())
    sim.backend.set_optimizer_state(ck.opt_m, ck.opt_v, ck.opt_t)
    sim._ngd.clear()
    if ck.ngd:
        spec = sim.optimizer if isinstance(sim.optimizer, NaturalGradient) else ck.optimizer
        sim._ngd[spec] = NGDState(spec, sim.plan)
        sim._ngd[spec].load(ck.ngd, like=sim.backend.P)
    if sim._encoder is not None:
        sim._encoder.set_optimizer_state(sim.optimizer, ck.encoder_opt)
    sim.shuffle_rng.bit_generator.state = states["shuffle"]
    sim.noise_rng.bit_generator.state = states["noise"]


def _network_difference(a: dict, b: dict) -> str:
    """The first difference between two network descriptions, in words (file vs simulator)."""
    pa = {p["name"]: p for p in a.get("populations", [])}
    pb = {p["name"]: p for p in b.get("populations", [])}
    for name in pa.keys() | pb.keys():
        if name not in pb:
            return f"population {name!r} is in the file but not in the simulator"
        if name not in pa:
            return f"population {name!r} is in the simulator but not in the file"
        for k in pa[name].keys() | pb[name].keys():
            if pa[name].get(k) != pb[name].get(k):
                return (
                    f"population {name!r}: {k} is {pa[name].get(k)!r} in the file and "
                    f"{pb[name].get(k)!r} in the simulator"
                )
    ca = {(c["pre"], c["post"]): c for c in a.get("connections", [])}
    cb = {(c["pre"], c["post"]): c for c in b.get("connections", [])}
    for key in ca.keys() | cb.keys():
        if ca.get(key) != cb.get(key):
            where = "file" if key in ca and key not in cb else "simulator"
            return f"connection {key[0]}->{key[1]} differs (or exists only in the {where})"
    return "the clamps differ"


# ---- describing -------------------------------------------------------------------------------
def describe(path: str | os.PathLike) -> str:
    """A human-readable summary of a checkpoint (``neuropc inspect``)."""
    ck = read(path)
    net = Network.from_spec(ck.network)
    s = ck.simulator
    lines = [
        f"neuropc checkpoint {Path(path).resolve()}",
        f"  schema version {ck.schema_version}, written by neuropc {ck.neuropc_version} at "
        f"{ck.created}",
        f"  simulator: backend {s['backend']}, dtype {s['dtype']}, device {s['device']}, seed "
        f"{s['seed']}" + (f", compile {s['compile']}" if s["compile"] else ""),
        f"  inference: {ck.inference}",
        f"  optimizer: {ck.optimizer} after {ck.opt_t} steps",
        "  network:",
        *("    " + line for line in net.summary().splitlines()),
        "  parameters:",
    ]
    width = max((len(k) for k in ck.parameters), default=0)
    for name, a in ck.parameters.items():
        lines.append(f"    {name:<{width}}  {a.shape!s:<12} |.|_2 = {np.linalg.norm(a):.6g}")
    return "\n".join(lines)
