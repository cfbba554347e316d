"""ItemKNN: item-item neighbours from the Gramian, scores ``x · S`` (S: top-k neighbours per item).

Two routes give the same S (up to the order of float64 sums):

* **from the rows** (when the interactions fit in one task's memory, the usual case): one task
  stacks the (weighted) row blocks into the whole matrix X, another converts it to CSC, and one
  task per item range (ranges balanced by the work of their Gramian columns) accumulates each
  Gramian column ``G[:, j]`` in a dense array and keeps its ``k`` best similarities at once
  (:func:`dask_rec.kernels.item_columns.top_k_from_rows`): the Gramian is never stored.
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
from dask_rec.kernels.neighbors import bm25_length_norm, item_value_sums, neighbours_block, weight_rows

from . import _item_item
from ._item_item import ItemItemModel, gramian_stage, run_fit, top_k_from_rows_stage

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
        if _item_item.rows_route_fits(source, executor, c.k):
            return top_k_from_rows_stage(source, executor, blocks, c.k, similarity, shrinkage=c.shrinkage)
        starts, handles, diagonal, blocks = gramian_stage(source, executor, blocks=blocks)
        rows = executor.map(neighbours_block, handles, starts, diagonal=diagonal, k=c.k, similarity=similarity,
                            shrinkage=c.shrinkage, key="knn-neighbours")
        S = sp.vstack(executor.gather(rows), format="csr")
        executor.release(*rows, *handles, *blocks)
        return S
