"""Blocks of users for the user-block stages (serving, evaluation, ALS's user solves): plumbing only.

A user-block task is given a *payload*: CSR rows sliced in the client from an in-memory matrix, or
a :class:`StoreRows` reference that the task reads from the store itself (a store pickles as its
path), so the client never holds a store's blocks. :func:`block_bounds` cuts the users into
blocks (a store's own blocks unless a size is given), :func:`row_payloads` makes one payload per
block, :func:`load_rows` turns a payload back into rows inside the task, :func:`take_rows` picks
requested rows (empty ones for unknown users) and :func:`task_threads` says how many threads a
task's kernel may use. No maths and no scoring here: see :mod:`dask_rec.serving.scorers` and
:mod:`dask_rec.serving.recommend`.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from dask_rec import settings
from dask_rec.data.blocks import uniform_bounds

__all__ = ["DEFAULT_USERS_PER_BLOCK", "task_threads", "is_store", "StoreRows", "load_rows", "block_bounds",
           "row_payloads", "take_rows"]

#: Users per task when neither ``users_per_block`` nor the ``dask_rec.recommend.users-per-block``
#: config key is set and the histories are not a store (whose own row blocks are used then).
DEFAULT_USERS_PER_BLOCK = 4096


def task_threads(executor) -> int:
    """Threads a block task may use: 1 on a cluster (workers run tasks side by side), else the
    ``dask_rec.recommend.threads`` config value or all cores (1 when already inside a task)."""
    if executor.client is not None:
        return 1
    configured = settings.get("recommend.threads")
    if configured:
        return int(configured)
    try:
        from distributed import get_worker

        get_worker()
        return 1
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def is_store(obj) -> bool:
    """Whether ``obj`` behaves like a :class:`dask_rec.data.store.InteractionStore`."""
    return hasattr(obj, "read_block") and hasattr(obj, "block_bounds")


class StoreRows:
    """A picklable reference to rows ``start:stop`` of a store (optionally a subset of them)."""

    def __init__(self, store, start: int, stop: int, rows=None, block: int | None = None) -> None:
        self.store = store
        self.start = int(start)
        self.stop = int(stop)
        self.rows = rows
        self.block = block

    def load(self) -> sp.csr_matrix:
        if self.block is not None:
            X = self.store.read_block(self.block)
        else:
            X = self.store.read_rows(self.start, self.stop)
        X = sp.csr_matrix(X)
        return X if self.rows is None else X[self.rows]


def load_rows(payload) -> sp.csr_matrix:
    """The CSR rows a block task was given (a matrix, or a :class:`StoreRows` to read)."""
    if isinstance(payload, StoreRows):
        return payload.load()
    return sp.csr_matrix(payload)


def block_bounds(source, users_per_block: int | None) -> np.ndarray:
    """Row offsets of the blocks of ``source`` (a store's own blocks unless a size is given)."""
    if users_per_block is None:
        if is_store(source):
            return np.asarray(source.block_bounds, dtype=np.int64)
        users_per_block = settings.get("recommend.users-per-block") or DEFAULT_USERS_PER_BLOCK
    users_per_block = int(users_per_block)
    if users_per_block < 1:
        raise ValueError(f"users_per_block must be >= 1; got {users_per_block}")
    return uniform_bounds(source.shape[0], users_per_block)


def row_payloads(source, bounds: np.ndarray) -> list:
    """One payload per block: CSR slices of a matrix, or :class:`StoreRows` of a store."""
    if is_store(source):
        native = np.array_equal(bounds, np.asarray(source.block_bounds, dtype=np.int64))
        return [
            StoreRows(source, a, b, block=i if native else None)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
    return [source[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def take_rows(X: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` of ``X``, an empty row wherever ``rows`` is −1."""
    rows = np.asarray(rows, dtype=np.int64)
    known = rows >= 0
    sub = X[rows[known]]
    lengths = np.zeros(rows.shape[0], np.int64)
    lengths[known] = np.diff(sub.indptr)
    indptr = np.r_[0, np.cumsum(lengths)]
    return sp.csr_matrix((sub.data, sub.indices, indptr), shape=(rows.shape[0], X.shape[1]))
