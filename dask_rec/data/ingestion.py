"""Ingest an interaction log into an interaction store, out of core, on Dask: the passes.

The log is read partition by partition (Parquet or CSV through ``dask.dataframe``, any fsspec
URL, or an in-memory pandas/pyarrow/dask frame: :mod:`dask_rec.data.ingest_sources`) and goes through
five passes, each a set of tasks with memory bounded by one input partition, one shuffle bucket
or one row block:

1. **scan** each partition: check and clean it (null IDs, bad values, ID types), count rows per
   user and list distinct items; merged by a tree reduction into the (pre-filter) vocabularies.
2. **split** each partition by user bucket (contiguous ranges of user indices holding about
   ``dask_rec.ingest.bucket-rows`` rows) into one scratch file per column, sorted by bucket.
3. **dedup** each bucket: gather its slices from every partition's files, merge duplicate
   (user, item) rows (``sum``/``max``/``last``), save it sorted by (user, item) and return
   its per-user and per-item counts.
4. **filter** (only when a minimum count is above 1): drop users and items below their minimum
   and recount, round after round, until nothing changes (the result is the largest sub-log
   where every user and item meets its minimum, the same as iterated filtering in pandas).
5. **write** each row block's CSR into the store, then the chunks two blocks share.

This module only schedules (through :mod:`dask_rec.executor`): the per-partition maths is in
:mod:`dask_rec.kernels.interactions`, the tasks on scratch files in :mod:`dask_rec.data.ingest_scratch`
and the store's layout in :mod:`dask_rec.data.store_writer`. The client only holds per-user and
per-item arrays (vocabularies, counts), never the log. Scratch files live in the store's
temporary directory, so the store path must be on a filesystem all workers see (a local path for
a LocalCluster).
"""

from __future__ import annotations

import logging
import math
import operator
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dask_rec import settings
from dask_rec.data import atomic as _atomic
from dask_rec.data import store as _store
from dask_rec.data import store_writer as _writer
from dask_rec.data.atomic import local_path
from dask_rec.data.ingest_scratch import assemble_chunk_task, dedup_bucket, filter_counts, split_partition, write_block
from dask_rec.data.ingest_sources import detect_format, explain_failure, read_source
from dask_rec.data.vocabulary import Vocabulary
from dask_rec.executor import DaskExecutor
from dask_rec.kernels.gramian import sum_arrays
from dask_rec.kernels.interactions import PartitionSpec, filter_round, merge_scans, scan_partition
from dask_rec.validation import check_int

__all__ = ["ingest", "DUPLICATE_POLICIES"]

logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("sum", "max", "last")
_INVALID_POLICIES = ("error", "drop")
FAN_IN = 8


def _check_options(duplicates, on_invalid, min_user, min_item, rows_per_block, block_nnz):
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}; got {duplicates!r}")
    if on_invalid not in _INVALID_POLICIES:
        raise ValueError(f"on_invalid must be one of {', '.join(_INVALID_POLICIES)}; got {on_invalid!r}")
    check_int(min_user, "min_user_interactions")
    check_int(min_item, "min_item_interactions")
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
    fmt = detect_format(os.fspath(source), format) if isinstance(source, (str, os.PathLike)) else None
    try:
        ddf, in_memory, described = read_source(source, columns, format, storage_options, read_options)
    except Exception as exc:
        explain_failure(exc, source, fmt, read_options, storage_options)
        raise
    spec = PartitionSpec(user_col, item_col, read_value, read_ts, on_invalid, duplicates, text_ids=(fmt == "csv"))
    options = {
        "source": described, "user_col": user_col, "item_col": item_col, "value_col": value_col,
        "timestamp_col": timestamp_col, "binarize": bool(binarize), "duplicates": duplicates,
        "min_user_interactions": int(min_user_interactions), "min_item_interactions": int(min_item_interactions),
        "rows_per_block": rows_per_block, "block_nnz": block_nnz, "on_invalid": on_invalid,
    }
    with client_context(client) as c:
        with _atomic.atomic_directory(path, overwrite) as tmp:
            runner = _Run(DaskExecutor(c), tmp)
            try:
                summary = runner.run(ddf, in_memory, spec, options, rows_per_block, block_nnz)
            except BaseException as exc:
                runner.abandon()
                explain_failure(exc, source, fmt, read_options, storage_options)
                raise
    result = _store.open_store(path)
    logger.info("ingested %s: %d users, %d items, %d entries in %d blocks in %.1f s", described,
                summary["n_users"], summary["n_items"], result.nnz, result.n_blocks, time.perf_counter() - started)
    return result


@dataclass
class _Vocabularies:
    """What pass 1 found: the (pre-filter) vocabularies, rows per user, the spec with ID kinds."""

    spec: PartitionSpec
    stats: dict
    users: Vocabulary
    items: Vocabulary
    user_rows: np.ndarray


class _Run:
    """One ingest on the cluster: its passes, and the handles to cancel if it fails."""

    def __init__(self, executor: DaskExecutor, tmp: Path) -> None:
        self.ex = executor
        self.tmp = tmp
        self.scratch = tmp / "_scratch"
        self.handles: list = []
        self.clock = _Clock()

    def _track(self, handles):
        self.handles.extend(handles if isinstance(handles, list) else [handles])
        return handles

    def _stage_done(self, name: str) -> None:
        """Drop this pass's handles (their results are gathered), so workers free them."""
        self.handles.clear()
        self.clock.lap(name)

    def _sum(self, handles: list, index: int, key: str) -> np.ndarray:
        """The sum of item ``index`` of each task result (per-item counts), by a tree reduction."""
        parts = self._track(self.ex.map(operator.getitem, handles, [index] * len(handles), key=f"{key}-part"))
        return self.ex.gather(self._track(self.ex.tree_reduce(sum_arrays, parts, FAN_IN, key=key)))

    def abandon(self) -> None:
        (self.tmp / ".writing").unlink(missing_ok=True)
        pending = [h for h in self.handles if not h.done()]
        self.handles.clear()
        if pending:
            try:
                self.ex.cancel(pending)
            except Exception:  # pragma: no cover - best effort
                pass
        # tasks already running finish on their own; they check .writing before writing and
        # zarr may recreate directories under tmp, so sweep a few times
        for _ in range(20):
            shutil.rmtree(self.tmp, ignore_errors=True)
            time.sleep(0.05)
            if not self.tmp.exists():
                break

    def run(self, ddf, in_memory: bool, spec: PartitionSpec, options: dict, rows_per_block, block_nnz) -> dict:
        self.scratch.mkdir()
        (self.tmp / ".writing").touch()
        if in_memory:
            ddf = self.ex.persist(ddf)
        parts = ddf.to_delayed()
        found = self.scan(parts, spec, options)
        bucket_bounds = self.split(parts, found)
        n_parts = len(parts)
        del ddf, parts
        user_counts, item_counts, rows_in = self.dedup(bucket_bounds, n_parts, found)
        nnz_pre = int(user_counts.sum())
        user_keep, item_keep, user_counts, item_counts, rounds = self.filter(bucket_bounds, user_counts, item_counts,
                                                                             options)
        kept_users, kept_items = np.flatnonzero(user_keep), np.flatnonzero(item_keep)
        final_counts = user_counts[kept_users]
        nnz = int(final_counts.sum())
        if nnz == 0:
            raise ValueError(f"no interactions left after filtering with min_user_interactions="
                             f"{options['min_user_interactions']} and min_item_interactions="
                             f"{options['min_item_interactions']} ({nnz_pre} distinct interactions before filtering)")
        users_out, items_out = found.users.subset(kept_users), found.items.subset(kept_items)
        bounds = self.write(bucket_bounds, kept_users, kept_items, final_counts, item_counts, users_out, items_out,
                            found.spec, rows_per_block, block_nnz)
        stats = found.stats
        dropped = {
            "null_ids": int(stats["null_ids"]),
            "invalid_values": int(stats["invalid_values"]),
            "invalid_timestamps": int(stats["invalid_timestamps"]),
            "duplicate_rows": int(rows_in - nnz_pre),
            "filtered_entries": int(nnz_pre - nnz),
            "filtered_users": int(len(found.users) - len(users_out)),
            "filtered_items": int(len(found.items) - len(items_out)),
            "filter_rounds": rounds,
        }
        has_values = found.spec.value_col is not None
        values = {"binarized": bool(options["binarize"]), "duplicates": found.spec.duplicates if has_values else None,
                  "value_col": options["value_col"], "timestamp_col": found.spec.ts_col, "dtype": "float32"}
        _writer.write_root(self.tmp, _writer.root_attrs(
            len(users_out), len(items_out), nnz, bounds, values=values, ingest=options, dropped=dropped,
            source_rows=int(stats["rows"]), shuffle_buckets=int(len(bucket_bounds) - 1), input_partitions=int(n_parts)))
        (self.tmp / ".writing").unlink(missing_ok=True)
        shutil.rmtree(self.scratch)
        self.clock.lap("write")
        logger.info("ingest passes: %s", self.clock)
        self.handles.clear()
        return {"n_users": len(users_out), "n_items": len(items_out), "nnz": nnz}

    # -- pass 1 ----------------------------------------------------------------------------------
    def _scan_once(self, parts, spec: PartitionSpec) -> dict:
        scans = self._track(self.ex.map_partitions(scan_partition, parts, spec=spec))
        merged = self.ex.gather(self._track(self.ex.tree_reduce(merge_scans, scans, FAN_IN, key="ingest-scan-merge")))
        self.handles.clear()
        return _raise_input_error(merged)

    def scan(self, parts, spec: PartitionSpec, options: dict) -> _Vocabularies:
        """Pass 1: the vocabularies, the rows per user and the ID kinds of the whole log."""
        merged = self._scan_once(parts, spec)
        for col, kinds in merged["kinds"].items():
            if len(kinds) > 1 and not spec.text_ids:
                raise TypeError(f"ID column {col!r} mixes integers and strings across partitions; "
                                "IDs of one column must all be of one type")
        if spec.text_ids and any(len(k) > 1 for k in merged["kinds"].values()):
            # CSV: a column is integer only when every value parses as one; redo pass 1 as text
            kinds = {col: ("int" if k == {"int"} else "str") for col, k in merged["kinds"].items()}
            spec = replace(spec, kinds=kinds)
            merged = self._scan_once(parts, spec)
        spec = replace(spec, kinds={col: (sorted(k)[0] if k else "int") for col, k in merged["kinds"].items()})
        stats = merged["stats"]
        if stats.get("valid_rows", 0) == 0:
            why = f" ({stats['rows']} rows, all invalid)" if stats.get("rows") else ""
            raise ValueError(f"the source {options['source']} holds no interactions{why}")
        user_rows = merged["users"].sort_index()
        users = Vocabulary.from_sorted_unique(user_rows.index, spec.kinds[spec.user_col])
        item_ids = merged["items"]
        item_ids = np.sort(item_ids) if isinstance(item_ids, np.ndarray) else item_ids[item_ids.argsort()]
        items = Vocabulary.from_sorted_unique(item_ids, spec.kinds[spec.item_col])
        self.clock.lap("scan")
        return _Vocabularies(spec, stats, users, items, user_rows.to_numpy())

    # -- pass 2 ----------------------------------------------------------------------------------
    def split(self, parts, found: _Vocabularies) -> np.ndarray:
        """Pass 2: every partition's rows saved by user bucket; returns the buckets' user bounds."""
        n_workers = max(1, self.ex.n_workers)
        total_rows = int(found.stats["valid_rows"])
        bucket_rows = int(settings.get("ingest.bucket-rows"))
        n_target = max(math.ceil(total_rows / bucket_rows), min(2 * n_workers, math.ceil(total_rows / 200_000)))
        bucket_bounds = _writer.block_bounds_for(found.user_rows, block_nnz=max(1, math.ceil(total_rows / max(n_target, 1))))
        users_f, items_f = self.ex.scatter(found.users), self.ex.scatter(found.items)
        splits = self._track(self.ex.map_partitions(split_partition, parts, range(len(parts)), spec=found.spec,
                                                    users=users_f, items=items_f, bucket_bounds=bucket_bounds,
                                                    scratch=str(self.scratch)))
        self.ex.gather(splits)  # wait, and raise a failed split's own error
        del users_f, items_f, splits
        self._stage_done("split")
        return bucket_bounds

    # -- pass 3 ----------------------------------------------------------------------------------
    def dedup(self, bucket_bounds: np.ndarray, n_parts: int, found: _Vocabularies):
        """Pass 3: buckets deduplicated; returns ``(user_counts, item_counts, rows_in)``."""
        n_buckets = len(bucket_bounds) - 1
        deduped = self._track(self.ex.map(
            dedup_bucket, range(n_buckets), np.diff(bucket_bounds).tolist(), n_parts=n_parts,
            n_items=len(found.items), spec=found.spec, scratch=str(self.scratch), key="ingest-dedup"))
        item_counts = self._sum(deduped, 1, key="ingest-dedup-item-counts")
        per_bucket = self.ex.gather(self._track(self.ex.map(_first_and_third, deduped, key="ingest-dedup-rows")))
        user_counts = np.concatenate([rc for rc, _ in per_bucket])
        rows_in = sum(n for _, n in per_bucket)
        del deduped, per_bucket
        self._stage_done("dedup")
        return user_counts, item_counts, rows_in

    # -- pass 4 ----------------------------------------------------------------------------------
    def filter(self, bucket_bounds: np.ndarray, user_counts: np.ndarray, item_counts: np.ndarray, options: dict):
        """Pass 4: iterated min-count filtering; returns the keep masks, the counts under them and
        the number of rounds."""
        user_keep = np.ones(len(user_counts), dtype=bool)
        item_keep = np.ones(len(item_counts), dtype=bool)
        rounds = 0
        min_u, min_i = int(options["min_user_interactions"]), int(options["min_item_interactions"])
        if min_u > 1 or min_i > 1:
            user_keep = user_counts >= min_u
            item_keep = item_counts >= min_i
            changed = True
            while changed:
                rounds += 1
                item_keep_f = self.ex.scatter(item_keep)
                counts = self._track([
                    self.ex.submit(filter_counts, b, user_keep[bucket_bounds[b]:bucket_bounds[b + 1]], item_keep_f,
                                   str(self.scratch), key="ingest-filter")
                    for b in range(len(bucket_bounds) - 1)])
                item_counts = self._sum(counts, 1, key="ingest-filter-item-counts")
                user_counts = np.concatenate(self.ex.gather(self._track(
                    self.ex.map(operator.getitem, counts, [0] * len(counts), key="ingest-filter-user-counts"))))
                del counts, item_keep_f
                self.handles.clear()
                new_user_keep, new_item_keep, changed = filter_round(user_keep, item_keep, user_counts, item_counts,
                                                                     min_u, min_i)
                if changed:
                    user_keep, item_keep = new_user_keep, new_item_keep
            user_counts = np.where(user_keep, user_counts, 0)
            item_counts = np.where(item_keep, item_counts, 0)
        self.clock.lap("filter")
        return user_keep, item_keep, user_counts, item_counts, rounds

    # -- pass 5 ----------------------------------------------------------------------------------
    def write(self, bucket_bounds, kept_users, kept_items, final_counts, item_counts, users_out, items_out,
              spec: PartitionSpec, rows_per_block, block_nnz) -> np.ndarray:
        """Pass 5: the store's row blocks, shared chunks and vocabularies; returns the block bounds."""
        import zarr

        n_users_out, n_items_out, n_items = len(users_out), len(items_out), len(item_counts)
        nnz = int(final_counts.sum())
        bounds = _writer.block_bounds_for(final_counts, rows_per_block=rows_per_block, block_nnz=block_nnz)
        indptr = np.zeros(n_users_out + 1, dtype=np.int64)
        np.cumsum(final_counts, out=indptr[1:])
        _writer.create_layout(self.tmp, n_users_out, n_items_out, nnz)
        zarr.open_array(self.tmp / "matrix" / "indptr", mode="r+")[:] = indptr
        zarr.open_array(self.tmp / "item_counts", mode="r+")[:] = item_counts[kept_items]
        remap = None
        if len(kept_items) < n_items:
            remap_arr = np.full(n_items, -1, dtype=_writer.index_dtype(n_items_out) if n_items_out < 2**31 else np.int64)
            remap_arr[kept_items] = np.arange(n_items_out)
            remap = self.ex.scatter(remap_arr)
        has_values = spec.value_col is not None
        root, scratch = str(self.tmp), str(self.scratch)
        writes = self._track([
            self.ex.submit(write_block, kept_users[bounds[j]:bounds[j + 1]], int(indptr[bounds[j]]),
                           int(indptr[bounds[j + 1]] - indptr[bounds[j]]), bucket_bounds, remap, n_items_out,
                           has_values, nnz, root, scratch, key="ingest-write")
            for j in range(len(bounds) - 1)])
        self.ex.gather(writes)  # wait, and raise a failed block's own error
        chunk = int(zarr.open_array(self.tmp / "matrix" / "indices", mode="r").chunks[0])
        shared = _writer.shared_chunks(indptr[bounds], nnz, chunk)
        assembled = self._track(self.ex.map(assemble_chunk_task, shared.tolist(), total=nnz, root=root,
                                            scratch=scratch, key="ingest-assemble"))
        self.ex.gather(assembled)
        del writes, assembled, remap
        self.handles.clear()
        _writer.write_vocabulary(self.tmp, "user_ids", users_out)
        _writer.write_vocabulary(self.tmp, "item_ids", items_out)
        return bounds


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


def _first_and_third(triple):
    return triple[0], triple[2]
