"""What the models built on the Gramian share: running their stages, and an item-item matrix S.

:func:`run_fit` applies the client rules of ``SANSA.fit`` (an explicit client, the current one,
a LocalCluster for a store, else in process) and times the stages. :func:`gramian_stage` reduces
the Gramian of the (optionally binarized) row blocks into column-block handles, with its
diagonal; :func:`top_k_from_rows_stage` builds a top-k item-item matrix without storing the
Gramian, when :func:`rows_route_fits` says one task may hold X twice. :class:`ItemItemModel` is the part of ItemKNN, SLIM and AssociationRules that only
depends on their sparse item-item matrix ``S`` (``n_items × n_items``): scores ``x · S``,
``similar_items`` (rows of S) and save/load of S as an anndata-style CSR group (no pickle).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.scoring import recommend_block, similar_items_block

from .base import Recommender

__all__ = ["run_fit", "gramian_stage", "top_k_from_rows_stage", "rows_route_fits", "ItemItemModel", "binarize_rows",
           "binary_blocks", "diagonal_segment"]


def run_fit(data, client, stages):
    """``(stages(source, executor), source, seconds)`` with the client rules of ``SANSA.fit``
    (:func:`dask_rec.cluster.fit_executor`)."""
    from dask_rec.data.blocks import as_row_block_source
    from dask_rec.cluster import fit_executor

    source = as_row_block_source(data)
    t0 = time.perf_counter()
    with fit_executor(client, source) as executor:
        result = stages(source, executor)
    return result, source, round(time.perf_counter() - t0, 3)


def binarize_rows(X_block) -> sp.csr_matrix:
    """The sparsity pattern of a block as ones (float32): counts of co-occurrence in the Gramian."""
    X = sp.csr_matrix(X_block, copy=True)
    X.eliminate_zeros()
    X.data = np.ones(X.nnz, np.float32)
    return X


def binary_blocks(source, executor) -> list:
    """Handles of the source's row blocks as ones (:func:`binarize_rows`)."""
    blocks = source.block_handles(executor)
    ones = executor.map(binarize_rows, blocks, key="binarize-rows")
    executor.release(*blocks)
    return ones


def diagonal_segment(block, start: int) -> np.ndarray:
    """``diag(G)[start:start+width]`` of a Gramian column block ``G[:, start:start+width]``."""
    return np.asarray(sp.csr_matrix(block).diagonal(-start), dtype=np.float64)  # entries (start + c, c)


def gramian_stage(source, executor, *, binary: bool = False, blocks=None):
    """Reduce the Gramian: ``(starts, handles, diagonal, row-block handles)``.

    ``blocks``: row-block handles to use (e.g. weighted rows); default: the source's, binarized
    first with ``binary``. The caller releases the returned handles.
    """
    from dask_rec.stages.gramian import reduce_gramian

    n_items = int(source.shape[1])
    if blocks is None:
        blocks = binary_blocks(source, executor) if binary else source.block_handles(executor)
    gramian = reduce_gramian(executor, blocks, n_items)
    starts = [a for a, _, _ in gramian]
    handles = [h for _, _, h in gramian]
    diagonal = np.concatenate(executor.gather(executor.map(diagonal_segment, handles, starts, key="gramian-diag")))
    return starts, handles, diagonal, blocks


def top_k_from_rows_stage(source, executor, blocks, k: int, mode: str, **params) -> sp.csr_matrix:
    """The route from the rows: an item-item matrix of ``k`` values per row, Gramian never stored.

    One task stacks the row blocks (``blocks``, released here) into X, another converts it to
    CSC, and one task per item range (balanced by the work of their Gramian columns) runs
    :func:`dask_rec.kernels.item_columns.top_k_from_rows` with ``mode`` and ``params``.
    """
    from dask_rec.kernels.gramian import sum_arrays
    from dask_rec.kernels.item_columns import balanced_ranges, item_column_stats, top_k_from_rows

    stats = executor.map(item_column_stats, blocks, key="item-stats")
    diagonal, costs = executor.gather(executor.tree_reduce(sum_arrays, stats, key="item-stats-sum"))
    bounds = balanced_ranges(costs, item_ranges(executor, int(source.shape[1])))
    X_rows = executor.submit(stack_float64_rows, *blocks, key="item-rows")
    executor.release(*blocks)
    X_cols = executor.submit(to_csc, X_rows, key="item-columns")
    n = len(bounds) - 1
    parts = executor.map(top_k_from_rows, [X_rows] * n, [X_cols] * n, bounds[:-1], bounds[1:], diagonal=diagonal,
                         k=k, mode=mode, key="item-top-k", **params)
    S = sp.vstack(executor.gather(parts), format="csr")
    executor.release(*parts, X_rows, X_cols)
    return S


def stack_float64_rows(*blocks) -> sp.csr_matrix:
    """The row blocks stacked into one CSR matrix with float64 values (what the kernel sums in)."""
    return sp.vstack([sp.csr_matrix(b, dtype=np.float64) for b in blocks], format="csr")


def to_csc(X) -> sp.csc_matrix:
    return sp.csc_matrix(X)


def rows_route_bytes(nnz: int, n_users: int, n_items: int, k: int, width: int) -> int:
    """Bytes a task of the route from the rows holds: X in CSR and CSC (float64 values, int32
    indices), the dense accumulator of one column and the output rows of ``width`` items."""
    return 2 * 12 * int(nnz) + 8 * (int(n_users) + 2 * int(n_items)) + 17 * int(n_items) + 16 * int(k) * int(width)


def item_ranges(executor, n_items: int) -> int:
    """Item ranges of the route from the rows: one in process, else four per worker thread."""
    client = executor.client
    if client is None:
        return 1
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
    return max(1, min(n_items, 4 * max(1, threads)))


def rows_route_fits(source, executor, k: int) -> bool:
    """Whether one task may hold the whole interaction matrix twice (see :func:`rows_route_bytes`)."""
    from dask_rec.memory_plan import memory_limits, task_budget

    n_users, n_items = (int(n) for n in source.shape)
    need = rows_route_bytes(source.nnz, n_users, n_items, k, n_items)
    budget = task_budget(memory_limits(executor))
    return budget == 0 or need <= budget


class ItemItemModel(Recommender):
    """A model scored by a sparse item-item matrix: ``score_j = Σ_i x_i S_ij``.

    Subclasses set ``kind``, ``config_class`` and ``similarity_`` (CSR, float32) in ``fit``.
    """

    kind = ""
    config_class = None
    #: Name of the fitted matrix in messages ("S" by default).
    matrix_name = "S"

    def __init__(self, config=None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}; got {type(config).__name__}")
        self.similarity_ = None
        self.fit_report_: dict = {}

    def _fitted(self, S, source, seconds, **report) -> None:
        self.similarity_ = sp.csr_matrix(S, dtype=np.float32)
        self.item_vocabulary = source.item_vocabulary
        self.fit_report_ = {"n_items": int(S.shape[0]), "nnz": int(S.nnz), **report, "total_seconds": seconds}

    @property
    def n_items(self) -> int:
        if self.similarity_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        return int(self.similarity_.shape[0])

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of ``x · S`` per user; see the contract in :mod:`dask_rec.models.base`."""
        identity = sp.identity(self.n_items, dtype=np.float32, format="csr")
        return recommend_block(X_block, identity, self.similarity_, k, exclude_seen=exclude_seen, allowed=allowed,
                               n_threads=n_threads)

    def similar_items(self, items, k: int = 10):
        """Top ``k`` entries of the rows of S for ``items`` (the item itself excluded)."""
        single = np.ndim(items) == 0
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"items must be in [0, {self.n_items}); got {items.min()}..{items.max()}")
        identity = sp.identity(self.n_items, dtype=np.float32, format="csr")
        ids, scores = similar_items_block(items, identity, self.similarity_, k)
        return (ids[0], scores[0]) if single else (ids, scores)

    def save(self, path, *, overwrite: bool = False) -> str:
        """Zarr directory: root attrs kind, config; S as an anndata-style CSR group ``S``."""
        import zarr

        from dask_rec import __version__
        from dask_rec.data.atomic import atomic_directory
        from dask_rec.jsonable import to_jsonable
        from dask_rec.models.persistence import item_vocabulary_attrs, write_csr_group

        if self.similarity_ is None:
            raise ValueError(f"this {type(self).__name__} is not fitted: call fit() first")
        with atomic_directory(path, overwrite, marker="zarr.json") as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update({"format_version": 1, "kind": self.kind, "dask_rec_version": __version__,
                               "config": asdict(self.config), "n_items": self.n_items,
                               "fit_report": to_jsonable(self.fit_report_),
                               **item_vocabulary_attrs(self)})
            write_csr_group(root, "S", self.similarity_)
            if self.item_vocabulary is not None:
                self.item_vocabulary.save(tmp / "items.parquet")
        return str(path)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save`, checked (see :mod:`dask_rec.models.persistence`); no pickle."""
        from dask_rec.models.persistence import (config_error, open_member, open_model_root, read_csr_group,
                                          read_item_vocabulary)

        root, attrs = open_model_root(path, cls.kind)
        try:
            model = cls(cls.config_class(**attrs["config"]))
        except Exception as exc:
            raise config_error(path, exc) from None
        model.similarity_ = read_csr_group(open_member(root, "S")).astype(np.float32)
        model.fit_report_ = attrs.get("fit_report", {})
        model.item_vocabulary = read_item_vocabulary(path, model.n_items, attrs)
        return model
