"""ID kinds and lookups: the maths under :class:`dask_rec.data.vocabulary.Vocabulary` (no Dask).

IDs are all integers (held as ``int64``) or all strings (a pandas ``str`` array): :func:`id_kind`
tells which, :func:`as_kind` converts, :func:`sorted_unique` is the sort-based distinct of int64
arrays and :func:`int_lookup_values` prepares values to be looked up in an integer vocabulary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["id_kind", "as_kind", "sorted_unique", "int_lookup_values"]


def id_kind(values, name: str = "IDs") -> str:
    """``"int"`` or ``"str"``: the kind of a 1-D array of IDs (no nulls).

    Integer dtypes (and floats holding whole numbers) are ``"int"``; strings are ``"str"``.

    Raises
    ------
    TypeError
        For booleans, non-integral or non-finite floats, other types, or a mix of integers and
        strings; the message names ``name`` and an offending value.
    """
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        values = np.asarray(values, dtype=object) if len(values) else np.asarray(values)
        dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return id_kind(np.asarray(values.categories if hasattr(values, "categories") else values.cat.categories), name)
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError(f"{name} must be integers or strings; got booleans")
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        arr = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise TypeError(f"{name} must be integers or strings; got the non-integral number {float(arr[bad][0])!r}")
        return "int"
    if pd.api.types.is_string_dtype(dtype) and not dtype == object:
        return "str"
    if dtype == object or dtype.kind in "OUT":
        arr = np.asarray(values, dtype=object)
        if arr.size == 0:
            return "str"
        is_str = np.fromiter((isinstance(v, str) for v in arr), dtype=bool, count=arr.size)
        if is_str.all():
            return "str"
        is_int = np.fromiter((isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr),
                             dtype=bool, count=arr.size)
        if is_int.all():
            return "int"
        is_float = np.fromiter((isinstance(v, (float, np.floating)) for v in arr), dtype=bool, count=arr.size)
        if (is_int | is_float).all():
            return id_kind(arr.astype(np.float64), name)
        if (is_str | is_int).all():
            raise TypeError(
                f"{name} mix integers and strings (e.g. {arr[is_int][0]!r} and {arr[is_str][0]!r}); "
                "IDs of one vocabulary must all be of one type"
            )
        other = arr[~(is_str | is_int)][0]
        raise TypeError(f"{name} must be integers or strings; got {type(other).__name__} {other!r}")
    raise TypeError(f"{name} must be integers or strings; got dtype {dtype}")


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a numeric array (sort-based: numpy's hash-based ``unique`` is slow on int64)."""
    values = np.sort(values)
    if len(values) > 1:
        values = values[np.concatenate([[True], values[1:] != values[:-1]])]
    return values


def as_kind(values, kind: str, name: str = "IDs"):
    """``values`` as an int64 ndarray (kind ``int``) or a pandas ``str`` array (kind ``str``)."""
    if kind == "int":
        if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
            values = np.asarray(values)
        arr = np.asarray(values)
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise TypeError(f"{name} exceed the int64 range (largest {arr.max()})")
        return arr.astype(np.int64, copy=False)
    return pd.array(np.asarray(values, dtype=object), dtype="str") if not isinstance(
        getattr(values, "dtype", None), pd.StringDtype) else pd.array(values, dtype="str")


_INT64_BOUND = 2.0**63


def int_lookup_values(values, dtype):
    """``(int64 array, valid mask or None)`` of values looked up in an integer vocabulary.

    Integers are taken exactly; whole floats are accepted; nulls, fractions and out-of-range
    numbers are invalid (unknown). Strings or other objects raise ``TypeError``.
    """
    if isinstance(dtype, pd.CategoricalDtype):
        values = np.asarray(values)
        dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError("this vocabulary holds integer IDs; got booleans")
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        arr = np.asarray(values)
        if dtype.kind == "u" and dtype.itemsize == 8:
            valid = arr < 2**63
            return np.where(valid, arr, 0).astype(np.int64), valid
        return arr.astype(np.int64, copy=False), None
    if pd.api.types.is_integer_dtype(dtype):  # nullable / arrow integers
        series = pd.Series(values, copy=False)
        return series.fillna(0).to_numpy(dtype=np.int64), series.notna().to_numpy()
    if pd.api.types.is_float_dtype(dtype):
        num = pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(num) & (num == np.round(num)) & (np.abs(num) < _INT64_BOUND)
        return np.where(valid, num, 0).astype(np.int64), valid
    if dtype == object:
        objs = np.asarray(values, dtype=object)
        arr = np.zeros(len(objs), dtype=np.int64)
        valid = np.zeros(len(objs), dtype=bool)
        for k, v in enumerate(objs):  # object input only (small, user-given lists)
            if isinstance(v, (bool, np.bool_)):
                raise TypeError("this vocabulary holds integer IDs; got booleans")
            if isinstance(v, (int, np.integer)):
                if -(2**63) <= v < 2**63:
                    arr[k], valid[k] = v, True
            elif isinstance(v, (float, np.floating)):
                if np.isfinite(v) and v == round(v) and abs(v) < _INT64_BOUND:
                    arr[k], valid[k] = int(v), True
            elif v is not None and not pd.isna(v):
                raise TypeError(f"this vocabulary holds integer IDs; got {type(v).__name__} {v!r}")
        return arr, valid
    if pd.api.types.is_string_dtype(dtype) or getattr(dtype, "kind", "") in "US":
        first = next(iter(values), None)
        raise TypeError(f"this vocabulary holds integer IDs; got strings such as {first!r}")
    raise TypeError(f"this vocabulary holds integer IDs; got values of dtype {dtype}")
