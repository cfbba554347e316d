"""ItemKNN: item-item neighbours from the Gramian, scores ``x · S`` (S: top-k neighbours per item).

Stages (the same as SANSA's up to the Gramian): row blocks → ``reduce_gramian`` (column blocks,
never assumed to be one) → one task per column block gathers its diagonal segment → one task per
column block computes the neighbour rows of its items
(:func:`dask_rec.kernels.neighbors.neighbours_block`) → the rows are stacked into the sparse S
(``n_items × n_items``, at most ``k`` entries per row). Scoring is exact:
``recommend_block(X, I, S)`` with ``I`` the sparse identity, i.e. ``score_j = Σ_i x_i S_ij``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.neighbors import bm25_length_norm, item_value_sums, neighbours_block, weight_rows
from dask_rec.kernels.scoring import recommend_block, similar_items_block

from .base import Recommender

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


def _sum_arrays(parts):
    return np.sum(parts, axis=0)


def _diagonal_segment(block, start):
    block = sp.csc_matrix(block)
    width = block.shape[1]
    return np.asarray(block[start:start + width, :].diagonal(), dtype=np.float64)


class ItemKNN(Recommender):
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

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config if config is not None else ItemKNNConfig()
        if not isinstance(self.config, ItemKNNConfig):
            raise TypeError(f"config must be an ItemKNNConfig; got {type(config).__name__}")
        self.similarity_ = None
        self.fit_report_: dict = {}

    def fit(self, data, client=None) -> "ItemKNN":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self."""
        from dask_rec.blocks import as_row_block_source
        from dask_rec.cluster import client_context, current_client
        from dask_rec.executor import executor_for

        source = as_row_block_source(data)
        if client is None:
            client = current_client()
            if client is None and source.store is not None:
                client = "local"
        if isinstance(client, str) and client != "local":
            raise ValueError(f"client must be a distributed.Client, 'local' or None; got {client!r}")
        t0 = time.perf_counter()
        if client is None:
            S = self._fit_stages(source, executor_for(None))
        else:
            with client_context(None if client == "local" else client) as c:
                S = self._fit_stages(source, executor_for(c))
        self.similarity_ = S
        self.item_vocabulary = source.item_vocabulary
        self.fit_report_ = {"n_items": int(S.shape[0]), "nnz": int(S.nnz),
                            "total_seconds": round(time.perf_counter() - t0, 3)}
        return self

    def _fit_stages(self, source, executor) -> sp.csr_matrix:
        from dask_rec.gramian import reduce_gramian

        n_items = int(source.shape[1])
        c = self.config
        weighting, similarity = _SCHEMES[c.similarity]
        blocks = source.block_handles(executor)
        if weighting is not None:  # weighted rows block by block (bm25 needs the item sums first)
            norm = None
            if weighting == "bm25":
                sums = executor.tree_reduce(_sum_arrays, executor.map(item_value_sums, blocks, key="knn-item-sums"),
                                            key="knn-item-sums-sum")
                norm = bm25_length_norm(executor.gather(sums), c.B)
            weighted = executor.map(weight_rows, blocks, scheme=weighting, length_norm=norm, K1=c.K1,
                                    key="knn-weight-rows")
            executor.release(*blocks)
            blocks = weighted
        gramian = reduce_gramian(executor, blocks, n_items)
        starts = [a for a, _, _ in gramian]
        handles = [h for _, _, h in gramian]
        diagonal = np.concatenate(executor.gather(executor.map(_diagonal_segment, handles, starts, key="knn-diag")))
        rows = executor.map(neighbours_block, handles, starts, diagonal=diagonal, k=c.k, similarity=similarity,
                            shrinkage=c.shrinkage, key="knn-neighbours")
        S = sp.vstack(executor.gather(rows), format="csr")
        executor.release(*rows, *handles, *blocks)
        return S

    @property
    def n_items(self) -> int:
        if self.similarity_ is None:
            raise RuntimeError("ItemKNN is not fitted: call fit() first")
        return int(self.similarity_.shape[0])

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of ``x · S`` per user; see the contract in :mod:`dask_rec.models.base`."""
        identity = sp.identity(self.n_items, dtype=np.float32, format="csr")
        return recommend_block(X_block, identity, self.similarity_, k, exclude_seen=exclude_seen, allowed=allowed,
                               n_threads=n_threads)

    def similar_items(self, items, k: int = 10):
        """Top ``k`` neighbours of each of ``items`` (rows of S, the item itself excluded)."""
        single = np.ndim(items) == 0
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"items must be in [0, {self.n_items}); got {items.min()}..{items.max()}")
        identity = sp.identity(self.n_items, dtype=np.float32, format="csr")
        ids, scores = similar_items_block(items, identity, self.similarity_, k)
        return (ids[0], scores[0]) if single else (ids, scores)

    def save(self, path, *, overwrite: bool = False) -> str:
        """Zarr directory: root attrs kind, config; S as an anndata-style CSR group ``S``."""
        import json

        import zarr

        from dask_rec import __version__
        from dask_rec.persistence import item_vocabulary_attrs, write_csr_group
        from dask_rec.store import atomic_directory

        S = self.similarity_
        if S is None:
            raise ValueError("this ItemKNN is not fitted: call fit() first")
        with atomic_directory(path, overwrite, marker="zarr.json") as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update({"format_version": 1, "kind": self.kind, "dask_rec_version": __version__,
                               "config": asdict(self.config), "n_items": self.n_items,
                               "fit_report": json.loads(json.dumps(self.fit_report_, default=str)),
                               **item_vocabulary_attrs(self)})
            write_csr_group(root, "S", S)
            if self.item_vocabulary is not None:
                self.item_vocabulary.save(tmp / "items.parquet")
        return str(path)

    @classmethod
    def load(cls, path) -> "ItemKNN":
        """Load a model written by :meth:`save`, checked (see :mod:`dask_rec.persistence`)."""
        from dask_rec.persistence import (config_error, open_member, open_model_root, read_csr_group,
                                          read_item_vocabulary)

        root, attrs = open_model_root(path, cls.kind)
        try:
            model = cls(ItemKNNConfig(**attrs["config"]))
        except Exception as exc:
            raise config_error(path, exc) from None
        model.similarity_ = read_csr_group(open_member(root, "S")).astype(np.float32)
        model.fit_report_ = attrs.get("fit_report", {})
        model.item_vocabulary = read_item_vocabulary(path, model.n_items, attrs)
        return model
