"""neuropc: predictive-coding circuits as explicit graphs of value and error populations.

Public API::

    import neuropc as npc
    net = npc.mlp([784, 256, 256, 10], activation="tanh")
    sim = npc.Simulator(net, inference=npc.Inference(steps=20, rate=0.1), optimizer=npc.Adam(1e-3))
"""

from __future__ import annotations

from . import analysis, data
from .analysis import alignment
from .analysis.alignment import gradient_alignment
from .backends.row_blocks import get_threads, set_threads
from .checkpoint import load
from .data import one_hot
from .dynamics import modes, schedule
from .dynamics.inference import Inference, Preconditioner
from .dynamics.natural_gradient import NaturalGradient
from .dynamics.optim import SGD, Adam, AdamW
from .dynamics.plan import Plan, lower
from .errors import CheckpointError, DivergenceError, RecordingError
from .model import activations, energy
from .model.builders import mlp, transformer
from .model.distributions import Bernoulli, Categorical, Gaussian, Normal, Precision
from .model.network import Connection, Network, Population
from .record.probes import Probe
from .record.reader import (
    LabelledArray,
    Recording,
    open,
)
from .record.recording import Recorder
from .simulator import History, Simulator, State

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Bernoulli",
    "Categorical",
    "CheckpointError",
    "Connection",
    "DivergenceError",
    "Gaussian",
    "History",
    "Inference",
    "LabelledArray",
    "NaturalGradient",
    "Network",
    "Normal",
    "Plan",
    "Population",
    "Precision",
    "Preconditioner",
    "Probe",
    "Recorder",
    "Recording",
    "RecordingError",
    "Simulator",
    "State",
    "__version__",
    "activations",
    "alignment",
    "analysis",
    "data",
    "energy",
    "get_threads",
    "gradient_alignment",
    "load",
    "lower",
    "mlp",
    "modes",
    "one_hot",
    "open",
    "schedule",
    "set_threads",
    "transformer",
]
