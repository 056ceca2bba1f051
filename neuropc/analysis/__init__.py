"""Analyses of recorded activity (:mod:`.measures`), PC-vs-backprop gradient alignment
(:mod:`.alignment`), accuracy (:mod:`.metrics`), generative-model metrics (:mod:`.generative`:
ELBO / IWAE bounds, Fréchet distance, precision / recall / density / coverage), the features
they are computed on (:mod:`.features`: a deterministic classifier with packaged weights) and figures
(:mod:`.plotting`).

The measures are re-exported here: ``npc.analysis.erp(...)``, ``npc.analysis.rdm(...)``.
"""

from __future__ import annotations

from . import features, generative, measures
from .measures import *  # noqa: F403  (the measures are this package's API)

__all__ = [*measures.__all__, "features", "generative"]
