"""ItemKNN: item-item neighbours from the Gramian, scores ``x · S`` (S: top-k neighbours per item).

Two routes give the same S (up to the order of float64 sums):

* **from the rows** (when the interactions fit in one task's memory, the usual case): one task
  stacks the (weighted) row blocks into the whole matrix X, another converts it to CSC, and one
  task per item range (ranges balanced by the work of their Gramian columns) accumulates each
  Gramian column ``G[:, j]`` in a dense array and keeps its ``k`` best similarities at once
  (:func:`dask_rec.kernels.neighbors.neighbours_from_rows`): the Gramian is never stored.
* **from the Gramian** (otherwise): row blocks → ``reduce_gramian`` (column blocks) → one task per
  column block gathers its diagonal segment and computes the neighbour rows of its items
  (:func:`dask_rec.kernels.neighbors.neighbours_block`).

The rows are stacked into the sparse S (``n_items × n_items``, at most ``k`` entries per row).
Scoring is exact: ``recommend_block(X, I, S)`` with ``I`` the sparse identity, i.e.
``score_j = Σ_i x_i S_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.gramian import sum_arrays
from dask_rec.kernels.neighbors import (balanced_ranges, bm25_length_norm, item_column_costs, item_square_sums,
                                       item_value_sums, neighbours_block, neighbours_from_rows, weight_rows)

from ._item_item import ItemItemModel, gramian_stage, run_fit

__all__ = ["ItemKNNConfig", "ItemKNN"]


#: similarity -> (row weighting, similarity of the weighted Gramian)
_SCHEMES = {"cosine": (None, "cosine"), "jaccard": (None, "jaccard"), "tfidf": ("tfidf", "cosine"),
            "bm25": ("bm25", "dot")}
SIMILARITIES = tuple(_SCHEMES)


@dataclass(frozen=True)
class ItemKNNConfig:
    """``k`` neighbours per item (itself included), ``similarity``, ``shrinkage`` >= 0, BM25's ``K1`` and ``B``.

    ``similarity``: ``cosine`` and ``jaccard`` on X's Gramian; ``tfidf`` (cosine of the tf-idf
    weighted X, as implicit's TFIDFRecommender) and ``bm25`` (Gramian of the BM25-weighted X, as
    implicit's BM25Recommender, whose defaults ``K1=1.2, B=0.75`` these are); see
    :mod:`dask_rec.kernels.neighbors`.
    """

    k: int = 100
    similarity: str = "cosine"
    shrinkage: float = 0.0
    K1: float = 1.2
    B: float = 0.75

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1; got {self.k!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}; got {self.similarity!r}")
        if not np.isfinite(self.shrinkage) or self.shrinkage < 0:
            raise ValueError(f"shrinkage must be a finite number >= 0; got {self.shrinkage!r}")
        if not np.isfinite(self.K1) or self.K1 < 0:
            raise ValueError(f"K1 must be a finite number >= 0; got {self.K1!r}")
        if not 0.0 <= self.B <= 1.0:
            raise ValueError(f"B must be in [0, 1]; got {self.B!r}")


class ItemKNN(ItemItemModel):
    """Item-based nearest neighbours (cosine, Jaccard, tf-idf or BM25 on the Gramian, with shrinkage).

    Parameters
    ----------
    config : ItemKNNConfig, optional

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix or None
        S, row ``i`` = the top-``k`` neighbours of item ``i``.
    """

    name = "itemknn"
    kind = "dask_rec.ItemKNN"
    config_class = ItemKNNConfig

    def fit(self, data, client=None) -> "ItemKNN":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self."""
        S, source, seconds = run_fit(data, client, self._fit_stages)
        self._fitted(S, source, seconds)
        return self

    def _fit_stages(self, source, executor) -> sp.csr_matrix:
        c = self.config
        weighting, similarity = _SCHEMES[c.similarity]
        blocks = source.block_handles(executor)
        if weighting is not None:  # weighted rows block by block (bm25 needs the item sums first)
            norm = None
            if weighting == "bm25":
                sums = executor.tree_reduce(sum_arrays, executor.map(item_value_sums, blocks, key="knn-item-sums"),
                                            key="knn-item-sums-sum")
                norm = bm25_length_norm(executor.gather(sums), c.B)
            weighted = executor.map(weight_rows, blocks, scheme=weighting, length_norm=norm, K1=c.K1,
                                    key="knn-weight-rows")
            executor.release(*blocks)
            blocks = weighted
        if rows_route_fits(source, executor, c.k):
            return self._from_rows(source, executor, blocks, similarity)
        starts, handles, diagonal, blocks = gramian_stage(source, executor, blocks=blocks)
        rows = executor.map(neighbours_block, handles, starts, diagonal=diagonal, k=c.k, similarity=similarity,
                            shrinkage=c.shrinkage, key="knn-neighbours")
        S = sp.vstack(executor.gather(rows), format="csr")
        executor.release(*rows, *handles, *blocks)
        return S

    def _from_rows(self, source, executor, blocks, similarity) -> sp.csr_matrix:
        c = self.config
        n_items = int(source.shape[1])
        diagonal = executor.gather(executor.tree_reduce(sum_arrays, executor.map(item_square_sums, blocks,
                                                                                  key="knn-diagonal"),
                                                        key="knn-diagonal-sum"))
        costs = executor.gather(executor.tree_reduce(sum_arrays, executor.map(item_column_costs, blocks,
                                                                               key="knn-costs"),
                                                     key="knn-costs-sum"))
        X_rows = executor.submit(stack_float64_rows, *blocks, key="knn-rows")
        executor.release(*blocks)
        X_cols = executor.submit(to_csc, X_rows, key="knn-columns")
        bounds = balanced_ranges(costs, item_ranges(executor, n_items))
        parts = executor.map(neighbours_from_rows, [X_rows] * (len(bounds) - 1), [X_cols] * (len(bounds) - 1),
                             bounds[:-1], bounds[1:], diagonal=diagonal, k=c.k, similarity=similarity,
                             shrinkage=c.shrinkage, key="knn-neighbours")
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
