"""Exceptions raised by neuropc."""

from __future__ import annotations


class DivergenceError(RuntimeError):
    """The energy of a population became non-finite during inference.

    ``step`` is the inference step (0 = the initial state) and ``population`` the population whose
    energy was non-finite first. Parameters are left as they were before the batch.
    """

    def __init__(self, step: int, population: str, phase: str) -> None:
        self.step = step
        self.population = population
        self.phase = phase
        super().__init__(
            f"inference diverged: the energy of population {population!r} became non-finite at "
            f"inference step {step} (phase {phase!r}); parameters were left unchanged. "
            "Lower the inference rate or the learning rate."
        )


class RecordingError(RuntimeError):
    """A recording could not be created, written or read. The simulation state is unaffected."""
