"""Item-item matrices straight from the interactions: each Gramian column accumulated densely and
cut to its top k at once, so the Gramian is never stored (no Dask).

For an item ``j`` (a column of the result's row ``j``), ``G[:, j] = Σ_u x_uj · X[u, :]`` is summed
over the users of ``j`` (X in CSR and CSC) into a dense accumulator, then each touched item ``i``
gets a value from ``g = G_ij``, ``d = diag(G)`` and the mode's parameters:

* ItemKNN (:mod:`dask_rec.kernels.neighbors`): cosine ``g / (√d_i √d_j + shrinkage)``, jaccard
  ``g / (d_i + d_j − g + shrinkage)``, dot ``g / (1 + shrinkage)``;
* association rules ``j → i`` (:mod:`dask_rec.kernels.rules`, binary X so ``d`` = item counts,
  ``N`` users; kept when ``i ≠ j``, ``g > 0``, ``g/N ≥ min_support`` and
  ``g/d_j ≥ min_confidence``): confidence ``g / d_j``, lift ``g N / (d_j d_i)``, support ``g / N``.

Zero values are never kept; the ``k`` best (value, then the lower item index) pass through a
buffer of ``2k`` cut by quickselect. The work of item ``j`` is ``Σ_{u ∋ j} n_u``
(:func:`item_column_costs`), which :func:`balanced_ranges` evens out over the tasks.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from .topk import ranks_below

__all__ = ["MODES", "top_k_from_rows", "item_column_costs", "item_column_stats", "balanced_ranges"]

#: Value of a candidate, by name (ItemKNN's similarities, then the rules' metrics).
MODES = {"cosine": 0, "jaccard": 1, "dot": 2, "confidence": 3, "lift": 4, "support": 5}


def item_column_costs(X_block) -> np.ndarray:
    """``Σ_{u ∋ j} n_u`` per item ``j`` over a CSR block (float64): the entries
    :func:`top_k_from_rows` visits to accumulate ``G[:, j]``, for balancing its ranges."""
    X = sp.csr_matrix(X_block)
    n_u = np.diff(X.indptr).astype(np.float64)
    return np.bincount(X.indices, weights=np.repeat(n_u, np.diff(X.indptr)), minlength=X.shape[1])


def item_column_stats(X_block) -> np.ndarray:
    """``[diag(G), costs]`` of a CSR block, ``2 × n_items`` float64: ``Σ_u x_ui²``
    (:func:`~dask_rec.kernels.neighbors.item_square_sums`) and :func:`item_column_costs`, summed
    over the blocks in one pass."""
    from .neighbors import item_square_sums

    return np.stack([item_square_sums(X_block), item_column_costs(X_block)])


def balanced_ranges(costs, n_ranges: int) -> np.ndarray:
    """Bounds of at most ``n_ranges`` consecutive item ranges of about equal total ``costs``."""
    costs = np.asarray(costs, dtype=np.float64)
    n = costs.size
    n_ranges = max(1, min(int(n_ranges), n))
    cum = np.cumsum(costs)
    total = cum[-1] if n else 0.0
    if total <= 0:
        return np.unique(np.linspace(0, n, n_ranges + 1).astype(np.int64))
    cuts = np.searchsorted(cum, total * np.arange(1, n_ranges) / n_ranges, side="right")
    return np.unique(np.r_[0, cuts, n]).astype(np.int64)


@njit
def _keep_best(vals, idx, n, k):
    """Reorder ``vals[:n], idx[:n]`` so that the ``k`` best (value, then lower index) come first,
    in no particular order (quickselect with a median-of-three pivot); returns the k-th best."""
    lo, hi = 0, n - 1
    while True:
        if hi - lo < 2:
            if hi > lo and ranks_below(vals[lo], idx[lo], vals[hi], idx[hi]):
                vals[lo], vals[hi] = vals[hi], vals[lo]
                idx[lo], idx[hi] = idx[hi], idx[lo]
            return vals[k - 1], idx[k - 1]
        mid = (lo + hi) // 2  # median of three to the middle, best first
        if ranks_below(vals[lo], idx[lo], vals[mid], idx[mid]):
            vals[lo], vals[mid] = vals[mid], vals[lo]
            idx[lo], idx[mid] = idx[mid], idx[lo]
        if ranks_below(vals[lo], idx[lo], vals[hi], idx[hi]):
            vals[lo], vals[hi] = vals[hi], vals[lo]
            idx[lo], idx[hi] = idx[hi], idx[lo]
        if ranks_below(vals[mid], idx[mid], vals[hi], idx[hi]):
            vals[mid], vals[hi] = vals[hi], vals[mid]
            idx[mid], idx[hi] = idx[hi], idx[mid]
        pv, pi = vals[mid], idx[mid]
        a, b = lo, hi
        while a <= b:  # Hoare partition: better than the pivot to the left
            while ranks_below(pv, pi, vals[a], idx[a]):
                a += 1
            while ranks_below(vals[b], idx[b], pv, pi):
                b -= 1
            if a <= b:
                vals[a], vals[b] = vals[b], vals[a]
                idx[a], idx[b] = idx[b], idx[a]
                a += 1
                b -= 1
        if k - 1 <= b:
            hi = b
        elif k - 1 >= a:
            lo = a
        else:
            return vals[k - 1], idx[k - 1]


@njit(nogil=True, cache=True)
def _top_k_kernel(r_ptr, r_ind, r_val, c_ptr, c_ind, c_val, col_start, col_stop, diag, k, mode, shrinkage,
                  n_users, min_support, min_confidence, out_ptr, out_ind, out_val):
    n_items = diag.shape[0]
    norms = np.sqrt(diag)
    acc = np.zeros(n_items)
    seen = np.zeros(n_items, np.bool_)
    touched = np.empty(n_items, np.int64)
    buf_v = np.empty(2 * k)
    buf_i = np.empty(2 * k, np.int64)
    nnz = 0
    for j in range(col_start, col_stop):
        m = 0
        for p in range(c_ptr[j], c_ptr[j + 1]):  # G[:, j] = Σ_u x_uj · X[u, :], over the users of j
            u = c_ind[p]
            x_uj = c_val[p]
            for q in range(r_ptr[u], r_ptr[u + 1]):
                i = r_ind[q]
                if not seen[i]:
                    seen[i] = True
                    touched[m] = i
                    m += 1
                acc[i] += x_uj * r_val[q]
        # the k best (value, then lower index) through a buffer of 2k: when it is full, its k best
        # are kept and the k-th of them becomes the bar a new candidate must pass
        size = 0
        bar_v, bar_i = -np.inf, n_items
        for t in range(m):
            i = touched[t]
            g = acc[i]
            acc[i] = 0.0
            seen[i] = False
            if mode <= 2:
                if mode == 0:
                    denom = norms[i] * norms[j] + shrinkage
                elif mode == 1:
                    denom = diag[i] + diag[j] - g + shrinkage
                else:
                    denom = 1.0 + shrinkage
                value = g / denom if denom > 0 else 0.0
            else:
                if i == j or g <= 0:
                    continue
                support = g / n_users
                confidence = g / diag[j] if diag[j] > 0 else 0.0
                if support < min_support or confidence < min_confidence:
                    continue
                if mode == 3:
                    value = confidence
                elif mode == 4:
                    value = g * n_users / (diag[j] * diag[i])
                else:
                    value = support
            if value == 0 or value < bar_v or (value == bar_v and i > bar_i):
                continue
            if size == 2 * k:
                bar_v, bar_i = _keep_best(buf_v, buf_i, size, k)
                size = k
                if value < bar_v or (value == bar_v and i > bar_i):
                    continue
            buf_v[size] = value
            buf_i[size] = i
            size += 1
        if size > k:
            _keep_best(buf_v, buf_i, size, k)
            size = k
        for t in range(size):  # in no particular order: sorted by index below
            out_ind[nnz + t] = buf_i[t]
            out_val[nnz + t] = buf_v[t]
        nnz += size
        out_ptr[j - col_start + 1] = nnz
    return nnz


def top_k_from_rows(X_rows, X_cols, col_start: int, col_stop: int, diagonal, k: int, mode: str,
                    shrinkage: float = 0.0, n_users: int = 1, min_support: float = 0.0,
                    min_confidence: float = 0.0) -> sp.csr_matrix:
    """Rows ``col_start:col_stop`` of an item-item matrix (``k`` best values per row) from X.

    Parameters
    ----------
    X_rows : scipy.sparse.csr_matrix, shape (n_users, n_items)
        The (weighted) interactions, all users.
    X_cols : scipy.sparse.csc_matrix, shape (n_users, n_items)
        The same matrix in CSC (only columns ``col_start:col_stop`` are read).
    col_start, col_stop : int
        Items whose rows are computed.
    diagonal : numpy.ndarray, shape (n_items,)
        ``diag(G) = Σ_u x_ui²`` (item counts for binary X).
    k : int
    mode : str
        One of :data:`MODES` (see the module docstring).
    shrinkage : float
        ItemKNN's modes.
    n_users, min_support, min_confidence
        The rules' modes.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (col_stop - col_start, n_items), float32, sorted indices
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}; got {mode!r}")
    R = sp.csr_matrix(X_rows)
    C = sp.csc_matrix(X_cols)
    n_items = R.shape[1]
    width = int(col_stop) - int(col_start)
    out_ptr = np.zeros(width + 1, np.int64)
    out_ind = np.empty(width * int(min(k, n_items)), np.int64)
    out_val = np.empty(out_ind.size, np.float64)
    nnz = _top_k_kernel(R.indptr, R.indices, R.data.astype(np.float64, copy=False), C.indptr, C.indices,
                        C.data.astype(np.float64, copy=False), int(col_start), int(col_stop),
                        np.asarray(diagonal, dtype=np.float64), int(k), MODES[mode], float(shrinkage),
                        float(n_users), float(min_support), float(min_confidence), out_ptr, out_ind, out_val)
    S = sp.csr_matrix((out_val[:nnz].astype(np.float32), out_ind[:nnz], out_ptr), shape=(width, n_items))
    S.has_sorted_indices = False
    S.sort_indices()  # the kernel writes each row's entries unordered
    return S
