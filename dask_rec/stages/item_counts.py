"""Interactions per item of a matrix, a store or a store path: the item-counts stage.

A store carries its counts (written by the ingest); a matrix is counted here. Used by the count
baselines (:mod:`dask_rec.models.popularity`), ALS and serving's ``unknown="popular"``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["item_counts_of"]


def item_counts_of(data) -> tuple[np.ndarray, object]:
    """``(counts int64 per item, item vocabulary or None)`` of a matrix, a store or a store path."""
    import os

    if isinstance(data, (str, os.PathLike)):
        from dask_rec.data.store import open_store

        data = open_store(data)
    if hasattr(data, "read_block") and hasattr(data, "item_counts"):
        return np.asarray(data.item_counts, dtype=np.int64), data.item_vocabulary
    from dask_rec.validation import check_interactions

    X = sp.csr_matrix(check_interactions(data, "data"))
    X.eliminate_zeros()
    return np.bincount(X.indices, minlength=X.shape[1]).astype(np.int64), None
