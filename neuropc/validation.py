"""Checks of user settings, shared by every place that takes them.

Each check raises ``ValueError`` (``TypeError`` for a value of the wrong kind) with a message that
names the setting, says what was expected and shows what was given, e.g.
``Adam.eps must be a finite number > 0; got 0``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

# The largest step count a run may ask for: per-step buffers (energies, traces) are allocated up
# front, and 10**7 steps is already hours of simulation for the smallest network.
MAX_STEPS = 10_000_000


def number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float, within ``[low, high]`` (an end is excluded when ``*_open``).

    Rejects strings, booleans, None, NaN and infinities with a message naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__})")
    v = float(value)
    bounds = _bounds_text(low, high, low_open, high_open)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number{bounds}; got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be a finite number{bounds}; got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be a finite number{bounds}; got {value!r}")
    return v


def integer(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int within ``[low, high]``; rejects floats, strings and booleans."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be an integer{_bounds_text(low, high)}; got {value!r}")
    return v


def flag(value: object, name: str) -> bool:
    """``value`` as a bool; only True and False (numpy's too) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__})")
    return bool(value)


def finite_array(value: object, name: str) -> np.ndarray:
    """``value`` as a float64 array of finite numbers (strings and objects are refused)."""
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged sequences and the like
        raise ValueError(f"{name} must be numbers; got {value!r} ({e})") from None
    if a.dtype.kind not in "biuf" or a.dtype.kind == "b":
        raise TypeError(f"{name} must be real numbers; got {value!r} (dtype {a.dtype})")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return a


def instance(value: object, cls: type | tuple[type, ...], name: str, what: str) -> None:
    """Raise ``TypeError`` unless ``value`` is an instance of ``cls`` (``what`` describes it)."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be {what}; got {value!r} ({type(value).__name__})")


def _bounds_text(
    low: float | None, high: float | None, low_open: bool = False, high_open: bool = False
) -> str:
    def fmt(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {fmt(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {fmt(high)}")
    return (" " + " and ".join(parts)) if parts else ""
