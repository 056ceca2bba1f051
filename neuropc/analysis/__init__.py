"""Analyses of recorded activity (:mod:`.measures`), PC-vs-backprop gradient alignment
(:mod:`.alignment`), accuracy (:mod:`.metrics`) and figures (:mod:`.plotting`).

The measures are re-exported here: ``npc.analysis.erp(...)``, ``npc.analysis.rdm(...)``.
"""

from __future__ import annotations

from .measures import (
    COMPARE_METHODS,
    RDM_METHODS,
    compare_rdms,
    condition_patterns,
    decode_over_steps,
    difference_wave,
    energy_over_steps,
    erp,
    erp_units,
    mismatch_indices,
    peak,
    rdm,
    rdms_by_population,
    repetition_curve,
    ssa_index,
    temporal_generalisation,
)

__all__ = [
    "COMPARE_METHODS",
    "RDM_METHODS",
    "compare_rdms",
    "condition_patterns",
    "decode_over_steps",
    "difference_wave",
    "energy_over_steps",
    "erp",
    "erp_units",
    "mismatch_indices",
    "peak",
    "rdm",
    "rdms_by_population",
    "repetition_curve",
    "ssa_index",
    "temporal_generalisation",
]
