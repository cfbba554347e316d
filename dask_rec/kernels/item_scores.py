"""Kernels of the models built from item counts (NumPy, no Dask).

* :func:`wilson_lower_bound`: lower bound of the Wilson score interval of a share.
* :func:`positive_counts_block`: interactions and positive interactions per item of a row block.
* :func:`random_topk_block`: seeded random top-k (uniform or weighted) per user.
* :func:`own_items_topk_block`: a user's own items by their value (most repeated first).
"""

from __future__ import annotations

import zlib
from statistics import NormalDist

import numpy as np
import scipy.sparse as sp

from .topk import padded_top

__all__ = ["wilson_lower_bound", "positive_counts_block", "random_topk_block", "own_items_topk_block"]


def wilson_lower_bound(positives, totals, confidence: float = 0.95) -> np.ndarray:
    """Lower bound of the two-sided Wilson score interval of ``positives / totals``.

    With ``p = positives / n`` and ``z`` the standard normal quantile of ``1 - (1 - confidence)/2``:
    ``(p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; 0 where ``n = 0``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    pos = np.asarray(positives, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    if np.any(pos < 0) or np.any(pos > n):
        raise ValueError("positives must be in [0, totals]")
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    out = np.zeros_like(n)
    has = n > 0
    nn, p = n[has], pos[has] / n[has]
    z2 = z * z
    out[has] = (p + z2 / (2 * nn) - z * np.sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn))) / (1 + z2 / nn)
    return np.maximum(out, 0.0)


def positive_counts_block(X_block, threshold: float) -> np.ndarray:
    """``[totals, positives]`` (2 × n_items int64) of a CSR block: stored entries, and those >= ``threshold``."""
    X = sp.csr_matrix(X_block)
    n_items = X.shape[1]
    totals = np.bincount(X.indices, minlength=n_items)
    positives = np.bincount(X.indices[X.data >= threshold], minlength=n_items)
    return np.stack([totals, positives]).astype(np.int64)


def _row_seed(seed: int, indices: np.ndarray) -> list:
    return [int(seed), zlib.crc32(np.ascontiguousarray(indices, dtype=np.int64).tobytes())]


def random_topk_block(X_block, k: int, weights, seed: int, exclude_seen: bool = True, allowed=None):
    """``k`` random items per user, without replacement, with probability ∝ ``weights``.

    Weighted sampling without replacement by Efraimidis–Spirakis keys ``log(u) / w`` (``u``
    uniform in (0, 1)); the returned score is the key. Each row's generator is seeded by
    ``(seed, CRC32 of the row's item indices)``: the same history gives the same list in any
    block. Items with weight 0 are never drawn.
    """
    X = sp.csr_matrix(X_block)
    w = np.asarray(weights, dtype=np.float64)
    ids, scores = padded_top(X.shape[0], k)
    base = w > 0
    if allowed is not None:
        base &= np.asarray(allowed, bool)
    for r in range(X.shape[0]):
        row = X.indices[X.indptr[r]:X.indptr[r + 1]]
        rng = np.random.default_rng(_row_seed(seed, row))
        keys = np.log(rng.random(w.shape[0]) + 1e-300) / np.where(base, w, 1.0)
        ok = base.copy()
        if exclude_seen:
            ok[row] = False
        keys[~ok] = -np.inf
        cand = np.flatnonzero(ok)
        m = min(k, cand.size)
        if m == 0:
            continue
        top = cand[np.argpartition(-keys[cand], m - 1)[:m]] if m < cand.size else cand
        top = top[np.lexsort((top, -keys[top]))]
        ids[r, :m], scores[r, :m] = top, keys[top]
    return ids, scores


def own_items_topk_block(X_block, k: int, exclude_seen: bool = False, allowed=None):
    """Each user's own items ranked by their value (ties by lower index); positive values only.

    With ``exclude_seen`` every own item is excluded, so the rows are all padding (−1 / −inf).
    """
    X = sp.csr_matrix(X_block)
    ids, scores = padded_top(X.shape[0], k)
    if exclude_seen:
        return ids, scores
    for r in range(X.shape[0]):
        cols = X.indices[X.indptr[r]:X.indptr[r + 1]].astype(np.int64)
        vals = X.data[X.indptr[r]:X.indptr[r + 1]].astype(np.float32)
        keep = vals > 0
        if allowed is not None:
            keep &= np.asarray(allowed, bool)[cols]
        cols, vals = cols[keep], vals[keep]
        order = np.lexsort((cols, -vals))[:k]
        ids[r, :order.size], scores[r, :order.size] = cols[order], vals[order]
    return ids, scores
