"""Exceptions raised by neuropc."""

from __future__ import annotations


class DivergenceError(RuntimeError):
    """A run produced non-finite numbers; parameters and optimiser state are left as they were.

    Two sources, told apart by ``source``:

    * ``"inference"``: the energy of a population became non-finite during inference. ``step`` is
      the inference step (0 = the initial state) and ``population`` the population whose energy
      was non-finite first.
    * ``"optimizer"``: inference was finite, but the optimiser step made a parameter non-finite
      (e.g. a huge learning rate). ``parameter`` names it (``"pre->post"`` or ``"pop:bias"``) and
      ``index`` is the first bad entry; the step was rolled back.
    * ``"precision"``: a learned precision (:class:`~neuropc.model.distributions.Precision`) of
      ``population`` would have become non-finite or non-positive; the batch was undone.

    In data-parallel training (:mod:`neuropc.distributed`) ``rank`` is the rank that diverged:
    that rank reports the step and population, and the ranks whose own inference was finite
    raise it too, with only ``rank`` set.
    """

    def __init__(
        self,
        step: int | None,
        population: str | None,
        phase: str,
        *,
        parameter: str | None = None,
        index: tuple[int, ...] | None = None,
        precision: bool = False,
        rank: int | None = None,
    ) -> None:
        self.step = step
        self.rank = rank
        self.population = population
        self.phase = phase
        self.parameter = parameter
        self.index = index
        self.source = (
            "precision" if precision else "inference" if parameter is None else "optimizer"
        )
        if rank is not None and population is None and parameter is None and not precision:
            msg = (
                f"inference diverged on rank {rank} of the process group (phase {phase!r}; "
                "that rank names the population); no rank learned from the batch"
            )
        elif precision:
            msg = (
                f"the learned precision of population {population!r} became non-finite or not "
                f"positive definite after the batch (inference step {step}, phase {phase!r}); "
                "the batch's optimiser step was undone and parameters were left unchanged. "
                "Lower Precision.lr, or raise its damping."
            )
        elif parameter is None:
            msg = (
                f"inference diverged: the energy of population {population!r} became non-finite "
                f"at inference step {step} (phase {phase!r}); parameters were left unchanged. "
                "Lower the inference rate or the learning rate."
            )
        else:
            msg = (
                f"the optimiser step diverged (inference was finite): parameter {parameter!r} "
                f"became non-finite at index {index}; the step was rolled back and parameters and "
                "optimiser state were left unchanged. Check the optimiser settings (lr, eps, "
                "weight_decay)."
            )
        super().__init__(msg)


class RecordingError(RuntimeError):
    """A recording could not be created, written or read. The simulation state is unaffected."""


class CheckpointError(ValueError):
    """A checkpoint could not be written, read or applied; nothing was changed."""
