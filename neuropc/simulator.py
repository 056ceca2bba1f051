"""The simulator: a lowered network, its parameters on a backend, and the infer / learn / fit loop."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import backends as _backends
from . import batch as _batch
from . import distributed as _distributed
from . import inputs as _in
from . import sampling as _sampling
from . import validation as _v
from .analysis import metrics as _metrics
from .dynamics import amortised as _amortised
from .dynamics import natural_gradient as _ngd
from .dynamics import precision as _precision
from .dynamics.inference import Inference
from .dynamics.natural_gradient import NaturalGradient
from .dynamics.optim import Adam, Optimizer, check_optimizer
from .dynamics.plan import Plan, lower
from .model import encoder as _encoder
from .model.initializers import init_parameters
from .model.network import Network
from .progress import batch_bar, print_progress
from .record import probes as _probes
from .record import recording as _recording

ArrayDict = Mapping[str, np.ndarray]


@dataclass
class State:
    """Values, errors and energies of a batch after inference.

    Index it by address: ``state["h1"]`` / ``state["h1:value"]`` (value), ``state["h1:error"]``
    (the error ``-dF/dmu``: ``Pi (x - mu)`` for a Gaussian). ``energies[name]`` is the batch-mean
    energy of a population before each step (length ``steps + 1``; the last entry is the final
    state) and ``energy`` their sum.
    """

    values: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    energies: dict[str, np.ndarray]
    steps: int
    phase: str

    @property
    def energy(self) -> np.ndarray:
        """Total batch-mean energy before each step, shape ``(steps + 1,)``."""
        tr = list(self.energies.values())
        return np.sum(tr, axis=0) if tr else np.zeros(self.steps + 1)

    def __getitem__(self, address: str) -> np.ndarray:
        name, _, kind = address.partition(":")
        kind = kind or "value"
        table = {"value": self.values, "error": self.errors}.get(kind)
        if table is None:
            raise ValueError(f"unknown variable {kind!r} in {address!r}; valid: value, error")
        if name not in table:
            raise ValueError(f"no {kind} population {name!r}; valid: {', '.join(table)}")
        return table[name]


@dataclass
class History:
    """Per-epoch metrics returned by :meth:`Simulator.fit` (a list of dicts, plus ``last``)."""

    epochs: list[dict] = field(default_factory=list)

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def __getitem__(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]


class Simulator:
    """Runs a :class:`~neuropc.model.network.Network` on a backend.

    >>> sim = Simulator(mlp([784, 128, 10]), backend="numba", dtype="float32", seed=0)

    ``inference`` and ``optimizer`` are the defaults of :meth:`infer`, :meth:`learn` and
    :meth:`fit`. All randomness (weight initialisation, shuffling, noise seeds) comes from ``seed``.

    ``compile`` (torch backend): run the inference steps through ``torch.compile`` (``True``, or a
    torch.compile mode such as ``"reduce-overhead"``, which uses CUDA graphs on a GPU). The same
    step code runs either way; ``False`` (default) is the plain eager path, for debugging. Needs a
    C++ compiler on the CPU, compiles once per network structure, batch size and mode (seconds),
    and applies to strict and FPA inference without ``tol``; Z-IL, iPC and ``tol`` act between
    single steps and run eagerly.

    ``distributed``: data-parallel training, one process per shard of each minibatch, on
    ``torch.distributed`` (:mod:`neuropc.distributed`: gloo on the CPU, NCCL on CUDA). ``None``
    (default) follows ``NEUROPC_DISTRIBUTED=1``, which ``neuropc run SCRIPT --nproc N`` sets.
    ``sim.distributed`` is then the :class:`~neuropc.distributed.DataParallel` link (its
    ``rank`` and ``world``), else None.
    """

    def __init__(
        self,
        network: Network,
        *,
        backend: str = "numba",
        dtype: str | np.dtype = "float32",
        device: str | None = None,
        inference: Inference | None = None,
        optimizer: Optimizer | None = None,
        seed: int = 0,
        compile: bool | str = False,
        distributed: bool | None = None,
    ) -> None:
        _v.instance(
            network, Network, "Simulator network", "a neuropc Network (e.g. npc.mlp([...]))"
        )
        if not isinstance(backend, str):
            raise TypeError(f"Simulator backend must be a name; got {backend!r}")
        if inference is not None:
            _v.instance(inference, Inference, "Simulator inference", "an npc.Inference(...)")
        if optimizer is not None:
            check_optimizer(optimizer, "Simulator optimizer")
        self.seed = _v.integer(seed, "Simulator seed", low=0)
        self.dtype = _in.float_dtype(dtype)
        data_parallel = _distributed.requested(distributed)
        if data_parallel:  # each rank on its own GPU
            device = _distributed.device_for(backend, device)
        self.network = network
        self.plan: Plan = lower(network)  # validates the graph
        self._version = network.version
        self.backend = _backends.create(backend, self.plan, self.dtype, device, compile)
        self.compile = compile
        self.inference = inference or Inference()
        self.optimizer = optimizer or Adam()
        if isinstance(self.optimizer, NaturalGradient):
            self.optimizer.check(self.plan)
        # independent streams, so that e.g. the minibatch order does not depend on how many noise
        # seeds were drawn: weight initialisation, shuffling, per-call noise seeds
        init_ss, shuffle_ss, noise_ss, enc_ss = np.random.SeedSequence(self.seed).spawn(4)
        self.shuffle_rng = np.random.default_rng(shuffle_ss)
        self.noise_rng = np.random.default_rng(noise_ss)
        self.backend.set_params(init_parameters(network, self.plan, np.random.default_rng(init_ss)))
        # Precision parameters: their values live here (the policy), the backends use them
        self._precisions = _precision.states(network, self.plan)
        for st in self._precisions.values():
            self.backend.set_precision(st.index, st.per_unit())
        self._masks: dict[str, np.ndarray] = {}
        self._schedules: dict[tuple, object] = {}  # batch.schedule's cache
        self._recorder: _recording.Recorder | None = None
        self._ngd: dict[NaturalGradient, _ngd.NGDState] = {}  # natural-gradient factors
        self._encoder = None  # the amortised encoder's parameters and optimiser state
        if network.encoder_spec is not None:
            _encoder.check(network, network.encoder_spec)  # populations may have changed since
            self._encoder = _amortised.AmortisedEncoder(
                network, network.encoder_spec, self.dtype, np.random.default_rng(enc_ss)
            )
        # the process group, once everything it compares across the ranks exists
        self.distributed = _distributed.DataParallel(self) if data_parallel else None

    # ---- parameters ---------------------------------------------------------------------------
    def get_weights(self, connection: str) -> np.ndarray:
        """Copy of ``W`` (n_post, n_pre) of connection ``"pre->post"``."""
        sl, shape = self._weight_slot(connection)
        return self.backend.get_params()[sl].reshape(shape)

    def set_weights(self, connection: str, w: np.ndarray) -> None:
        """Replace ``W`` (n_post, n_pre) of connection ``"pre->post"``."""
        self.load_parameters({connection: w})

    def get_bias(self, population: str) -> np.ndarray:
        return self.backend.get_params()[self._bias_slot(population)].copy()

    def set_bias(self, population: str, b: np.ndarray | float) -> None:
        """Replace the bias of ``population`` (a scalar is broadcast)."""
        self.load_parameters({f"{population}:bias": b})

    def parameters(self) -> dict[str, np.ndarray]:
        """All parameters as float64 copies: ``"pre->post"`` weights, ``"pop:bias"`` biases and
        ``"pop:precision"`` (``Pi`` itself: ``()``, ``(n,)`` or ``(n, n)``) of populations with a
        :class:`~neuropc.model.distributions.Precision`, and ``"encoder:..."`` of an encoder
        (:mod:`neuropc.model.encoder`)."""
        out = self.plan.unflatten(self.backend.get_params())
        out.update({f"{n}:precision": st.pi.copy() for n, st in self._precisions.items()})
        if self._encoder is not None:
            out.update(self._encoder.parameters())
        return out

    def precision(self, population: str) -> np.ndarray:
        """The current precision ``Pi`` of ``population`` (a copy): a Precision parameter's
        value, or the fixed per-unit precision."""
        self.network[population]
        st = self._precisions.get(population)
        if st is not None:
            return st.pi.copy()
        return np.asarray(self.network[population].precision, np.float64).copy()

    @property
    def encoder(self) -> _amortised.AmortisedEncoder | None:
        """The network's amortised encoder (parameters, optimiser state, last losses), or None."""
        return self._encoder

    def sample(self, n: int, **kw) -> dict[str, np.ndarray]:
        """``n`` ancestral samples of the generative model (:func:`neuropc.sampling.sample`)."""
        return _sampling.sample(self, n, **kw)

    def load_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        """Set parameters from a mapping shaped like :meth:`parameters` (missing keys are kept).
        Every entry is validated before anything changes."""
        flat = self.backend.get_params()
        precisions, encoder = {}, {}
        for k, v in params.items():
            if k.startswith(_encoder.PREFIX):
                if self._encoder is None:
                    raise ValueError(f"parameter {k!r}: the network has no encoder")
                encoder[k] = self._encoder.check(k, v)
            elif k.endswith(":precision"):
                pop = k[: -len(":precision")]
                self.network[pop]
                st = self._precisions.get(pop)
                if st is None:
                    raise ValueError(
                        f"population {pop!r} has no Precision parameter (give its Gaussian "
                        "precision=npc.Precision(...))"
                    )
                precisions[pop] = _precision.check_value(st, v, "load_parameters:")
            elif k.endswith(":bias"):
                pop = k[: -len(":bias")]
                sl = self._bias_slot(pop)
                n = sl.stop - sl.start
                b = np.asarray(v, np.float64)
                b = np.broadcast_to(b, (n,)) if b.ndim == 0 else b
                if b.shape != (n,):
                    raise ValueError(
                        f"population {pop!r}: expected a bias of shape ({n},); got {b.shape}"
                    )
                _in.check_finite(pop, b, "population {!r}: bias")
                flat[sl] = b
            else:
                sl, shape = self._weight_slot(k)
                w = np.asarray(v, dtype=np.float64)
                if w.shape != shape:
                    raise ValueError(
                        f"connection {k!r}: expected weights of shape {shape}; got {w.shape}"
                    )
                _in.check_finite(k, w, "connection {!r}: weights")
                flat[sl] = w.ravel()
        self.backend.set_params(flat)
        if encoder:
            self._encoder.set(encoder)
        for pop, value in precisions.items():
            st = self._precisions[pop]
            st.set(value)
            self.backend.set_precision(st.index, st.per_unit())

    def _weight_slot(self, connection: str) -> tuple[slice, tuple[int, int]]:
        if connection not in self.plan.param_names:
            raise ValueError(
                f"unknown connection {connection!r}; valid: "
                f"{', '.join(self.plan.param_names) or '(none)'}"
            )
        return self.plan.weight_slice(connection)

    def _bias_slot(self, population: str) -> slice:
        self.network[population]
        sl = self.plan.bias_slice(population)
        if sl is None:
            raise ValueError(f"population {population!r} has no bias (create it with bias=True)")
        return sl

    # ---- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool | str = True) -> Path:
        """Write a checkpoint (HDF5, no pickle): the network, settings, parameters, optimiser
        state and random streams; :func:`neuropc.load` continues the run bit for bit. Returns the
        absolute path. ``overwrite``: ``True`` replaces an existing checkpoint only, ``False``
        refuses any existing file, ``"force"`` replaces anything. See :mod:`neuropc.checkpoint`."""
        from . import checkpoint

        if self.distributed is not None:  # written once, by rank 0
            return self.distributed.checkpoint(
                lambda: checkpoint.save(self, path, overwrite=overwrite)
            )
        return checkpoint.save(self, path, overwrite=overwrite)

    def restore(self, path: str | os.PathLike) -> None:
        """Load parameters, optimiser state and random streams from the checkpoint at ``path``,
        which must hold this simulator's network; a mismatch names the parameter and both shapes,
        and nothing is changed unless everything fits."""
        from . import checkpoint

        checkpoint.restore(self, path)

    # ---- one batch ------------------------------------------------------------------------------
    def infer(
        self,
        data: ArrayDict,
        *,
        phase: str = "test",
        values: ArrayDict | None = None,
        inference: Inference | None = None,
        batch_size: int | None = None,
        trials: Mapping[str, Sequence] | None = None,
    ) -> State:
        """Clamp ``data`` (the populations clamped in ``phase``) and run inference. No learning.

        ``values`` are initial values of free populations (with ``Inference(init="given")``).
        ``batch_size`` is needed only when nothing is clamped and no values are given (e.g. to
        sample a generative network from its priors). ``trials``: labels per sample for the
        recording's trials table (columns declared in :meth:`record`)."""
        out = self._run(
            data, phase, values, inference or self.inference, learn=None, batch=batch_size,
            trials=trials,
        )  # fmt: skip
        return self._state(out, phase)

    def learn(
        self,
        data: ArrayDict,
        *,
        values: ArrayDict | None = None,
        inference: Inference | None = None,
        optimizer: Optimizer | None = None,
        state: bool = True,
        trials: Mapping[str, Sequence] | None = None,
    ) -> State | float:
        """One training batch in phase ``"train"``: inference, local gradients, optimiser step.

        Returns the :class:`State`, or with ``state=False`` only the final total energy (skips
        copying the buffers, and the energies of the states before the final one, as :meth:`fit`
        does; a divergence is still reported at its first step). ``trials`` as in :meth:`infer`.
        Data-parallel (``distributed``), ``data`` is this rank's shard and every rank must call
        it; the state is the shard's, the energy the whole minibatch's mean."""
        out = self._run(
            data, "train", values, inference or self.inference, learn=optimizer or self.optimizer,
            trials=trials, readout=state,
        )  # fmt: skip
        return self._state(out, "train") if state else _final_energy(out)

    def gradients(
        self,
        data: ArrayDict,
        *,
        phase: str = "train",
        values: ArrayDict | None = None,
        inference: Inference | None = None,
    ) -> tuple[State, dict[str, np.ndarray]]:
        """Inference, then the local gradients ``dF/dtheta`` of the batch-mean energy at the final
        state (keys as in :meth:`parameters`); parameters are not changed. Entries of parameters
        marked not trainable are returned as 0. In mode ``"zil"`` each gradient is the one taken at
        its scheduled step; with ``nudge`` they are scaled by 1/beta."""
        if (inference or self.inference).mode == "ipc":
            raise ValueError(
                "mode 'ipc' learns during inference and has no end-of-inference gradient; use learn()"
            )
        out = self._run(data, phase, values, inference or self.inference, learn=None, grads=True)
        return self._state(out, phase), self.plan.unflatten(out.host_grads())

    def predict(
        self, data: ArrayDict, *, inference: Inference | None = None, phase: str = "test"
    ) -> dict[str, np.ndarray]:
        """Values of the free populations after test-phase inference (targets are never clamped)."""
        st = self.infer(data, phase=phase, inference=inference)
        cl = self.plan.clamped_names(phase)
        return {n: v for n, v in st.values.items() if n not in cl}

    def accuracy(
        self,
        data: ArrayDict,
        labels: np.ndarray,
        *,
        target: str | None = None,
        batch_size: int = 1000,
        inference: Inference | None = None,
    ) -> float:
        """Fraction of samples whose argmax of the (free) target population equals ``labels``."""
        return _metrics.accuracy(
            lambda part: self.predict(part, inference=inference), data, labels,
            target or _metrics.target_name(self.network), batch_size,
        )  # fmt: skip

    # ---- training loop --------------------------------------------------------------------------
    def fit(
        self,
        data: ArrayDict,
        *,
        epochs: int = 1,
        batch_size: int = 64,
        validation: tuple[ArrayDict, np.ndarray] | None = None,
        shuffle: bool = True,
        progress: bool = True,
        callback: Callable[[dict], None] | None = None,
        trials: Mapping[str, Sequence] | None = None,
    ) -> History:
        """Train for ``epochs`` over ``data`` (arrays for every population clamped in ``"train"``).

        Each epoch shuffles the samples with ``shuffle_rng`` (from the simulator's seed), runs :meth:`learn` per
        minibatch, and records ``energy`` (mean final total energy), ``seconds`` and, with
        ``validation=(inputs, labels)``, ``accuracy`` of the free target at test time.
        ``trials``: per-sample labels for the recording, shuffled with the samples.
        Data-parallel (``distributed``), ``batch_size`` is the whole minibatch; each rank takes
        its contiguous part of it (:mod:`neuropc.distributed`) and ``energy`` is their mean.
        """
        epochs = _v.integer(epochs, "epochs", low=0)
        batch_size = _v.integer(batch_size, "batch_size", low=1)
        cfg = self.inference
        if cfg.init == "given":
            raise ValueError(
                "fit() has no initial values to give: Inference(init='given') needs values= per "
                "batch; call learn(batch, values=...) in your own loop, or use init='forward'"
            )
        self._check_settings(cfg, learning=self.optimizer)
        arrays = self._data(data, "train")
        n = _in.batch_len(arrays)
        labels = self._check_trials(trials, n)
        if validation is not None:
            _in.check_validation(self.network, self.plan, self.dtype, validation)
        hist = History()
        for ep in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = self.shuffle_rng.permutation(n) if shuffle else np.arange(n)
            energies = []
            starts = range(0, n, batch_size)
            for s in batch_bar(starts, progress, f"epoch {ep}/{epochs}"):
                idx, weight = order[s : s + batch_size], None
                if self.distributed is not None:
                    idx, weight = self.distributed.shard(idx)
                out = _batch.run(
                    self, {k: v[idx] for k, v in arrays.items()}, "train", None, cfg,
                    self.optimizer, trials={k: v[idx] for k, v in labels.items()} if labels
                    else None, weight=weight, readout=False,
                )  # fmt: skip
                energies.append(_final_energy(out))
            rec = {"epoch": ep, "energy": float(np.mean(energies)) if energies else float("nan")}
            rec["seconds"] = time.perf_counter() - t0
            if validation is not None:
                rec["accuracy"] = self.accuracy(validation[0], validation[1])
            hist.epochs.append(rec)
            if progress:
                rest = {k: v for k, v in rec.items() if k != "epoch"}
                print_progress(f"epoch {ep}/{epochs}", rest)
            if callback is not None:
                callback(rec)
        return hist

    # ---- internals ------------------------------------------------------------------------------
    def _check_settings(self, cfg: Inference, *, learning: Optimizer | None) -> None:
        """Settings that depend on this network, checked once per call (``fit``: once for all
        its batches): leaky errors' stability, and iPC with a learned precision."""
        _in.check_leaky(self.plan, cfg)
        if learning and cfg.mode == "ipc" and isinstance(learning, NaturalGradient):
            raise ValueError(
                "NaturalGradient steps after inference from the batch's gradients; mode 'ipc' "
                "(weights learning at every inference step) needs npc.SGD or npc.Adam"
            )
        if learning and cfg.mode == "ipc":
            learned = [n for n, st in self._precisions.items() if st.learned]
            if learned:
                raise ValueError(
                    f"population {learned[0]!r} learns its precision after each batch; mode "
                    "'ipc' (weights learn during inference) does not combine with it yet"
                )

    def _run(self, data, phase, values, cfg, learn, grads=False, batch=None, trials=None,
             readout=True):  # fmt: skip
        _v.instance(cfg, Inference, "inference", "an npc.Inference(...)")
        if learn is not None:
            check_optimizer(learn)
        self._check_settings(cfg, learning=learn)
        if phase not in ("train", "test"):
            raise ValueError(f"phase must be 'train' or 'test'; got {phase!r}")
        if batch is not None:
            batch = _v.integer(batch, "batch_size", low=1)
        arrays = self._data(data, phase)
        vals = self._data(values, phase, values=True) if values else {}
        if vals and arrays and _in.batch_len(vals) != _in.batch_len(arrays):
            raise ValueError(
                f"values have batch size {_in.batch_len(vals)}; data has {_in.batch_len(arrays)}"
            )
        b = _in.batch_len(arrays) or _in.batch_len(vals) or batch
        if not b or b < 1:
            raise ValueError(
                f"nothing is clamped in phase {phase!r} and no values were given: pass batch_size="
            )
        if batch is not None and batch != b:
            raise ValueError(f"batch_size={batch} differs from the data's batch size {b}")
        if cfg.init == "given" and not vals:
            raise ValueError(
                "Inference.init='given' needs values= for at least one free population"
            )
        if vals and cfg.init != "given":
            raise ValueError("values= are used only with Inference(init='given')")
        labels = self._check_trials(trials, b)
        return _batch.run(self, arrays, phase, vals, cfg, learn, grads, b, labels,
                          readout=readout)  # fmt: skip

    # ---- recording ------------------------------------------------------------------------------
    def record(
        self,
        path: str | os.PathLike | None,
        probes: Sequence[_probes.Probe] = (),
        *,
        preset: str = "energy",
        trial_columns: Sequence[str] = (),
        live: bool = True,
        chunk_bytes: int = 1 << 18,
        compression: str | None = None,
        metadata: Mapping | None = None,
        overwrite: bool | str = True,
        flush_interval: float = 0.2,
    ) -> _recording.Recorder:
        """Record the following runs to the HDF5 file ``path`` (``None``: in memory).

        ``probes`` (see :class:`~neuropc.record.probes.Probe`) come on top of ``preset``: ``"energy"``
        (default: per-step energy of every population and the total), ``"settled"``, ``"steps"``
        or ``"none"``. ``trial_columns`` declares the labels that ``trials=`` of
        :meth:`infer`/:meth:`learn`/:meth:`fit` fill in. Everything is validated and created now;
        with ``live`` the file is in SWMR mode, readable by other processes during the run.
        Written chunks are flushed (made visible to readers, and safe from a crash of this
        process) at most every ``flush_interval`` seconds and at :meth:`Recorder.close`.
        ``overwrite``: ``True`` replaces an existing neuropc recording at ``path``, ``False``
        refuses any existing file, ``"force"`` replaces any file (never a directory, nor a file
        an open recording of this process is writing); any other existing file is refused, so a
        wrong path never destroys someone's data.

        >>> with sim.record("run.h5", [Probe("h1", "error")]) as rec:
        ...     sim.fit(data, epochs=1)
        """
        if self._recorder is not None:
            raise ValueError(
                "this simulator is already recording; close that recording first (rec.close())"
            )
        rec = _recording.Recorder(
            self, path, probes, preset=preset, trial_columns=trial_columns, live=live,
            chunk_bytes=chunk_bytes, compression=compression, metadata=metadata,
            overwrite=overwrite, flush_interval=flush_interval,
        )  # fmt: skip
        self._recorder = rec
        return rec

    @property
    def recorder(self) -> _recording.Recorder | None:
        """The open recording, if any."""
        return self._recorder

    @contextlib.contextmanager
    def _recording_paused(self):
        rec, self._recorder = self._recorder, None
        try:
            yield
        finally:
            self._recorder = rec

    def _data(self, data: ArrayDict, phase: str, *, values: bool = False) -> dict[str, np.ndarray]:
        """``data`` (or initial ``values``) checked against the network (:mod:`neuropc.inputs`)."""
        return _in.check_data(self.network, self.plan, self.dtype, data, phase, values=values)

    def _check_trials(self, trials, n: int) -> dict[str, np.ndarray]:
        declared = self._recorder.trial_columns if self._recorder is not None else ()
        return _in.check_trials(declared, trials, n)

    def _state(self, out, phase: str) -> State:
        pl = self.plan
        values, errors, energies = {}, {}, {}
        for i, n in enumerate(pl.names):
            values[n] = np.array(out.values[:, pl.value_slice(n)], dtype=self.dtype)
            if pl.has_err[i]:
                errors[n] = np.array(out.errors[:, pl.error_slice(n)], dtype=self.dtype)
                energies[n] = out.energies[:, i].copy()
        return State(values, errors, energies, out.steps, phase)


def _final_energy(out) -> float:
    """A learning batch's final total energy: the minibatch's (data-parallel), else the batch's."""
    if out.mean_energy is not None:
        return out.mean_energy
    # a Python sum, not numpy's: the first numpy reduction after a numba kernel costs about 12 us
    # (its code is out of the caches), 1% of the standard task; numpy's order below 8 terms
    return float(sum(out.energies[-1].tolist()))
