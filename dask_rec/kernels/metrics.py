"""Ranking metrics for one block of users (NumPy/numba, no Dask).

Definitions follow Liang et al., "Variational Autoencoders for Collaborative Filtering" (WWW 2018),
the protocol SANSA's paper reports:

- ``Recall@k = |top-k ∩ targets| / min(k, |targets|)``;
- ``NDCG@k = DCG@k / IDCG@k`` with ``DCG@k = Σ_{r<k} hit_r / log2(r + 2)`` (rank ``r`` from 0)
  and ``IDCG@k = Σ_{r<min(k, |targets|)} 1 / log2(r + 2)``;
- ``Coverage@k``: the share of the catalog that appears in at least one user's top k.

Users with no targets have no defined recall or NDCG: per-user functions return NaN for them and
:func:`metric_sums` leaves them out of every sum and count (coverage included), so means are over
users with at least one target. Padding ids (−1) never count as hits.

Block results are reduced with :func:`merge_metric_sums` (sums of floats and counts; coverage as
bit-packed item sets OR-ed together) and turned into means by :func:`finalize_metrics`.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = [
    "hits_block",
    "recall_at_k",
    "ndcg_at_k",
    "recommended_items",
    "metric_sums",
    "merge_metric_sums",
    "finalize_metrics",
    "METRICS",
]

#: Metric names understood by :func:`metric_sums`.
METRICS = ("recall", "ndcg", "coverage")


@numba.njit(nogil=True, cache=True)
def _hits_kernel(topk_ids, t_ptr, t_ind, n_items, out):
    n_rows, k = topk_ids.shape
    mark = np.full(n_items, -1, np.int64)
    for r in range(n_rows):
        for p in range(t_ptr[r], t_ptr[r + 1]):
            mark[t_ind[p]] = r
        for c in range(k):
            j = topk_ids[r, c]
            out[r, c] = j >= 0 and j < n_items and mark[j] == r


def _targets(targets, n_rows: int) -> sp.csr_matrix:
    if not sp.issparse(targets):
        raise TypeError(f"targets must be a scipy.sparse matrix; got {type(targets).__name__}")
    targets = targets.tocsr()
    if targets.shape[0] != n_rows:
        raise ValueError(f"targets has {targets.shape[0]} rows; topk_ids has {n_rows}")
    return targets


def _n_targets(targets: sp.csr_matrix) -> np.ndarray:
    """Distinct target items per user (duplicate entries counted once)."""
    if targets.has_canonical_format:
        return np.diff(targets.indptr)
    t = targets.copy()
    t.sum_duplicates()
    return np.diff(t.indptr)


def hits_block(topk_ids, targets) -> np.ndarray:
    """Whether each recommended item is one of the user's targets.

    Parameters
    ----------
    topk_ids : numpy.ndarray of int, shape (b, k)
        Ranked item ids per user (−1 for padding).
    targets : scipy.sparse matrix, shape (b, n_items)
        Held-out items per user (sparsity pattern).

    Returns
    -------
    numpy.ndarray of bool, shape (b, k)
    """
    topk_ids = np.asarray(topk_ids, dtype=np.int64)
    if topk_ids.ndim != 2:
        raise ValueError("topk_ids must be 2-D")
    targets = _targets(targets, topk_ids.shape[0])
    out = np.zeros(topk_ids.shape, np.bool_)
    if out.size:
        _hits_kernel(topk_ids, targets.indptr, targets.indices, targets.shape[1], out)
    return out


def _cut(topk_ids, k: int) -> np.ndarray:
    topk_ids = np.asarray(topk_ids)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if topk_ids.ndim != 2 or topk_ids.shape[1] < k:
        raise ValueError(f"topk_ids must be 2-D with at least k={k} columns; got {topk_ids.shape}")
    return topk_ids[:, :k]


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def _recall_from_hits(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    denom = np.minimum(n_targets, k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = hits[:, :k].sum(axis=1) / denom
    out[n_targets == 0] = np.nan
    return out


def _ndcg_from_hits(hits: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    disc = _discounts(k)
    dcg = hits[:, :k].astype(np.float64) @ disc
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_targets, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = dcg / ideal
    out[n_targets == 0] = np.nan
    return out


def recall_at_k(topk_ids, targets, k: int) -> np.ndarray:
    """Recall@k per user: hits in the first ``k`` ids over ``min(k, |targets|)``.

    Parameters
    ----------
    topk_ids : numpy.ndarray of int, shape (b, >= k)
        Ranked item ids per user (−1 for padding, never a hit).
    targets : scipy.sparse matrix, shape (b, n_items)
        Held-out items per user.
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray of float64, shape (b,)
        NaN for users with no targets (leave them out of means: ``np.nanmean``).
    """
    ids = _cut(topk_ids, k)
    targets = _targets(targets, ids.shape[0])
    return _recall_from_hits(hits_block(ids, targets), _n_targets(targets), k)


def ndcg_at_k(topk_ids, targets, k: int) -> np.ndarray:
    """NDCG@k per user with binary relevance (Liang et al. 2018).

    Parameters
    ----------
    topk_ids : numpy.ndarray of int, shape (b, >= k)
        Ranked item ids per user (−1 for padding, never a hit).
    targets : scipy.sparse matrix, shape (b, n_items)
        Held-out items per user.
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray of float64, shape (b,)
        ``DCG@k / IDCG@k``; NaN for users with no targets.
    """
    ids = _cut(topk_ids, k)
    targets = _targets(targets, ids.shape[0])
    return _ndcg_from_hits(hits_block(ids, targets), _n_targets(targets), k)


def recommended_items(topk_ids, n_items: int, k: int | None = None) -> np.ndarray:
    """The set of items that appear in the first ``k`` ids of any row, as a boolean mask.

    Parameters
    ----------
    topk_ids : numpy.ndarray of int, shape (b, >= k)
        Ranked item ids per user (−1 padding is ignored).
    n_items : int
        Catalog size.
    k : int, optional
        Cut-off; all columns by default.

    Returns
    -------
    numpy.ndarray of bool, shape (n_items,)
        ``mask.sum() / n_items`` is the coverage.
    """
    ids = np.asarray(topk_ids) if k is None else _cut(topk_ids, k)
    ids = ids[ids >= 0]
    mask = np.zeros(n_items, np.bool_)
    mask[ids] = True
    return mask


def metric_sums(topk_ids, targets, ks, metrics=METRICS) -> dict:
    """Per-block partial results of the metrics, to be merged across blocks.

    Parameters
    ----------
    topk_ids : numpy.ndarray of int, shape (b, >= max(ks))
        Ranked item ids per user.
    targets : scipy.sparse matrix, shape (b, n_items)
        Held-out items per user; users without any are left out of everything.
    ks : sequence of int
        Cut-offs.
    metrics : sequence of str
        Any of :data:`METRICS`.

    Returns
    -------
    dict
        ``"n_users"`` (users with targets), ``"n_items"``, ``"recall@k"`` and ``"ndcg@k"`` sums,
        and ``"coverage@k"`` bit-packed item masks (``numpy.packbits``).
    """
    ks = [int(k) for k in ks]
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    ids = _cut(topk_ids, max(ks))
    targets = _targets(targets, ids.shape[0])
    n_t = _n_targets(targets)
    valid = n_t > 0
    ids, n_t = ids[valid], n_t[valid]
    targets = targets[valid]
    hits = hits_block(ids, targets)
    n_items = targets.shape[1]
    out = {"n_users": int(valid.sum()), "n_items": int(n_items)}
    for k in ks:
        if "recall" in metrics:
            out[f"recall@{k}"] = float(_recall_from_hits(hits, n_t, k).sum())
        if "ndcg" in metrics:
            out[f"ndcg@{k}"] = float(_ndcg_from_hits(hits, n_t, k).sum())
        if "coverage" in metrics:
            out[f"coverage@{k}"] = np.packbits(recommended_items(ids, n_items, k))
    return out


def merge_metric_sums(parts) -> dict:
    """Merge :func:`metric_sums` results of several blocks (sums added, item sets united)."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to merge")
    out = dict(parts[0])
    for part in parts[1:]:
        if part.keys() != out.keys():
            raise ValueError("cannot merge metric sums with different keys")
        for key, value in part.items():
            if key == "n_items":
                if value != out[key]:
                    raise ValueError("cannot merge metric sums over different catalogs")
            elif key.startswith("coverage@"):
                out[key] = np.bitwise_or(out[key], value)
            else:
                out[key] = out[key] + value
    return out


def finalize_metrics(sums: dict) -> dict:
    """Means from merged sums: ``{"recall@20": ..., "coverage@20": ..., "n_users": ...}``.

    Means over zero users are NaN.
    """
    n = sums["n_users"]
    n_items = sums["n_items"]
    out = {}
    for key, value in sums.items():
        if key in ("n_users", "n_items"):
            continue
        if key.startswith("coverage@"):
            count = int(np.unpackbits(value, count=n_items).sum())
            out[key] = count / n_items if n_items else float("nan")
        else:
            out[key] = value / n if n else float("nan")
    out["n_users"] = int(n)
    return out
