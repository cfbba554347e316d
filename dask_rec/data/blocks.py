"""Row blocks of an interaction matrix, wherever it lives: in memory or in a store.

Training and serving stages see data as a list of handles to CSR row blocks. For a store the
blocks are read by the tasks themselves (from the store's path, so a lost block can always be
read again); for an in-memory matrix they are sliced here and travel inside the tasks that use
them (kept by the scheduler with the task, so they too can be recomputed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec import settings
from dask_rec.executor import identity
from dask_rec.validation import check_interactions

__all__ = ["RowBlockSource", "as_row_block_source", "default_rows_per_block", "uniform_bounds"]


def uniform_bounds(n_rows: int, rows_per_block: int) -> np.ndarray:
    """Row offsets ``[0, r, 2r, ..., n_rows]`` of blocks of ``rows_per_block`` rows (the last may
    be smaller; ``[0]`` when there are no rows)."""
    return np.unique(np.append(np.arange(0, n_rows, int(rows_per_block), dtype=np.int64), n_rows))


def default_rows_per_block(n_rows: int, nnz: int) -> int:
    """Rows per block for in-memory data: about ``dask_rec.blocks.target-nnz`` interactions each."""
    target = int(settings.get("blocks.target-nnz"))
    per_row = max(nnz / max(n_rows, 1), 1.0)
    return max(1, min(n_rows, int(target / per_row)))


@dataclass
class RowBlockSource:
    """Where the row blocks of a users x items matrix come from.

    Attributes
    ----------
    shape : (int, int)
    nnz : int
    bounds : ndarray
        Row offsets of the blocks (length ``n_blocks + 1``).
    store : InteractionStore or None
        Set when the data lives in a store; blocks are then read by tasks.
    matrix : csr_matrix or None
        Set for in-memory data.
    """

    shape: tuple
    nnz: int
    bounds: np.ndarray
    store: object = None
    matrix: sp.csr_matrix | None = None

    @property
    def n_blocks(self) -> int:
        return len(self.bounds) - 1

    @property
    def item_vocabulary(self):
        return None if self.store is None else self.store.item_vocabulary

    def block_handles(self, executor) -> list:
        """One handle per row block (values in process, futures on a cluster)."""
        if self.store is not None:
            return executor.map(_read_store_block, [self.store] * self.n_blocks, range(self.n_blocks), key="read-block")
        blocks = [self.matrix[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        import warnings

        with warnings.catch_warnings():
            # the blocks travel inside their tasks on purpose (a lost block is recomputed from
            # them, which scattered data could not be): distributed's advice against large
            # graphs does not apply
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            return executor.map(identity, blocks, key="row-block")


def _read_store_block(store, i):
    return store.read_block(i)


def as_row_block_source(data, rows_per_block: int | None = None) -> RowBlockSource:
    """Wrap a scipy/NumPy matrix, an ``InteractionStore`` or a store path as a :class:`RowBlockSource`."""
    if isinstance(data, (str, os.PathLike)):
        from dask_rec.data.store import open_store

        data = open_store(data)
    if hasattr(data, "read_block") and hasattr(data, "block_bounds"):
        if rows_per_block is not None:
            raise ValueError("rows_per_block applies to in-memory data; a store keeps the blocks it was ingested with")
        return RowBlockSource(shape=tuple(data.shape), nnz=int(data.nnz), bounds=np.asarray(data.block_bounds, np.int64), store=data)
    X = check_interactions(data, "X")
    n_rows = X.shape[0]
    rows = rows_per_block or default_rows_per_block(n_rows, X.nnz)
    bounds = uniform_bounds(n_rows, rows)
    return RowBlockSource(shape=X.shape, nnz=int(X.nnz), bounds=bounds, matrix=X)
