"""Per-partition maths of the ingest (pandas/NumPy, no Dask, no files).

:func:`clean_partition` checks one partition of a log (null IDs, invalid values and timestamps,
ID types) and returns its valid rows; :func:`scan_partition` summarises it for the first pass
(rows per user, distinct items, ID kinds, drop counts) and :func:`merge_scans` merges such
summaries (associative, for a tree reduction); :func:`dedup_entries` merges duplicate
(user, item) rows by a policy; :func:`filter_round` is one round of iterated min-count
filtering. :mod:`dask_rec.data.ingestion` runs them as tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dask_rec.kernels.ids import id_kind, sorted_unique

__all__ = ["PartitionSpec", "clean_partition", "scan_partition", "merge_scans", "dedup_entries", "filter_round"]


@dataclass(frozen=True)
class PartitionSpec:
    """What the partition kernels need to know (small and picklable)."""

    user_col: str
    item_col: str
    value_col: str | None
    ts_col: str | None
    on_invalid: str
    duplicates: str
    text_ids: bool = False  # IDs come as text (CSV): integers when every value parses as one
    kinds: dict = field(default_factory=dict)  # column -> "int"/"str" once decided


def _drop_invalid(df: pd.DataFrame, col: str, bad: np.ndarray, drop: np.ndarray, spec: PartitionSpec, what: str) -> int:
    """Mark the rows of ``col`` flagged ``bad`` (and not dropped already) in ``drop``, or, with
    ``on_invalid='error'``, reject them naming a few; returns how many were marked."""
    bad = bad & ~drop
    n = int(bad.sum())
    if n and spec.on_invalid == "error":
        shown = ", ".join(repr(v) for v in pd.Series(df[col].to_numpy()[bad][:5]).tolist())
        raise ValueError(what.format(col=col, n=n) + f", e.g. {shown}; pass on_invalid='drop' to drop those rows")
    drop |= bad
    return n


def clean_partition(df: pd.DataFrame, spec: PartitionSpec):
    """Check one partition and return ``(users, items, values, ts, stats)`` of its valid rows."""
    stats = {"rows": int(len(df)), "null_ids": 0, "invalid_values": 0, "invalid_timestamps": 0}
    drop = np.zeros(len(df), dtype=bool)
    for col in (spec.user_col, spec.item_col):
        nulls = df[col].isna().to_numpy()
        if nulls.any():
            if spec.on_invalid == "error":
                raise ValueError(f"column {col!r} has {int(nulls.sum())} null IDs (first at row {int(np.argmax(nulls))} "
                                 "of a partition); pass on_invalid='drop' to drop those rows")
            drop |= nulls
    stats["null_ids"] = int(drop.sum())
    values = ts = None
    if spec.value_col is not None:
        values, bad = _numeric(df[spec.value_col], spec.value_col)
        stats["invalid_values"] = _drop_invalid(
            df, spec.value_col, bad, drop, spec,
            "value column {col!r} has {n} invalid values (null, NaN, infinite, negative or not a number)")
    if spec.ts_col is not None:
        ts, bad = _timestamps(df[spec.ts_col], spec.ts_col)
        stats["invalid_timestamps"] = _drop_invalid(
            df, spec.ts_col, bad, drop, spec, "timestamp column {col!r} has {n} invalid values")
    keep = ~drop
    users = _ids(df[spec.user_col], spec.user_col, keep, spec)
    items = _ids(df[spec.item_col], spec.item_col, keep, spec)
    if drop.any():
        values = values[keep] if values is not None else None
        ts = ts[keep] if ts is not None else None
    return users, items, values, ts, stats


def _numeric(series: pd.Series, col: str):
    """float64 values and a mask of invalid ones (null, NaN, inf, negative, unparsable)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        raise TypeError(f"value column {col!r} holds booleans; expected numbers")
    if pd.api.types.is_numeric_dtype(series.dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr < 0)
    return arr, bad


def _timestamps(series: pd.Series, col: str):
    """int64 (or float64) sort keys of a timestamp column and a mask of invalid ones."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        bad = series.isna().to_numpy()
        arr = series.dt.tz_localize(None) if getattr(series.dt, "tz", None) is not None else series
        return arr.astype("datetime64[ns]").to_numpy(dtype="datetime64[ns]").view(np.int64), bad
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        bad = series.isna().to_numpy()
        return series.fillna(0).to_numpy(dtype=np.int64), bad
    if pd.api.types.is_float_dtype(dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return arr, ~np.isfinite(arr)
    # text: integers, else numbers, else dates
    num = pd.to_numeric(series, errors="coerce")
    if num.notna().sum() == series.notna().sum():
        return _timestamps(num, col)
    dates = pd.to_datetime(series, errors="coerce", utc=True)
    return _timestamps(dates, col)


def _ids(series: pd.Series, col: str, keep: np.ndarray, spec: PartitionSpec):
    """The valid rows' IDs as int64 numpy or a pandas ``str`` array."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.cat.categories.dtype)
    if not keep.all():
        series = series[keep]
    dtype = series.dtype
    name = f"ID column {col!r}"
    if pd.api.types.is_bool_dtype(dtype):
        raise TypeError(f"{name} holds booleans; IDs must be integers or strings")
    if pd.api.types.is_integer_dtype(dtype):
        if dtype.kind == "u" and len(series) and series.max() > np.iinfo(np.int64).max:
            raise TypeError(f"{name} has IDs beyond the int64 range, e.g. {series.max()}")
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(dtype):
        arr = series.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)
        if bad.any():
            raise TypeError(f"{name} holds non-integral numbers, e.g. {float(arr[bad][0])!r}; "
                            "IDs must be integers or strings")
        return arr.astype(np.int64)
    if pd.api.types.is_string_dtype(dtype) and dtype != object:
        text = series.array if isinstance(dtype, pd.StringDtype) else pd.array(series, dtype="str")
        return _text_ids(text, col, spec)
    if dtype == object:
        kind = id_kind(series.to_numpy(), name=name)
        if kind == "int":
            return series.to_numpy().astype(np.int64)
        return _text_ids(pd.array(series.to_numpy(), dtype="str"), col, spec)
    raise TypeError(f"{name} has dtype {dtype}; IDs must be integers or strings")


def _text_ids(text, col: str, spec: PartitionSpec):
    kind = spec.kinds.get(col)
    if spec.text_ids and kind != "str":
        parsed = _parse_ints(text)
        if parsed is not None:
            return parsed
        if kind == "int":  # pragma: no cover - pass 1 saw only integers
            raise TypeError(f"ID column {col!r} changed type between passes")
    return pd.array(text, dtype="str")


def _parse_ints(text):
    """int64 array when every string is an integer literal, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(text)  # zero-copy for pyarrow-backed strings (__arrow_array__)
        return np.asarray(pc.cast(pc.utf8_trim_whitespace(arr), pa.int64()), dtype=np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError):
        return None


def _kind_of(ids) -> str:
    return "int" if isinstance(ids, np.ndarray) and ids.dtype == np.int64 else "str"


def scan_partition(df: pd.DataFrame, spec: PartitionSpec) -> dict:
    """Pass 1 on one partition: counts per user, distinct items, ID kinds and drop counts.

    An input error (bad IDs or values) is returned rather than raised, so the client re-raises
    it as is, without a worker traceback in the cluster's log.
    """
    try:
        users, items, _, _, stats = clean_partition(df, spec)
    except (ValueError, TypeError) as exc:
        import traceback

        return {"error": exc, "traceback": traceback.format_exc()}
    stats["valid_rows"] = int(len(users))
    return {
        "stats": stats,
        "kinds": {spec.user_col: {_kind_of(users)} if len(users) else set(),
                  spec.item_col: {_kind_of(items)} if len(items) else set()},
        "users": pd.Series(users, copy=False).value_counts(sort=False) if len(users) else None,
        "items": pd.unique(items) if len(items) else None,
    }


def merge_scans(scans: list) -> dict:
    """Tree-reduction step of pass 1 (associative)."""
    for s in scans:
        if "error" in s:
            return s
    stats = {}
    kinds: dict = {}
    for s in scans:
        for k, v in s["stats"].items():
            stats[k] = stats.get(k, 0) + v
        for col, ks in s["kinds"].items():
            kinds.setdefault(col, set()).update(ks)
    mixed = any(len(k) > 1 for k in kinds.values())
    users = [s["users"] for s in scans if s["users"] is not None]
    items = [s["items"] for s in scans if s["items"] is not None]
    if mixed or not users:
        merged_users = users[0] if users and not mixed else None
        merged_items = items[0] if items and not mixed else None
    else:
        merged_users = pd.concat(users).groupby(level=0, sort=False).sum() if len(users) > 1 else users[0]
        merged_items = pd.unique(_concat(items)) if len(items) > 1 else items[0]
    return {"stats": stats, "kinds": kinds, "users": merged_users, "items": merged_items}


def _concat(arrays):
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np.concatenate(arrays)
    return pd.array(np.concatenate([np.asarray(a, dtype=object) for a in arrays]), dtype="str")


def dedup_entries(rows: np.ndarray, items: np.ndarray, values, ts, n_items: int, duplicates: str):
    """Merge duplicate (row, item) pairs; return ``(rows, items, values)`` sorted by (row, item).

    ``values`` is None for binarized data. ``duplicates`` is ``sum``, ``max`` or ``last``
    (the greatest ``ts``, ties and ``ts=None`` going to the later row).
    """
    key = rows.astype(np.int64) * n_items + items
    if values is None:
        key = sorted_unique(key)
        return (key // n_items).astype(np.int32), (key % n_items).astype(items.dtype), None
    if duplicates == "last" and ts is not None:
        order = np.lexsort((ts, key))
    else:
        order = np.argsort(key, kind="stable")
    key = key[order]
    values = values[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.empty(0, np.int64)
    if len(first) == len(key):
        merged = values
    elif duplicates == "sum":
        merged = np.add.reduceat(values, first)
    elif duplicates == "max":
        merged = np.maximum.reduceat(values, first)
    else:
        merged = values[np.append(first[1:], len(key)) - 1]
    key = key[first]
    return (key // n_items).astype(np.int32), (key % n_items).astype(items.dtype), merged.astype(np.float32)


def filter_round(user_keep: np.ndarray, item_keep: np.ndarray, user_counts: np.ndarray, item_counts: np.ndarray,
                 min_user: int, min_item: int):
    """One round of iterated min-count filtering.

    ``user_counts``/``item_counts`` count the entries whose user and item are both kept by
    ``user_keep``/``item_keep``; returns the masks narrowed to users and items that still meet
    their minimum, and whether they changed (the iteration stops at the first round that
    changes nothing: the largest sub-log where every user and item meets its minimum).
    """
    new_user_keep = user_keep & (user_counts >= min_user)
    new_item_keep = item_keep & (item_counts >= min_item)
    changed = not (np.array_equal(new_user_keep, user_keep) and np.array_equal(new_item_keep, item_keep))
    return new_user_keep, new_item_keep, changed
