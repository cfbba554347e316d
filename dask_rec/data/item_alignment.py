"""Serving a model with a store whose items are not (exactly) the model's: map by item ID, or refuse.

A store's columns are its own items, in the sorted order of its item IDs; a model's are the items
of the store it was trained on. Scoring a store's rows with a model is right only when column
``j`` means the same item on both sides. :func:`align_store` compares the two item
vocabularies:

* equal: the store is used as it is;
* overlapping: the store is wrapped in :class:`AlignedStore`, whose blocks have the model's
  columns (a store item the model does not know is left out of the histories; a model item the
  store lacks simply has no interactions), and the overlap is logged;
* disjoint (no common ID, e.g. IDs shifted or integer against string IDs): a one-line
  ``ValueError`` naming both ID ranges.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["align_store", "AlignedStore", "remap_columns"]

logger = logging.getLogger(__name__)


def remap_columns(X, column_map: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """``X`` with column ``j`` moved to ``column_map[j]`` (dropped where it is −1), ``n_columns`` wide."""
    X = sp.csr_matrix(X)
    new = column_map[X.indices]
    keep = new >= 0
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=X.shape[0]))]).astype(np.int64)
    out = sp.csr_matrix((X.data[keep], new[keep].astype(np.int32), indptr), shape=(X.shape[0], n_columns))
    out.sort_indices()  # the model's order of items is not the store's
    return out


class AlignedStore:
    """A store seen through a model's item columns (picklable: the store and the column map).

    Has what batch recommendation reads of a store: ``shape``, ``block_bounds``, ``n_blocks``,
    ``read_block``, ``read_rows``, ``user_vocabulary`` and ``item_counts`` (summed onto the
    model's columns).
    """

    def __init__(self, store, column_map: np.ndarray, n_items: int) -> None:
        self.store = store
        self.column_map = np.asarray(column_map, dtype=np.int64)
        self.n_items = int(n_items)

    @property
    def shape(self) -> tuple[int, int]:
        return self.store.shape[0], self.n_items

    @property
    def block_bounds(self):
        return self.store.block_bounds

    @property
    def n_blocks(self) -> int:
        return self.store.n_blocks

    @property
    def user_vocabulary(self):
        return self.store.user_vocabulary

    @property
    def item_counts(self) -> np.ndarray:
        counts = np.zeros(self.n_items, np.int64)
        known = self.column_map >= 0
        np.add.at(counts, self.column_map[known], np.asarray(self.store.item_counts)[known])
        return counts

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        return remap_columns(self.store.read_rows(start, stop), self.column_map, self.n_items)

    def read_block(self, i: int) -> sp.csr_matrix:
        return remap_columns(self.store.read_block(i), self.column_map, self.n_items)


def _describe(ids) -> str:
    ids = np.asarray(ids)
    kind = "integer" if ids.dtype.kind in "iu" else "string"
    shown = ", ".join(repr(x.item() if hasattr(x, "item") else x) for x in ids[:3])
    return f"{len(ids)} {kind} IDs ({shown}{', ...' if len(ids) > 3 else ''})"


def align_store(store, model_item_ids, n_items: int, *, log: bool = True):
    """``store`` as the model sees it: itself, an :class:`AlignedStore`, or a one-line ``ValueError``.

    Parameters
    ----------
    store : InteractionStore
    model_item_ids : array-like or None
        The model's item IDs in column order; None when the model has no vocabulary (then the
        store must simply have ``n_items`` columns).
    n_items : int
        The model's number of items.
    log : bool
        Log the overlap (a warning) when the vocabularies differ.
    """
    if model_item_ids is None:
        if store.shape[1] != n_items:
            raise ValueError(f"the store {store.path} has {store.shape[1]} items but the model has {n_items} "
                             "(and no item IDs to map them by): recommend with the store the model was trained on")
        return store
    model_ids = np.asarray(model_item_ids)
    store_ids = np.asarray(store.item_vocabulary.ids)
    if model_ids.shape == store_ids.shape and model_ids.dtype.kind == store_ids.dtype.kind \
            and np.array_equal(model_ids, store_ids):
        return store
    column_map = pd.Index(model_ids).get_indexer(store_ids).astype(np.int64)
    overlap = int((column_map >= 0).sum())
    if overlap == 0:
        raise ValueError(f"the store {store.path} shares no item ID with the model: the store has "
                         f"{_describe(store_ids)}, the model {_describe(model_ids)}; recommend with a store "
                         "ingested from the same log as the model's")
    if log:
        logger.warning("mapping the store's items onto the model's by ID: %d of the store's %d items are the model's "
                       "(%d unknown to the model are ignored; %d of the model's %d items are not in the store)",
                       overlap, len(store_ids), len(store_ids) - overlap, len(model_ids) - overlap, len(model_ids))
    return AlignedStore(store, column_map, n_items)
