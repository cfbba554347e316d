"""Item-item similarities from a column block of the Gramian, top-k neighbours per item (no Dask).

For items ``i, j`` with Gramian entry ``G_ij = Σ_u x_ui x_uj`` and ``G_ii`` on the diagonal:

* cosine: ``G_ij / (sqrt(G_ii) · sqrt(G_jj) + shrinkage)`` (item columns of X L2-normalised);
* jaccard: ``G_ij / (G_ii + G_jj − G_ij + shrinkage)`` (for binary X: |U_i ∩ U_j| / |U_i ∪ U_j|);
* dot: ``G_ij / (1 + shrinkage)``: the raw Gramian of a weighted X (used by BM25).

Weighted X (:func:`weight_rows`), with ``n_u`` the items of user ``u``, ``N`` the number of items,
``idf_u = log(N) − log(1 + n_u)`` (users are the "terms" of item "documents"):

* tfidf: ``w_ui = sqrt(x_ui) · idf_u``, then cosine;
* bm25: ``w_ui = x_ui (K1 + 1) / (K1 · L_i + x_ui) · idf_u`` with the item length norm
  ``L_i = (1 − B) + B · c_i / mean(c)`` and ``c_i = Σ_u x_ui``, then dot. Both need only the
  user's own row and the global item sums ``c`` (reduced over row blocks first), so the weighted
  blocks are computed block by block and their Gramian reduced like X's.

Every item keeps its ``k`` most similar items, itself included (as implicit's ItemItemRecommender
does, so ``k`` neighbours means ``k`` stored entries per row); ties by the lower item index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit


__all__ = ["SIMILARITIES", "neighbours_block", "neighbours_block_naive", "gramian_columns",
           "weight_rows", "item_value_sums", "item_square_sums", "bm25_length_norm", "stack_rows"]

SIMILARITIES = ("cosine", "jaccard", "dot")


def item_value_sums(X_block) -> np.ndarray:
    """``Σ_u x_ui`` per item over a CSR block (float64)."""
    X = sp.csr_matrix(X_block)
    return np.bincount(X.indices, weights=X.data.astype(np.float64), minlength=X.shape[1])


def item_square_sums(X_block) -> np.ndarray:
    """``Σ_u x_ui²`` per item over a CSR block (float64): the Gramian's diagonal."""
    X = sp.csr_matrix(X_block)
    data = X.data.astype(np.float64)
    return np.bincount(X.indices, weights=data * data, minlength=X.shape[1])


def bm25_length_norm(item_sums, B: float) -> np.ndarray:
    """``(1 − B) + B · c_i / mean(c)`` per item."""
    c = np.asarray(item_sums, dtype=np.float64)
    return (1.0 - B) + B * c / c.mean()


def weight_rows(X_block, scheme: str, length_norm=None, K1: float = 100.0) -> sp.csr_matrix:
    """The tfidf- or bm25-weighted rows of a CSR block (see the module docstring), float64."""
    X = sp.csr_matrix(X_block, dtype=np.float64, copy=True)
    n_items = X.shape[1]
    n_u = np.diff(X.indptr)
    idf = np.log(n_items) - np.log1p(n_u)
    row_idf = np.repeat(idf, n_u)
    if scheme == "tfidf":
        X.data = np.sqrt(X.data) * row_idf
    elif scheme == "bm25":
        L = np.asarray(length_norm, dtype=np.float64)[X.indices]
        X.data = X.data * (K1 + 1.0) / (K1 * L + X.data) * row_idf
    else:
        raise ValueError(f"scheme must be 'tfidf' or 'bm25'; got {scheme!r}")
    return X


def stack_rows(cols, vals, n_items: int) -> sp.csr_matrix:
    """CSR (float32) whose row ``r`` holds the entries ``vals[r]`` at the columns ``cols[r]``."""
    indptr = np.zeros(len(cols) + 1, np.int64)
    np.cumsum([c.size for c in cols], out=indptr[1:])
    indices = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    data = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(cols), n_items))


def gramian_columns(gramian_block, col_start: int = 0) -> sp.csc_matrix:
    """A Gramian column block ``G[:, a:b]`` as sorted float64 CSC.

    The whole Gramian (square, ``col_start`` 0) is symmetric, so its CSR arrays already are its
    CSC arrays: no conversion (which costs about as much as the rest of an ItemKNN fit).
    """
    G = gramian_block
    if sp.issparse(G) and G.format == "csr" and G.shape[0] == G.shape[1] and col_start == 0:
        G = sp.csc_matrix((G.data, G.indices, G.indptr), shape=G.shape)
    G = sp.csc_matrix(G, dtype=np.float64)
    G.sort_indices()
    return G


_MODES = {name: code for code, name in enumerate(SIMILARITIES)}


@njit(nogil=True, cache=True)
def _neighbours_kernel(ptr, ind, val, col_start, diag, k, mode, shrinkage, out_ptr, out_ind, out_val):
    width = ptr.shape[0] - 1
    nnz = 0
    for c in range(width):
        j = col_start + c
        lo, hi = ptr[c], ptr[c + 1]
        m = hi - lo
        rows = np.empty(m, np.int64)
        sims = np.empty(m)
        kept = 0
        for p in range(lo, hi):
            r = ind[p]
            g = val[p]
            if mode == 0:
                denom = np.sqrt(diag[r]) * np.sqrt(diag[j]) + shrinkage
            elif mode == 1:
                denom = diag[r] + diag[j] - g + shrinkage
            else:
                denom = 1.0 + shrinkage
            sim = g / denom if denom > 0 else 0.0
            if sim != 0:
                rows[kept] = r
                sims[kept] = sim
                kept += 1
        kth = -np.inf
        ties = 0
        if kept > k:  # the k-th largest; all above it, then the lowest rows among those equal to it
            kth = -np.partition(-sims[:kept], k - 1)[k - 1]
            ties = k
            for t in range(kept):
                if sims[t] > kth:
                    ties -= 1
        for t in range(kept):
            if sims[t] > kth or (sims[t] == kth and ties > 0):
                if sims[t] == kth:
                    ties -= 1
                out_ind[nnz] = rows[t]
                out_val[nnz] = sims[t]
                nnz += 1
        out_ptr[c + 1] = nnz
    return nnz


def neighbours_block(gramian_block, col_start: int, diagonal, k: int, similarity: str = "cosine",
                     shrinkage: float = 0.0) -> sp.csr_matrix:
    """Rows ``col_start:col_start+width`` of the neighbour matrix S from ``G[:, col_start:col_stop]``.

    The numba twin of :func:`neighbours_block_naive` (same parameters and result).
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}; got {similarity!r}")
    G = gramian_columns(gramian_block, col_start)
    n_items, width = G.shape
    out_ptr = np.zeros(width + 1, np.int64)
    bound = min(int(G.nnz), width * int(k))
    out_ind = np.empty(bound, np.int64)
    out_val = np.empty(bound, np.float64)
    nnz = _neighbours_kernel(G.indptr.astype(np.int64), G.indices.astype(np.int64), G.data, int(col_start),
                             np.asarray(diagonal, dtype=np.float64), int(k), _MODES[similarity], float(shrinkage),
                             out_ptr, out_ind, out_val)
    S = sp.csr_matrix((out_val[:nnz].astype(np.float32), out_ind[:nnz], out_ptr), shape=(width, n_items))
    S.has_sorted_indices = False
    S.sort_indices()  # the kernel writes each row's entries unordered
    return S


def neighbours_block_naive(gramian_block, col_start: int, diagonal, k: int, similarity: str = "cosine",
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
    similarity : {"cosine", "jaccard", "dot"}
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
    cols, vals = [], []
    for c in range(width):
        j = col_start + c
        rows = G.indices[G.indptr[c]:G.indptr[c + 1]]
        g = G.data[G.indptr[c]:G.indptr[c + 1]]
        if similarity == "cosine":
            denom = norms[rows] * norms[j] + shrinkage
        elif similarity == "jaccard":
            denom = diag[rows] + diag[j] - g + shrinkage
        else:
            denom = np.full(rows.size, 1.0 + shrinkage)
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
        vals.append(sim)
    return stack_rows(cols, vals, n_items)
