"""Ingest an interaction log into an interaction store, out of core, on Dask.

The log is read partition by partition (Parquet or CSV through ``dask.dataframe``, any fsspec
URL, or an in-memory pandas/pyarrow/dask frame) and goes through five passes, each a set of
tasks with memory bounded by one input partition, one shuffle bucket or one row block:

1. **scan** each partition: check and clean it (null IDs, bad values, ID types), count rows per
   user and list distinct items; merged by a tree reduction into the (pre-filter) vocabularies.
2. **split** each partition by user bucket (contiguous ranges of user indices holding about
   ``dask_rec.ingestion.bucket-rows`` rows) into one scratch file per column, sorted by bucket.
3. **dedup** each bucket: gather its slices from every partition's files, merge duplicate
   (user, item) rows (``sum``/``max``/``last``), save it sorted by (user, item) and return
   its per-user and per-item counts.
4. **filter** (only when a minimum count is above 1): drop users and items below their minimum
   and recount, round after round, until nothing changes (the result is the largest sub-log
   where every user and item meets its minimum, the same as iterated filtering in pandas).
5. **write** each row block's CSR into the store, then the chunks two blocks share.

The client only holds per-user and per-item arrays (vocabularies, counts), never the log. Scratch
files live in the store's temporary directory, so the store path must be on a filesystem all
workers see (a local path for a LocalCluster).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dask_rec import atomic as _atomic
from dask_rec import store as _store
from dask_rec import store_writer as _writer
from dask_rec import settings
from dask_rec.atomic import local_path
from dask_rec.kernels.gramian import sum_arrays
from dask_rec.vocabulary import Vocabulary, id_kind, sorted_unique

__all__ = ["ingest", "DUPLICATE_POLICIES"]

logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("sum", "max", "last")
_INVALID_POLICIES = ("error", "drop")
#: Rows per partition made from an in-memory pandas or pyarrow input.
_MEMORY_PARTITION_ROWS = 1_000_000


@dataclass(frozen=True)
class _Spec:
    """What the partition kernels need to know (small and picklable)."""

    user_col: str
    item_col: str
    value_col: str | None
    ts_col: str | None
    on_invalid: str
    duplicates: str
    text_ids: bool = False  # IDs come as text (CSV): integers when every value parses as one
    kinds: dict = field(default_factory=dict)  # column -> "int"/"str" once decided


# ----------------------------------------------------------------------------------------------
# partition kernels (no Dask in here)
# ----------------------------------------------------------------------------------------------

def _drop_invalid(df: pd.DataFrame, col: str, bad: np.ndarray, drop: np.ndarray, spec: _Spec, what: str) -> int:
    """Mark the rows of ``col`` flagged ``bad`` (and not dropped already) in ``drop``, or, with
    ``on_invalid='error'``, reject them naming a few; returns how many were marked."""
    bad = bad & ~drop
    n = int(bad.sum())
    if n and spec.on_invalid == "error":
        shown = ", ".join(repr(v) for v in pd.Series(df[col].to_numpy()[bad][:5]).tolist())
        raise ValueError(what.format(col=col, n=n) + f", e.g. {shown}; pass on_invalid='drop' to drop those rows")
    drop |= bad
    return n


def _clean(df: pd.DataFrame, spec: _Spec):
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


def _ids(series: pd.Series, col: str, keep: np.ndarray, spec: _Spec):
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


def _text_ids(text, col: str, spec: _Spec):
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


def _scan_partition(df: pd.DataFrame, spec: _Spec) -> dict:
    """Pass 1 on one partition: counts per user, distinct items, ID kinds and drop counts.

    An input error (bad IDs or values) is returned rather than raised, so the client re-raises
    it as is, without a worker traceback in the cluster's log.
    """
    try:
        users, items, _, _, stats = _clean(df, spec)
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


def _merge_scans(scans: list) -> dict:
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


def _split_partition(df: pd.DataFrame, p: int, spec: _Spec, users: Vocabulary, items: Vocabulary,
                     bucket_bounds: np.ndarray, scratch: str) -> int:
    """Pass 2 on one partition: encode IDs and save its rows sorted by bucket to scratch."""
    u, i, values, ts, _ = _clean(df, spec)
    ucode = users.codes(u)
    icode = items.codes(i)
    if (ucode < 0).any() or (icode < 0).any():
        raise RuntimeError("the source changed while it was being ingested (IDs unseen by the first pass)")
    bucket = np.searchsorted(bucket_bounds, ucode, side="right") - 1
    if len(bucket_bounds) <= 2**15:  # numpy's stable sort is a radix sort for 16-bit keys
        bucket = bucket.astype(np.int16)
    order = np.argsort(bucket, kind="stable")
    offsets = np.zeros(len(bucket_bounds), dtype=np.int64)
    np.cumsum(np.bincount(bucket, minlength=len(bucket_bounds) - 1), out=offsets[1:])
    stem = os.path.join(scratch, f"part-{p:06d}")
    rows = (ucode - bucket_bounds[bucket])[order].astype(np.int32)
    np.save(f"{stem}.rows.npy", rows)
    np.save(f"{stem}.items.npy", icode[order].astype(_writer.index_dtype(len(items))))
    if values is not None:
        np.save(f"{stem}.values.npy", values[order].astype(np.float64 if spec.duplicates == "sum" else np.float32))
    if ts is not None:
        np.save(f"{stem}.ts.npy", ts[order])
    np.save(f"{stem}.offsets.npy", offsets)
    return int(len(u))


def _load_bucket_rows(b: int, n_parts: int, scratch: str, columns: tuple) -> dict:
    """Concatenate bucket ``b``'s slices of every partition's scratch files (in partition order)."""
    out = {c: [] for c in columns}
    for p in range(n_parts):
        stem = os.path.join(scratch, f"part-{p:06d}")
        offsets = np.load(f"{stem}.offsets.npy")
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        if hi > lo:
            for c in columns:
                out[c].append(np.array(np.load(f"{stem}.{c}.npy", mmap_mode="r")[lo:hi]))
    return {c: (np.concatenate(v) if v else None) for c, v in out.items()}


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


def _dedup_bucket(b: int, n_rows: int, n_parts: int, n_items: int, spec: _Spec, scratch: str):
    """Pass 3 on one bucket; saves it deduplicated, returns ``(row_counts, item_counts, rows_in)``."""
    columns = ("rows", "items") + (("values",) if spec.value_col else ()) + (("ts",) if spec.ts_col else ())
    data = _load_bucket_rows(b, n_parts, scratch, columns)
    stem = os.path.join(scratch, f"bucket-{b:06d}")
    if data["rows"] is None:
        rows = np.empty(0, np.int32)
        items = np.empty(0, _writer.index_dtype(n_items))
        values = np.empty(0, np.float32) if spec.value_col else None
        rows_in = 0
    else:
        rows_in = len(data["rows"])
        rows, items, values = dedup_entries(data["rows"], data["items"], data.get("values"), data.get("ts"),
                                            n_items, spec.duplicates)
    row_counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    np.save(f"{stem}.indptr.npy", indptr)
    np.save(f"{stem}.items.npy", items)
    if values is not None:
        np.save(f"{stem}.values.npy", values)
    item_counts = np.bincount(items, minlength=n_items).astype(np.int64)
    return row_counts, item_counts, rows_in


def _filter_counts(b: int, user_keep: np.ndarray, item_keep: np.ndarray, scratch: str):
    """One filtering round on one bucket: counts of entries whose user and item are both kept."""
    stem = os.path.join(scratch, f"bucket-{b:06d}")
    indptr = np.load(f"{stem}.indptr.npy")
    items = np.load(f"{stem}.items.npy", mmap_mode="r")
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    ok = user_keep[rows] & item_keep[items]
    row_counts = np.bincount(rows[ok], minlength=len(indptr) - 1).astype(np.int64)
    item_counts = np.bincount(np.asarray(items)[ok], minlength=len(item_keep)).astype(np.int64)
    return row_counts, item_counts


def _gather_rows(stem: str, local_rows: np.ndarray, has_values: bool):
    """Entries (items, values) of ``local_rows`` (sorted) of one deduplicated bucket."""
    indptr = np.load(f"{stem}.indptr.npy", mmap_mode="r")
    items = np.load(f"{stem}.items.npy", mmap_mode="r")
    values = np.load(f"{stem}.values.npy", mmap_mode="r") if has_values else None
    first, last = int(local_rows[0]), int(local_rows[-1])
    if last - first + 1 == len(local_rows):  # a contiguous run of rows: one slice
        lo, hi = int(indptr[first]), int(indptr[last + 1])
        return np.array(items[lo:hi]), (np.array(values[lo:hi]) if has_values else None)
    starts = np.asarray(indptr[local_rows], dtype=np.int64)
    lengths = np.asarray(indptr[local_rows + 1], dtype=np.int64) - starts
    take = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths) + np.arange(lengths.sum())
    return np.asarray(items[take]), (np.asarray(values[take]) if has_values else None)


def _write_block(old_rows: np.ndarray, offset: int, expected: int, bucket_bounds: np.ndarray, item_remap,
                 n_items_out: int, has_values: bool, total: int, root: str, scratch: str) -> int:
    """Pass 5 on one row block: build its entries from the buckets and write them to the store."""
    first_b = int(np.searchsorted(bucket_bounds, old_rows[0], side="right") - 1)
    last_b = int(np.searchsorted(bucket_bounds, old_rows[-1], side="right") - 1)
    items_parts, value_parts = [], []
    for b in range(first_b, last_b + 1):
        lo, hi = np.searchsorted(old_rows, bucket_bounds[b:b + 2])
        if hi <= lo:
            continue
        items, values = _gather_rows(os.path.join(scratch, f"bucket-{b:06d}"), old_rows[lo:hi] - bucket_bounds[b],
                                     has_values)
        if item_remap is not None:
            new = item_remap[items]
            ok = new >= 0
            items = new[ok]
            values = values[ok] if values is not None else None
        items_parts.append(items)
        value_parts.append(values)
    items = np.concatenate(items_parts) if items_parts else np.empty(0, np.int64)
    if len(items) != expected:  # pragma: no cover - an internal consistency check
        raise RuntimeError(f"row block at offset {offset}: built {len(items)} entries, expected {expected}")
    data = np.concatenate(value_parts).astype(np.float32) if has_values and value_parts else \
        np.ones(len(items), dtype=np.float32)
    if not Path(root, ".writing").exists():
        raise RuntimeError("the ingest was abandoned")
    _writer.write_nnz_range(Path(root), offset, items.astype(_writer.index_dtype(n_items_out), copy=False), data,
                           total, Path(scratch))
    return len(items)


def _assemble(k: int, total: int, root: str, scratch: str) -> None:
    if not Path(root, ".writing").exists():
        raise RuntimeError("the ingest was abandoned")
    _writer.assemble_chunk(Path(root), k, total, Path(scratch))


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------

def _detect_format(source: str, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv'; got {fmt!r}")
        return fmt
    name = source.rstrip("/").lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "parquet"


def _read_source(source, columns: list, fmt: str | None, storage_options: dict | None, read_options: dict | None):
    """``(dask DataFrame of the needed columns, in_memory, description)``."""
    import dask.dataframe as dd

    read_options = dict(read_options or {})
    if isinstance(source, pd.DataFrame):
        _check_columns(list(source.columns), columns, "the DataFrame")
        nparts = max(1, math.ceil(len(source) / _MEMORY_PARTITION_ROWS))
        import dask

        with dask.config.set({"dataframe.convert-string": False}):  # keep object columns as they are
            ddf = dd.from_pandas(source[columns], npartitions=nparts, sort=False)
        return ddf, True, "a pandas DataFrame"
    if type(source).__module__.startswith("pyarrow") and hasattr(source, "column_names"):
        _check_columns(list(source.column_names), columns, "the Table")
        table = source.select(columns)
        n = table.num_rows
        slices = [table.slice(a, _MEMORY_PARTITION_ROWS) for a in range(0, max(n, 1), _MEMORY_PARTITION_ROWS)]
        return dd.from_map(_arrow_to_pandas, slices), True, "a pyarrow Table"
    if isinstance(source, dd.DataFrame):
        _check_columns(list(source.columns), columns, "the dask DataFrame")
        return source[columns], False, "a dask DataFrame"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or URL, a pandas, pyarrow or dask DataFrame; got {type(source).__name__}")
    text = os.fspath(source)
    _check_exists(text, storage_options)
    fmt = _detect_format(text, fmt)
    if fmt == "csv":
        read_options.setdefault("dtype", str)
        ddf = dd.read_csv(text, storage_options=storage_options, **read_options)
    else:
        ddf = dd.read_parquet(text, storage_options=storage_options, **read_options)
    _check_columns(list(ddf.columns), columns, text)
    return ddf[columns], False, text


def _explain(exc, source, fmt, read_options, storage_options) -> None:
    """Raise a one-line error naming the file for a failed read of a path source (see dask_rec.source_errors)."""
    if fmt is None or not isinstance(exc, Exception):
        return
    from dask_rec.source_errors import explain_read_error

    explained = explain_read_error(exc, os.fspath(source), fmt, sep=(read_options or {}).get("sep"),
                                   storage_options=storage_options)
    if explained is not None:
        raise explained from None


def _arrow_to_pandas(table) -> pd.DataFrame:
    return table.to_pandas()


def _check_exists(source: str, storage_options) -> None:
    import fsspec

    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(source, storage_options=storage_options)
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError(f"no input found at {source}") from exc
    if not paths or not any(fs.exists(p) for p in paths[:1]):
        raise FileNotFoundError(f"no input found at {source}")


def _check_columns(available: list, needed: list, where: str) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found in "
                         f"{where}; available columns: {', '.join(map(repr, map(str, available)))}")


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------

def _check_options(duplicates, on_invalid, min_user, min_item, rows_per_block, block_nnz):
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}; got {duplicates!r}")
    if on_invalid not in _INVALID_POLICIES:
        raise ValueError(f"on_invalid must be one of {', '.join(_INVALID_POLICIES)}; got {on_invalid!r}")
    for name, v in (("min_user_interactions", min_user), ("min_item_interactions", min_item)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
    for name, v in (("rows_per_block", rows_per_block), ("block_nnz", block_nnz)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{name} must be a positive integer or None; got {v!r}")


def ingest(source, store, user_col: str = "user_id", item_col: str = "item_id", value_col: str | None = None,
           timestamp_col: str | None = None, *, binarize: bool | None = None, duplicates: str = "sum",
           min_user_interactions: int = 1, min_item_interactions: int = 1, rows_per_block: int | None = None,
           block_nnz: int | None = None, on_invalid: str = "error", format: str | None = None,
           storage_options: dict | None = None, read_options: dict | None = None, overwrite: bool = False,
           client=None):
    """Build an interaction store from an interaction log, out of core, on Dask.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame, pyarrow.Table or dask.dataframe.DataFrame
        The log: a Parquet file, directory or glob, a CSV file or glob (by extension, or
        ``format="csv"``), any fsspec URL, or a frame. One row per interaction.
    store : str or os.PathLike
        Directory of the store to create (local, or on a filesystem every worker mounts).
    user_col, item_col : str
        ID columns (integers or strings; CSV IDs that all parse as integers are integers).
    value_col : str, optional
        Interaction strength; values must be finite and >= 0. Ignored when binarizing.
    timestamp_col : str, optional
        Orders duplicates for ``duplicates="last"`` (integers, numbers or dates); not read otherwise.
    binarize : bool, optional
        Store 1.0 for every (user, item) pair seen. Default: True when ``value_col`` is None.
    duplicates : {"sum", "max", "last"}
        How rows repeating a (user, item) pair are merged when values are kept. ``last`` keeps the
        value with the greatest timestamp, or without ``timestamp_col`` the one that comes last in
        the input (files in sorted path order, rows in file order); ties go to the later row.
    min_user_interactions, min_item_interactions : int
        Keep only users and items with at least this many distinct interactions, applied
        repeatedly until every remaining user and item meets its minimum.
    rows_per_block : int, optional
        Users per row block. Default: blocks of about ``block_nnz`` entries.
    block_nnz : int, optional
        Target entries per block when ``rows_per_block`` is None (default
        ``dask_rec.store.block-nnz``, 1,000,000).
    on_invalid : {"error", "drop"}
        Rows with null IDs or invalid values/timestamps: raise ``ValueError`` (default), or drop
        and count them in the store's ``dropped`` metadata.
    format : {"parquet", "csv"}, optional
        Format of a path source; default from its extension (Parquet otherwise).
    storage_options, read_options : dict, optional
        Passed to fsspec and to ``dask.dataframe.read_parquet``/``read_csv``.
    overwrite : bool
        Replace an existing store at ``store`` (only once the new one is complete).
    client : distributed.Client, optional
        Cluster to run on; default the current client, else a LocalCluster started and closed here.

    Returns
    -------
    InteractionStore

    Raises
    ------
    FileNotFoundError
        No input at ``source``.
    FileExistsError
        ``store`` exists and ``overwrite`` is False.
    ValueError
        Missing columns, null IDs, invalid values, an empty log (or empty after filtering), bad options.
    TypeError
        IDs that are neither integers nor strings, or mix both.
    """
    from dask_rec.cluster import client_context

    started = time.perf_counter()
    _check_options(duplicates, on_invalid, min_user_interactions, min_item_interactions, rows_per_block, block_nnz)
    if binarize is None:
        binarize = value_col is None
    if not binarize and value_col is None:
        raise ValueError("binarize=False needs a value_col to take the values from")
    path = local_path(store)
    _atomic.check_target(path, overwrite)
    read_value = value_col if not binarize else None
    read_ts = timestamp_col if (not binarize and duplicates == "last") else None
    columns = list(dict.fromkeys(c for c in (user_col, item_col, read_value, read_ts) if c is not None))
    fmt = _detect_format(os.fspath(source), format) if isinstance(source, (str, os.PathLike)) else None
    try:
        ddf, in_memory, described = _read_source(source, columns, format, storage_options, read_options)
    except Exception as exc:
        _explain(exc, source, fmt, read_options, storage_options)
        raise
    spec = _Spec(user_col, item_col, read_value, read_ts, on_invalid, duplicates, text_ids=(fmt == "csv"))
    options = {
        "source": described, "user_col": user_col, "item_col": item_col, "value_col": value_col,
        "timestamp_col": timestamp_col, "binarize": bool(binarize), "duplicates": duplicates,
        "min_user_interactions": int(min_user_interactions), "min_item_interactions": int(min_item_interactions),
        "rows_per_block": rows_per_block, "block_nnz": block_nnz, "on_invalid": on_invalid,
    }
    with client_context(client) as c:
        with _atomic.atomic_directory(path, overwrite) as tmp:
            runner = _Run(c, tmp)
            try:
                summary = runner.run(ddf, in_memory, spec, options, rows_per_block, block_nnz)
            except BaseException as exc:
                runner.abandon()
                _explain(exc, source, fmt, read_options, storage_options)
                raise
    result = _store.open_store(path)
    logger.info("ingested %s: %d users, %d items, %d entries in %d blocks in %.1f s", described,
                summary["n_users"], summary["n_items"], result.nnz, result.n_blocks, time.perf_counter() - started)
    return result


class _Run:
    """One ingest's state on the cluster (futures to cancel on failure, scratch paths)."""

    def __init__(self, client, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.scratch = tmp / "_scratch"
        self.futures: list = []

    def _track(self, futs):
        self.futures.extend(futs if isinstance(futs, list) else [futs])
        return futs

    def _stage_done(self) -> None:
        """Drop this stage's futures (their results are gathered), so workers free them."""
        self.futures.clear()

    def abandon(self) -> None:
        (self.tmp / ".writing").unlink(missing_ok=True)
        pending = [f for f in self.futures if not f.done()]
        self.futures.clear()
        if pending:
            try:
                self.client.cancel(pending)
            except Exception:  # pragma: no cover - best effort
                pass
        # tasks already running finish on their own; they check .writing before writing and
        # zarr may recreate directories under tmp, so sweep a few times
        for _ in range(20):
            shutil.rmtree(self.tmp, ignore_errors=True)
            time.sleep(0.05)
            if not self.tmp.exists():
                break

    def run(self, ddf, in_memory: bool, spec: _Spec, options: dict, rows_per_block, block_nnz) -> dict:
        import dask

        c = self.client
        self.scratch.mkdir()
        (self.tmp / ".writing").touch()
        if in_memory:
            ddf = c.persist(ddf)
        parts = ddf.to_delayed()
        n_parts = len(parts)

        clock = _Clock()
        # pass 1: scan
        scans = self._track(c.compute([dask.delayed(_scan_partition)(p, spec) for p in parts]))
        merged = _raise_input_error(c.gather(_tree_reduce(c, _merge_scans, scans, self)))
        del scans
        self._stage_done()
        stats = merged["stats"]
        for col, kinds in merged["kinds"].items():
            if len(kinds) > 1 and not spec.text_ids:
                raise TypeError(f"ID column {col!r} mixes integers and strings across partitions; "
                                "IDs of one column must all be of one type")
        if spec.text_ids and any(len(k) > 1 for k in merged["kinds"].values()):
            # CSV: a column is integer only when every value parses as one; redo pass 1 as text
            kinds = {col: ("int" if k == {"int"} else "str") for col, k in merged["kinds"].items()}
            spec = replace(spec, kinds=kinds)
            scans = self._track(c.compute([dask.delayed(_scan_partition)(p, spec) for p in parts]))
            merged = _raise_input_error(c.gather(_tree_reduce(c, _merge_scans, scans, self)))
            del scans
            self._stage_done()
        spec = replace(spec, kinds={col: (sorted(k)[0] if k else "int") for col, k in merged["kinds"].items()})
        if stats.get("valid_rows", 0) == 0:
            why = f" ({stats['rows']} rows, all invalid)" if stats.get("rows") else ""
            raise ValueError(f"the source {options['source']} holds no interactions{why}")
        user_counts_pre = merged["users"].sort_index()
        users = Vocabulary.from_sorted_unique(user_counts_pre.index, spec.kinds[spec.user_col])
        item_ids = merged["items"]
        item_ids = np.sort(item_ids) if isinstance(item_ids, np.ndarray) else item_ids[item_ids.argsort()]
        items = Vocabulary.from_sorted_unique(item_ids, spec.kinds[spec.item_col])
        n_users, n_items = len(users), len(items)
        del merged

        clock.lap("scan")
        # pass 2: split by bucket
        n_workers = max(1, len(c.nthreads()))
        total_rows = int(stats["valid_rows"])
        bucket_rows = int(settings.get("ingest.bucket-rows"))
        n_target = max(math.ceil(total_rows / bucket_rows), min(2 * n_workers, math.ceil(total_rows / 200_000)))
        bucket_bounds = _writer.block_bounds_for(user_counts_pre.to_numpy(),
                                                block_nnz=max(1, math.ceil(total_rows / max(n_target, 1))))
        n_buckets = len(bucket_bounds) - 1
        users_f, items_f = c.scatter([users, items], broadcast=True, hash=False)
        scratch = str(self.scratch)
        splits = self._track(c.compute([dask.delayed(_split_partition)(p, i, spec, users_f, items_f, bucket_bounds,
                                                                       scratch) for i, p in enumerate(parts)]))
        c.gather(splits)  # wait, and raise a failed split's own error
        del ddf, parts, users_f, items_f, splits
        self._stage_done()
        clock.lap("split")
        # pass 3: dedup per bucket
        deduped = self._track(c.map(
            _dedup_bucket, range(n_buckets), [int(bucket_bounds[b + 1] - bucket_bounds[b]) for b in range(n_buckets)],
            n_parts=n_parts, n_items=n_items, spec=spec, scratch=scratch, pure=False))
        item_counts = c.gather(_tree_reduce(c, sum_arrays, c.map(_second, deduped, pure=False), self))
        per_bucket = c.gather(c.map(_first_and_third, deduped, pure=False))
        user_counts = np.concatenate([rc for rc, _ in per_bucket])
        rows_deduped_in = sum(n for _, n in per_bucket)
        nnz_pre = int(user_counts.sum())
        del deduped, per_bucket
        self._stage_done()

        clock.lap("dedup")
        # pass 4: iterated min-count filtering
        user_keep = np.ones(n_users, dtype=bool)
        item_keep = np.ones(n_items, dtype=bool)
        rounds = 0
        min_u, min_i = int(options["min_user_interactions"]), int(options["min_item_interactions"])
        if min_u > 1 or min_i > 1:
            user_keep = user_counts >= min_u
            item_keep = item_counts >= min_i
            while True:
                rounds += 1
                item_keep_f = c.scatter(item_keep, broadcast=True, hash=False)
                futs = self._track([c.submit(_filter_counts, b, user_keep[bucket_bounds[b]:bucket_bounds[b + 1]],
                                             item_keep_f, scratch, pure=False) for b in range(n_buckets)])
                item_counts = c.gather(_tree_reduce(c, sum_arrays, c.map(_second, futs, pure=False), self))
                user_counts = np.concatenate(c.gather(c.map(_first, futs, pure=False)))
                del futs, item_keep_f
                self._stage_done()
                new_user_keep = user_keep & (user_counts >= min_u)
                new_item_keep = item_keep & (item_counts >= min_i)
                if np.array_equal(new_user_keep, user_keep) and np.array_equal(new_item_keep, item_keep):
                    break
                user_keep, item_keep = new_user_keep, new_item_keep
            user_counts = np.where(user_keep, user_counts, 0)
            item_counts = np.where(item_keep, item_counts, 0)
        kept_users = np.flatnonzero(user_keep)
        kept_items = np.flatnonzero(item_keep)
        final_counts = user_counts[kept_users]
        nnz = int(final_counts.sum())
        if nnz == 0:
            raise ValueError(f"no interactions left after filtering with min_user_interactions={min_u} and "
                             f"min_item_interactions={min_i} ({nnz_pre} distinct interactions before filtering)")
        users_out = users.subset(kept_users)
        items_out = items.subset(kept_items)
        n_users_out, n_items_out = len(users_out), len(items_out)

        clock.lap("filter")
        # pass 5: write the blocks, then the shared chunks
        bounds = _writer.block_bounds_for(final_counts, rows_per_block=rows_per_block, block_nnz=block_nnz)
        indptr = np.zeros(n_users_out + 1, dtype=np.int64)
        np.cumsum(final_counts, out=indptr[1:])
        _writer.create_layout(self.tmp, n_users_out, n_items_out, nnz)
        import zarr

        zarr.open_array(self.tmp / "matrix" / "indptr", mode="r+")[:] = indptr
        zarr.open_array(self.tmp / "item_counts", mode="r+")[:] = item_counts[kept_items]
        remap = None
        if len(kept_items) < n_items:
            remap_arr = np.full(n_items, -1, dtype=_writer.index_dtype(n_items_out) if n_items_out < 2**31 else np.int64)
            remap_arr[kept_items] = np.arange(n_items_out)
            remap = c.scatter(remap_arr, broadcast=True, hash=False)
        has_values = spec.value_col is not None
        root = str(self.tmp)
        writes = self._track([
            c.submit(_write_block, kept_users[bounds[j]:bounds[j + 1]], int(indptr[bounds[j]]),
                     int(indptr[bounds[j + 1]] - indptr[bounds[j]]), bucket_bounds, remap, n_items_out, has_values,
                     nnz, root, scratch, pure=False)
            for j in range(len(bounds) - 1)])
        c.gather(writes)  # wait, and raise a failed block's own error
        chunk = int(zarr.open_array(self.tmp / "matrix" / "indices", mode="r").chunks[0])
        shared = _writer.shared_chunks(indptr[bounds], nnz, chunk)
        assembled = self._track(c.map(_assemble, shared.tolist(), total=nnz, root=root, scratch=scratch, pure=False))
        c.gather(assembled)
        del writes, assembled, remap
        self._stage_done()
        _writer.write_vocabulary(self.tmp, "user_ids", users_out)
        _writer.write_vocabulary(self.tmp, "item_ids", items_out)
        dropped = {
            "null_ids": int(stats["null_ids"]),
            "invalid_values": int(stats["invalid_values"]),
            "invalid_timestamps": int(stats["invalid_timestamps"]),
            "duplicate_rows": int(rows_deduped_in - nnz_pre),
            "filtered_entries": int(nnz_pre - nnz),
            "filtered_users": int(n_users - n_users_out),
            "filtered_items": int(n_items - n_items_out),
            "filter_rounds": rounds,
        }
        values = {"binarized": bool(options["binarize"]), "duplicates": spec.duplicates if has_values else None,
                  "value_col": options["value_col"], "timestamp_col": spec.ts_col, "dtype": "float32"}
        _writer.write_root(self.tmp, _writer.root_attrs(
            n_users_out, n_items_out, nnz, bounds, values=values, ingest=options, dropped=dropped,
            source_rows=int(stats["rows"]), shuffle_buckets=int(n_buckets), input_partitions=int(n_parts)))
        (self.tmp / ".writing").unlink(missing_ok=True)
        shutil.rmtree(self.scratch)
        clock.lap("write")
        logger.info("ingest passes: %s", clock)
        self.futures.clear()
        return {"n_users": n_users_out, "n_items": n_items_out, "nnz": nnz}


def _raise_input_error(merged: dict) -> dict:
    if "error" in merged:
        logger.debug("input error found by a worker:\n%s", merged.get("traceback", ""))
        raise merged["error"]
    return merged


class _Clock:
    """Wall time of each pass, for the log."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: list = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {sec:.2f} s" for name, sec in self.laps)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _first_and_third(triple):
    return triple[0], triple[2]


def _tree_reduce(client, fn, futures: list, run: _Run, fan_in: int = 8):
    """Reduce futures with ``fn(list)`` in a tree of bounded fan-in; returns one future."""
    if not futures:
        raise ValueError("nothing to reduce")
    run._track(list(futures))  # hold every level until the result is gathered (see _stage_done)
    level = list(futures)
    while True:
        level = run._track([client.submit(_apply, fn, *level[i:i + fan_in], pure=False)
                            for i in range(0, len(level), fan_in)])
        if len(level) == 1:
            return level[0]


def _apply(fn, *values):
    return fn(list(values))
