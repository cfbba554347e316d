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

Every quantity lives on the candidates only (slot ``s`` = the ``s``-th candidate ``item[s]``):
``b[s] = G[item[s], j]``, ``w[s]``, ``q[s] = Σ_t G[item[s], item[t]] w[t]``; the first time
``w[s]`` moves, the column ``G[C, item[s]]`` restricted to the candidates is extracted once (as
slot/value pairs), so a scatter costs at most ``|C|``, not a whole Gramian column. The active
sweeps run on the small dense ``G[A, A]`` (a step costs ``|A|``), and ``q`` is brought up to
date once after them.

Scaling: scikit-learn's ``ElasticNet(alpha, l1_ratio)`` minimises the objective above divided by
the number of users ``N``, so it is ``l1 = N · alpha · l1_ratio`` and
``l2 = N · alpha · (1 − l1_ratio)`` here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from .neighbors import gramian_columns

__all__ = ["slim_columns"]

_JIT = dict(nogil=True, cache=True)
#: Largest active set swept on its dense Gramian G[A, A] (8 MiB); larger ones scatter every change.
DENSE_ACTIVE = 1024


@njit(**_JIT)
def _extract(s, item, ptr, ind, val, pos, n_cand, sub_start, sub_len, sub_slot, sub_val, used):
    """Store ``G[C, item[s]]``, growing the buffers when needed; returns them and the new fill."""
    if used + n_cand > sub_slot.shape[0]:
        cap = max(2 * sub_slot.shape[0], used + n_cand)
        grown_slot = np.empty(cap, np.int64)
        grown_val = np.empty(cap, np.float64)
        grown_slot[:used] = sub_slot[:used]
        grown_val[:used] = sub_val[:used]
        sub_slot, sub_val = grown_slot, grown_val
    sub_start[s] = used
    k = item[s]
    for r in range(ptr[k], ptr[k + 1]):
        t = pos[ind[r]]
        if t >= 0:
            sub_slot[used] = t
            sub_val[used] = val[r]
            used += 1
    sub_len[s] = used - sub_start[s]
    return sub_slot, sub_val, used


@njit(**_JIT)
def _scatter(s, d, q, sub_start, sub_len, sub_slot, sub_val):
    for e in range(sub_start[s], sub_start[s] + sub_len[s]):
        q[sub_slot[e]] += sub_val[e] * d


@njit(**_JIT)
def _sweep(slots, count, item, b, diag, w, q, ptr, ind, val, pos, n_cand, sub_start, sub_len, sub_slot, sub_val,
           used, l1, l2):
    """One cyclic pass over ``slots[:count]``, scattering every change into ``q``.

    Returns the largest change, the largest weight and the (possibly grown) extraction buffers.
    """
    max_d = 0.0
    max_w = 0.0
    for a in range(count):
        s = slots[a]
        old = w[s]
        new = (b[s] - (q[s] - diag[item[s]] * old) - l1) / (diag[item[s]] + l2)
        if new < 0.0:
            new = 0.0
        d = new - old
        if d != 0.0:
            w[s] = new
            if sub_start[s] < 0:
                sub_slot, sub_val, used = _extract(s, item, ptr, ind, val, pos, n_cand, sub_start, sub_len, sub_slot,
                                                   sub_val, used)
            _scatter(s, d, q, sub_start, sub_len, sub_slot, sub_val)
        max_d = max(max_d, abs(d))
        max_w = max(max_w, new)
    return max_d, max_w, sub_slot, sub_val, used


@njit(**_JIT)
def _positive_slots(w, n_cand, out):
    """Write the slots with a positive weight to ``out``; returns how many."""
    count = 0
    for s in range(n_cand):
        if w[s] > 0.0:
            out[count] = s
            count += 1
    return count


@njit(**_JIT)
def _dense_sweeps(act, n_act, item, b, diag, w, q, sub_start, sub_len, sub_slot, sub_val, apos, GA, qA, w0,
                  l1, l2, tol, max_iter):
    """Sweeps over the active slots on their dense Gramian ``G[A, A]``, then ``q`` brought up to date."""
    for a in range(n_act):
        apos[act[a]] = a
    for a in range(n_act):
        s = act[a]
        for c in range(n_act):
            GA[c, a] = 0.0
        for e in range(sub_start[s], sub_start[s] + sub_len[s]):
            c = apos[sub_slot[e]]
            if c >= 0:
                GA[c, a] = sub_val[e]
        w0[a] = w[s]
    for a in range(n_act):
        total = 0.0
        for c in range(n_act):
            total += GA[a, c] * w0[c]
        qA[a] = total
    for _ in range(max_iter):
        max_d = 0.0
        max_w = 0.0
        for a in range(n_act):
            s = act[a]
            old = w[s]
            new = (b[s] - (qA[a] - GA[a, a] * old) - l1) / (diag[item[s]] + l2)
            if new < 0.0:
                new = 0.0
            d = new - old
            if d != 0.0:
                w[s] = new
                for c in range(n_act):
                    qA[c] += GA[c, a] * d
            max_d = max(max_d, abs(d))
            max_w = max(max_w, new)
        if max_w == 0.0 or max_d <= tol * max_w:
            break
    for a in range(n_act):
        s = act[a]
        apos[s] = -1
        d = w[s] - w0[a]
        if d != 0.0:
            _scatter(s, d, q, sub_start, sub_len, sub_slot, sub_val)


@njit(**_JIT)
def _slim_kernel(ptr, ind, val, diag, j0, j1, l1, l2, tol, max_iter, topk, out_ptr, out_ind, out_val):
    n = diag.shape[0]
    pos = np.full(n, -1, np.int64)
    item = np.empty(n, np.int64)
    b = np.empty(n)
    w = np.zeros(n)
    q = np.zeros(n)
    sub_start = np.full(n, -1, np.int64)
    sub_len = np.zeros(n, np.int64)
    sub_slot = np.empty(1 << 16, np.int64)
    sub_val = np.empty(1 << 16, np.float64)
    act = np.empty(n, np.int64)
    every = np.arange(n)
    apos = np.full(n, -1, np.int64)
    GA = np.empty((DENSE_ACTIVE, DENSE_ACTIVE))
    qA = np.empty(DENSE_ACTIVE)
    w0 = np.empty(DENSE_ACTIVE)
    nnz = 0
    for j in range(j0, j1):
        n_cand = 0
        for p in range(ptr[j], ptr[j + 1]):
            if ind[p] != j and val[p] > l1:
                item[n_cand] = ind[p]
                b[n_cand] = val[p]
                pos[ind[p]] = n_cand
                n_cand += 1
        used = 0
        for _ in range(max_iter):
            max_d, max_w, sub_slot, sub_val, used = _sweep(every, n_cand, item, b, diag, w, q, ptr, ind, val, pos,
                                                           n_cand, sub_start, sub_len, sub_slot, sub_val, used, l1, l2)
            if max_w == 0.0 or max_d <= tol * max_w:
                break
            n_act = _positive_slots(w, n_cand, act)
            if n_act <= DENSE_ACTIVE:
                _dense_sweeps(act, n_act, item, b, diag, w, q, sub_start, sub_len, sub_slot, sub_val, apos, GA, qA,
                              w0, l1, l2, tol, max_iter)
                continue
            for _inner in range(max_iter):  # a large active set: sweeps that scatter every change
                max_d, max_w, sub_slot, sub_val, used = _sweep(act, n_act, item, b, diag, w, q, ptr, ind, val, pos,
                                                               n_cand, sub_start, sub_len, sub_slot, sub_val, used,
                                                               l1, l2)
                if max_w == 0.0 or max_d <= tol * max_w:
                    break
        n_pos = _positive_slots(w, n_cand, act)
        chosen = np.arange(n_pos)
        if topk > 0 and n_pos > topk:
            values = np.empty(n_pos)
            for a in range(n_pos):
                values[a] = -w[act[a]]
            chosen = np.sort(np.argsort(values, kind="mergesort")[:topk])  # stable: ties by the lower index
        for a in chosen:
            out_ind[nnz] = item[act[a]]
            out_val[nnz] = w[act[a]]
            nnz += 1
        out_ptr[j - j0 + 1] = nnz
        for s in range(n_cand):
            pos[item[s]] = -1
            w[s] = 0.0
            q[s] = 0.0
            sub_start[s] = -1
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
    G = gramian_columns(gramian)
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
