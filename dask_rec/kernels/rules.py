"""Association rules ``i → j`` from a column block of the binary Gramian (no Dask).

With ``N`` users (transactions), ``c_i`` the users of item ``i`` and ``c_ij = G_ij`` the users of
both (``G`` the Gramian of the binarized interactions):

* support: ``s(i → j) = c_ij / N``;
* confidence: ``conf(i → j) = c_ij / c_i`` (the share of ``i``'s users who also have ``j``);
* lift: ``lift(i → j) = c_ij · N / (c_i · c_j)`` (confidence over ``j``'s base rate).

A rule is kept when ``s ≥ min_support`` and ``conf ≥ min_confidence`` (and ``i ≠ j``); each
antecedent ``i`` keeps its ``k`` best rules by the chosen metric (ties by the lower item index).
Since ``G`` is symmetric, the column block ``G[:, a:b]`` holds the rules of antecedents ``a:b``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .neighbors import gramian_columns, stack_rows

__all__ = ["METRICS", "rules_block"]

METRICS = ("confidence", "lift", "support")


def rules_block(gramian_block, col_start: int, item_counts, n_users: int, k: int, metric: str = "confidence",
                min_support: float = 0.0, min_confidence: float = 0.0) -> sp.csr_matrix:
    """Rows ``col_start:col_start+width`` of the rule matrix R (``R[i, j]`` = metric of ``i → j``).

    Parameters
    ----------
    gramian_block : scipy.sparse matrix, shape (n_items, width)
        Column block of the binary Gramian (co-occurrence counts).
    col_start : int
        Item index of the block's first column.
    item_counts : numpy.ndarray, shape (n_items,)
        Users per item ``c_i``.
    n_users : int
        ``N``.
    k : int
        Rules kept per antecedent.
    metric : {"confidence", "lift", "support"}
    min_support, min_confidence : float

    Returns
    -------
    scipy.sparse.csr_matrix, shape (width, n_items), float32
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
    G = gramian_columns(gramian_block, col_start)
    counts = np.asarray(item_counts, dtype=np.float64)
    n_items, width = G.shape
    cols, vals = [], []
    for c in range(width):
        i = col_start + c
        j = G.indices[G.indptr[c]:G.indptr[c + 1]]
        both = G.data[G.indptr[c]:G.indptr[c + 1]]
        support = both / n_users
        confidence = both / counts[i] if counts[i] > 0 else np.zeros_like(both)
        keep = (j != i) & (both > 0) & (support >= min_support) & (confidence >= min_confidence)
        j, both, support, confidence = j[keep], both[keep], support[keep], confidence[keep]
        if metric == "confidence":
            value = confidence
        elif metric == "lift":
            value = both * n_users / (counts[i] * counts[j])
        else:
            value = support
        if j.size > k:
            order = np.lexsort((j, -value))[:k]  # best first, ties by the lower item index
            chosen = np.sort(order)
            j, value = j[chosen], value[chosen]
        cols.append(j)
        vals.append(value)
    return stack_rows(cols, vals, n_items)
