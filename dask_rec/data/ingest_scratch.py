"""The ingest's tasks on scratch files (no Dask here; :mod:`dask_rec.data.ingestion` schedules them).

Pass 2 (:func:`split_partition`) saves each partition's encoded rows sorted by user bucket, one
``.npy`` file per column; pass 3 (:func:`dedup_bucket`) gathers a bucket from every partition's
files and saves it deduplicated as CSR; pass 4 (:func:`filter_counts`) recounts a bucket under
keep masks; pass 5 (:func:`write_block`, :func:`assemble_chunk_task`) writes a row block of the
store and the chunks two blocks share. Files live under the store's temporary directory; a task
refuses to write once the ingest was abandoned (its ``.writing`` marker removed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dask_rec.data import store_writer as _writer
from dask_rec.kernels.interactions import PartitionSpec, clean_partition, dedup_entries
from dask_rec.data.vocabulary import Vocabulary

__all__ = ["split_partition", "dedup_bucket", "filter_counts", "write_block", "assemble_chunk_task"]


def split_partition(df: pd.DataFrame, p: int, spec: PartitionSpec, users: Vocabulary, items: Vocabulary,
                     bucket_bounds: np.ndarray, scratch: str) -> int:
    """Pass 2 on one partition: encode IDs and save its rows sorted by bucket to scratch."""
    u, i, values, ts, _ = clean_partition(df, spec)
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


def dedup_bucket(b: int, n_rows: int, n_parts: int, n_items: int, spec: PartitionSpec, scratch: str):
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


def filter_counts(b: int, user_keep: np.ndarray, item_keep: np.ndarray, scratch: str):
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


def write_block(old_rows: np.ndarray, offset: int, expected: int, bucket_bounds: np.ndarray, item_remap,
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


def assemble_chunk_task(k: int, total: int, root: str, scratch: str) -> None:
    if not Path(root, ".writing").exists():
        raise RuntimeError("the ingest was abandoned")
    _writer.assemble_chunk(Path(root), k, total, Path(scratch))
