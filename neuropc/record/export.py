"""Views of a recording for other tools: a readable summary, NWB, SONATA reports.

* :func:`describe` prints what a recording holds (``neuropc inspect FILE``;
  :mod:`neuropc.record.describe`).
* :func:`to_nwb` writes a Neurodata Without Borders file (needs ``pynwb``:
  ``pip install "neuropc[nwb]"``); see ``docs/nwb.md`` for the layout and the time mapping
  (:mod:`neuropc.record.nwb`).
* :func:`to_sonata` writes small SONATA report files that point into the recording, no copy
  (:mod:`neuropc.record.sonata`).

All three read the recording through :func:`neuropc.open`, so a file that is not a readable
recording raises :class:`~neuropc.errors.RecordingError`. Data are streamed in row blocks, never
read whole (the helpers that read the native groups: :mod:`neuropc.record.groups`).
"""

from __future__ import annotations

from .describe import describe
from .groups import (
    attributes,
    block_rows,
    iter_blocks,
    require,
    row_index,
    sanitize,
    unique_names,
    window_text,
)
from .groups import attributes as _attrs  # the names neuropc.analysis.plotting imports
from .groups import require as _require
from .groups import unique_names as _unique_names
from .nwb import SECONDS_PER_STEP, to_nwb
from .sonata import to_sonata

__all__ = [
    "SECONDS_PER_STEP",
    "_attrs",
    "_require",
    "_unique_names",
    "attributes",
    "block_rows",
    "describe",
    "iter_blocks",
    "require",
    "row_index",
    "sanitize",
    "to_nwb",
    "to_sonata",
    "unique_names",
    "window_text",
]
