"""SLIM's elastic net per item column, by coordinate descent on the Gramian (numba, no Dask).

For item ``j`` SLIM (Ning & Karypis, 2011) solves

    min_w  ½‖x_j − X w‖² + l1 · Σ_i w_i + ½ l2 · ‖w‖²   subject to  w ≥ 0,  w_j = 0,

which needs X only through its Gramian: with ``G = XᵀX`` the objective is
``½ wᵀGw − G[:, j]ᵀw + l1 Σ w + ½ l2 wᵀw`` (plus a constant). Cyclic coordinate descent updates

    w_i ← max(0, (G_ij − Σ_{k≠i} G_ik w_k − l1) / (G_ii + l2))

keeping ``q = G w`` up to date by scattering column ``i`` of ``G`` whenever ``w_i`` changes.

Which coordinates can be non-zero: for non-negative interactions every ``G_ik ≥ 0``, so with
``w ≥ 0`` the numerator is at most ``G_ij − l1``; an item ``i`` with ``G_ij ≤ l1`` (in particular
every item that never co-occurs with ``j``) stays 0 at the optimum. Only the stored entries of
column ``j`` above ``l1`` are candidates. Among them, an active set: a full sweep over the
candidates, then sweeps over the non-zero ones until they settle, then a full sweep again, until
a full sweep moves no coordinate by more than ``tol · max(w)`` (or ``max_iter`` full sweeps).
The active sweeps run on the small dense ``G[A, A]`` (a step costs ``|A|``, not a scatter of a
whole Gramian column), and ``q`` is brought up to date once after them.

Scaling: scikit-learn's ``ElasticNet(alpha, l1_ratio)`` minimises the objective above divided by
the number of users ``N``, so it is ``l1 = N · alpha · l1_ratio`` and
``l2 = N · alpha · (1 − l1_ratio)`` here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

__all__ = ["slim_columns"]

_JIT = dict(nogil=True, cache=True)
#: Largest active set swept on its dense Gramian G[A, A] (8 MiB); larger ones scatter every change.
DENSE_ACTIVE = 1024


@njit(**_JIT)
def _update(p, ptr, ind, val, diag, w, q, touched, l1, l2):
    """One coordinate step on the candidate stored at position ``p`` of the current column; |change|."""
    i = ind[p]
    old = w[i]
    rho = val[p] - (q[i] - diag[i] * old)
    new = (rho - l1) / (diag[i] + l2)
    if new < 0.0:
        new = 0.0
    d = new - old
    if d != 0.0:
        w[i] = new
        touched[i] = True
        for r in range(ptr[i], ptr[i + 1]):
            q[ind[r]] += val[r] * d
    return abs(d)


@njit(**_JIT)
def _dense_sweeps(active, n_act, ptr, ind, val, diag, w, q, pos, GA, qA, w0, l1, l2, tol, max_iter):
    """Sweeps over the active set on its dense Gramian ``G[A, A]``, then ``q`` brought up to date."""
    for a in range(n_act):
        pos[ind[active[a]]] = a
    for a in range(n_act):
        k = ind[active[a]]
        for b in range(n_act):
            GA[b, a] = 0.0
        for r in range(ptr[k], ptr[k + 1]):
            b = pos[ind[r]]
            if b >= 0:
                GA[b, a] = val[r]
        w0[a] = w[k]
    for a in range(n_act):
        s = 0.0
        for b in range(n_act):
            s += GA[a, b] * w0[b]
        qA[a] = s
    for _ in range(max_iter):
        max_d = 0.0
        max_w = 0.0
        for a in range(n_act):
            k = ind[active[a]]
            old = w[k]
            new = (val[active[a]] - (qA[a] - GA[a, a] * old) - l1) / (diag[k] + l2)
            if new < 0.0:
                new = 0.0
            d = new - old
            if d != 0.0:
                w[k] = new
                for b in range(n_act):
                    qA[b] += GA[b, a] * d
            max_d = max(max_d, abs(d))
            max_w = max(max_w, new)
        if max_w == 0.0 or max_d <= tol * max_w:
            break
    for a in range(n_act):
        k = ind[active[a]]
        pos[k] = -1
        d = w[k] - w0[a]
        if d != 0.0:
            for r in range(ptr[k], ptr[k + 1]):
                q[ind[r]] += val[r] * d


@njit(**_JIT)
def _solve_column(j, ptr, ind, val, diag, w, q, touched, cand, active, pos, GA, qA, w0, l1, l2, tol, max_iter):
    """Coordinate descent for column ``j``; ``w`` and ``q`` start at 0. Returns the number of candidates."""
    n_cand = 0
    for p in range(ptr[j], ptr[j + 1]):
        if ind[p] != j and val[p] > l1:
            cand[n_cand] = p
            n_cand += 1
    for _ in range(max_iter):
        max_d = 0.0
        max_w = 0.0
        for c in range(n_cand):
            d = _update(cand[c], ptr, ind, val, diag, w, q, touched, l1, l2)
            max_d = max(max_d, d)
            max_w = max(max_w, w[ind[cand[c]]])
        if max_w == 0.0 or max_d <= tol * max_w:
            break
        n_act = 0
        for c in range(n_cand):
            if w[ind[cand[c]]] > 0.0:
                active[n_act] = cand[c]
                n_act += 1
        if n_act <= GA.shape[0]:
            _dense_sweeps(active, n_act, ptr, ind, val, diag, w, q, pos, GA, qA, w0, l1, l2, tol, max_iter)
            continue
        for _inner in range(max_iter):  # a large active set: sweeps that scatter every change
            max_d = 0.0
            max_w = 0.0
            for a in range(n_act):
                d = _update(active[a], ptr, ind, val, diag, w, q, touched, l1, l2)
                max_d = max(max_d, d)
                max_w = max(max_w, w[ind[active[a]]])
            if max_w == 0.0 or max_d <= tol * max_w:
                break
    return n_cand


@njit(**_JIT)
def _slim_kernel(ptr, ind, val, diag, j0, j1, l1, l2, tol, max_iter, topk, out_ptr, out_ind, out_val):
    n = diag.shape[0]
    w = np.zeros(n)
    q = np.zeros(n)
    touched = np.zeros(n, np.bool_)
    cand = np.empty(n, np.int64)
    active = np.empty(n, np.int64)
    pos = np.full(n, -1, np.int64)
    GA = np.empty((DENSE_ACTIVE, DENSE_ACTIVE))
    qA = np.empty(DENSE_ACTIVE)
    w0 = np.empty(DENSE_ACTIVE)
    nnz = 0
    for j in range(j0, j1):
        n_cand = _solve_column(j, ptr, ind, val, diag, w, q, touched, cand, active, pos, GA, qA, w0, l1, l2, tol,
                               max_iter)
        n_pos = 0
        for c in range(n_cand):
            i = ind[cand[c]]
            if w[i] > 0.0:
                active[n_pos] = i
                n_pos += 1
        rows = active[:n_pos].copy()
        if topk > 0 and n_pos > topk:
            values = np.empty(n_pos)
            for a in range(n_pos):
                values[a] = -w[rows[a]]
            order = np.argsort(values, kind="mergesort")[:topk]  # stable: ties by the lower index
            rows = np.sort(rows[order])
        for a in range(rows.shape[0]):
            out_ind[nnz] = rows[a]
            out_val[nnz] = w[rows[a]]
            nnz += 1
        out_ptr[j - j0 + 1] = nnz
        for c in range(n_cand):  # reset w and the entries of q that the updates touched
            i = ind[cand[c]]
            if touched[i]:
                for r in range(ptr[i], ptr[i + 1]):
                    q[ind[r]] = 0.0
                w[i] = 0.0
                touched[i] = False
    return nnz


def slim_columns(gramian, col_start: int, col_stop: int, l1: float, l2: float, tol: float = 1e-4,
                 max_iter: int = 100, topk: int = 0) -> sp.csc_matrix:
    """SLIM's weight columns ``col_start:col_stop`` from the whole Gramian.

    Parameters
    ----------
    gramian : scipy.sparse matrix, shape (n_items, n_items)
        ``XᵀX`` of non-negative interactions (symmetric; read as CSC).
    col_start, col_stop : int
        Item columns to solve.
    l1, l2 : float
        Penalties (see the module docstring), ``l1 >= 0``, ``l1 + l2 > 0`` unless G is definite.
    tol : float
        Stop when a full sweep moves no weight by more than ``tol · max(w)``.
    max_iter : int
        Full sweeps at most (and sweeps of the active set at most between two full ones).
    topk : int
        Keep the ``topk`` largest weights per column (0: all non-zero ones).

    Returns
    -------
    scipy.sparse.csc_matrix, shape (n_items, col_stop - col_start), float32
        Non-negative, ``W[j, j] = 0``.
    """
    G = sp.csc_matrix(gramian, dtype=np.float64)
    G.sort_indices()
    n = G.shape[0]
    ptr = G.indptr.astype(np.int64)
    ind = G.indices.astype(np.int64)
    diag = np.asarray(G.diagonal(), dtype=np.float64)
    width = col_stop - col_start
    bound = int(ptr[col_stop] - ptr[col_start])
    out_ptr = np.zeros(width + 1, np.int64)
    out_ind = np.empty(bound, np.int64)
    out_val = np.empty(bound, np.float64)
    nnz = _slim_kernel(ptr, ind, G.data, diag, col_start, col_stop, float(l1), float(l2), float(tol),
                       int(max_iter), int(topk), out_ptr, out_ind, out_val)
    return sp.csc_matrix((out_val[:nnz].astype(np.float32), out_ind[:nnz], out_ptr), shape=(n, width))
