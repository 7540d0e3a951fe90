"""Errors raised at refsnn's public boundary, and the validators that raise them.

Every message names the argument, what was expected and what came, so that a user (or the CLI,
which prints the message as its one line) can fix the call without reading a traceback.
Internal invariants use ``assert``; user mistakes never do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class RefsnnError(ValueError):
    """A user-facing error: bad argument, bad file, bad spec."""


class SpecError(RefsnnError):
    """The network spec (SPEC.json or the dict given to refsnn.grad) is malformed."""


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_number(name: str, value: Any, *, minimum: float | None = None,
                 strict_minimum: bool = False, integer: bool = False) -> float:
    """Return ``value`` as a float (or int) after checking it is a finite real number in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        kind = "an integer" if integer else "a finite number"
        raise RefsnnError(f"{name} must be {kind}, got {_describe(value)}")
    if integer and not float(value).is_integer():
        raise RefsnnError(f"{name} must be an integer, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise RefsnnError(f"{name} must be finite, got {number}")
    if minimum is not None:
        if strict_minimum and not number > minimum:
            raise RefsnnError(f"{name} must be > {minimum:g}, got {number:g}")
        if not strict_minimum and not number >= minimum:
            raise RefsnnError(f"{name} must be >= {minimum:g}, got {number:g}")
    return int(number) if integer else number


def check_array(name: str, value: Any, *, ndim: int | None = None,
                shape: tuple[int | None, ...] | None = None,
                shape_text: str | None = None, dtype=np.float64) -> np.ndarray:
    """Return ``value`` as a finite array of ``dtype`` (float64 by default) and the expected shape.

    ``shape`` may hold ``None`` for free dimensions; ``shape_text`` is how the expected shape is
    named in the message, e.g. ``"(T, B, 50)"``. Integer and boolean arrays are accepted and
    converted (spike trains are often stored as uint8); anything else is refused.
    """
    if not isinstance(value, np.ndarray):
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        else:
            raise RefsnnError(f"{name} must be a numpy array, got {_describe(value)}")
    if value.dtype.kind not in "biuf":
        raise RefsnnError(f"{name} must hold real numbers, got dtype {value.dtype}")
    expected = shape_text or (str(tuple("*" if s is None else s for s in shape)) if shape else None)
    if ndim is not None and value.ndim != ndim:
        raise RefsnnError(f"{name} must have {ndim} dimensions {expected or ''}".rstrip()
                          + f", got shape {value.shape}")
    if shape is not None:
        if value.ndim != len(shape) or any(s is not None and s != v
                                           for s, v in zip(shape, value.shape)):
            raise RefsnnError(f"{name} must have shape {expected}, got {value.shape}")
    array = np.asarray(value, dtype=dtype)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise RefsnnError(f"{name} must be finite, got {array[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return array


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise RefsnnError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {_describe(value)}")
    return value
