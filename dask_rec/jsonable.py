"""Plain-JSON copies of what our metadata and reports hold (NumPy scalars and arrays, paths)."""

from __future__ import annotations

from pathlib import PurePath

import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(value):
    """``value`` with dict keys as strings, tuples and arrays as lists, NumPy scalars as Python
    numbers and paths as strings; anything else is returned as it is."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    return value
