"""Item-item similarities from a column block of the Gramian, top-k neighbours per item (no Dask).

For items ``i, j`` with Gramian entry ``G_ij = Σ_u x_ui x_uj`` and ``G_ii`` on the diagonal:

* cosine: ``G_ij / (sqrt(G_ii) · sqrt(G_jj) + shrinkage)`` (item columns of X L2-normalised);
* jaccard: ``G_ij / (G_ii + G_jj − G_ij + shrinkage)`` (for binary X: |U_i ∩ U_j| / |U_i ∪ U_j|).

Every item keeps its ``k`` most similar items, itself included (as implicit's ItemItemRecommender
does, so ``k`` neighbours means ``k`` stored entries per row); ties by the lower item index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["SIMILARITIES", "neighbours_block"]

SIMILARITIES = ("cosine", "jaccard")


def neighbours_block(gramian_block, col_start: int, diagonal, k: int, similarity: str = "cosine",
                     shrinkage: float = 0.0) -> sp.csr_matrix:
    """Rows ``col_start:col_start+width`` of the neighbour matrix S from ``G[:, col_start:col_stop]``.

    Parameters
    ----------
    gramian_block : scipy.sparse matrix, shape (n_items, width)
        A column block of the (symmetric) Gramian.
    col_start : int
        Item index of the block's first column.
    diagonal : numpy.ndarray, shape (n_items,)
        ``diag(G)``.
    k : int
        Neighbours kept per item.
    similarity : {"cosine", "jaccard"}
    shrinkage : float, default 0

    Returns
    -------
    scipy.sparse.csr_matrix, shape (width, n_items), float32
        Row ``r`` holds the top-``k`` similarities of item ``col_start + r``.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}; got {similarity!r}")
    G = sp.csc_matrix(gramian_block, dtype=np.float64)
    G.sort_indices()
    diag = np.asarray(diagonal, dtype=np.float64)
    n_items, width = G.shape
    norms = np.sqrt(diag)
    indptr = np.zeros(width + 1, np.int64)
    cols, vals = [], []
    for c in range(width):
        j = col_start + c
        rows = G.indices[G.indptr[c]:G.indptr[c + 1]]
        g = G.data[G.indptr[c]:G.indptr[c + 1]]
        if similarity == "cosine":
            denom = norms[rows] * norms[j] + shrinkage
        else:
            denom = diag[rows] + diag[j] - g + shrinkage
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(denom > 0, g / denom, 0.0)
        keep = sim != 0
        rows, sim = rows[keep], sim[keep]
        if rows.size > k:
            part = np.argpartition(-sim, k - 1)[:k]
            # the k-th value may tie with dropped ones: keep the lower indices among equals
            kth = sim[part].min()
            above = np.flatnonzero(sim > kth)
            ties = np.flatnonzero(sim == kth)[: k - above.size]
            chosen = np.sort(np.r_[above, ties])
            rows, sim = rows[chosen], sim[chosen]
        cols.append(rows)
        vals.append(sim.astype(np.float32))
        indptr[c + 1] = indptr[c] + rows.size
    indices = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(width, n_items))
