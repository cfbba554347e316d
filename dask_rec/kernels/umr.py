"""UMR (uniform minimal residual) kernels for one column block of ``M ≈ L⁻¹``.

``L`` is unit lower triangular (CSC, unit diagonal stored, sorted indices), ``M`` is kept as
column blocks ``M[:, col_start:col_stop]`` (CSC, float32). Columns of ``M`` are independent of
each other given ``L``; for column ``j``

* residual      ``r_j = e_j − L m_j``  (rows ``>= j`` only, as ``L`` and ``m_j`` are lower),
* direction     ``q_j = L r_j``,
* step          ``α_j = ⟨r_j, q_j⟩ / ⟨q_j, q_j⟩``,  ``m_j ← m_j + α_j r_j``

(the minimiser of ``‖e_j − L(m_j + α r_j)‖₂`` over ``α``). Each column is worked in dense
length-``n`` float64 accumulators with pattern lists, so memory is ``O(n)`` per task plus the
block's output, never ``O(n · width)``. The unit diagonal of ``m_j`` is untouched by an update
(``r_j[j] = 1 − m_jj = 0``).

A block can cap what it holds (:func:`umr_update_block` ``cap``): at most ``cap`` off-diagonal
entries, those of largest magnitude in the block (ties at the cut kept). It is applied while the
block is built, by compacting the output buffer to its top ``cap`` whenever it exceeds ``2·cap``;
the result equals capping the finished block at once, so it does not depend on how the work is
scheduled. See :mod:`dask_rec.models.sansa.invert` for when the cap can change results.

The functions here know nothing about Dask; :mod:`dask_rec.models.sansa.invert` schedules them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from dask_rec.kernels.csc_buffers import check_csc_square, compact_to_cap, csc_from_buffers, grow_buffers

__all__ = [
    "initial_block",
    "umr_update_block",
    "residual_norms",
    "changed_columns",
    "cap_block",
]


# ---------------------------------------------------------------------------------------------
# numba building blocks
# ---------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _residual(Lp, Li, Lx, j, mi, mx, r, mark, pat):
    """Scatter ``r = e_j − L m`` into the dense ``r``; returns the pattern length in ``pat``."""
    nr = 0
    mark[j] = True
    pat[nr] = j
    nr += 1
    r[j] = 1.0
    for t in range(mi.shape[0]):
        i = mi[t]
        v = np.float64(mx[t])
        for p in range(Lp[i], Lp[i + 1]):
            k = Li[p]
            if not mark[k]:
                mark[k] = True
                pat[nr] = k
                nr += 1
            r[k] -= np.float64(Lx[p]) * v
    return nr


@njit(nogil=True, cache=True)
def _clear(vec, mark, pat, npat):
    for t in range(npat):
        k = pat[t]
        vec[k] = 0.0
        mark[k] = False


@njit(nogil=True, cache=True)
def _umr_block(Lp, Li, Lx, n, Mp, Mi, Mx, col_start, update, skip_below, cap):
    """Update the flagged columns of one block; see :func:`umr_update_block`.

    Returns ``(indptr, indices, data, norms, n_updated)``; ``norms[c]`` is the residual norm of
    column ``c`` before its update (NaN for columns not flagged).
    """
    width = Mp.shape[0] - 1
    r = np.zeros(n, dtype=np.float64)
    q = np.zeros(n, dtype=np.float64)
    rmark = np.zeros(n, dtype=np.bool_)
    qmark = np.zeros(n, dtype=np.bool_)
    rpat = np.empty(n, dtype=np.int64)
    qpat = np.empty(n, dtype=np.int64)
    norms = np.full(width, np.nan)

    out_p = np.zeros(width + 1, dtype=np.int64)
    size = max(16, 2 * (Mp[width] - Mp[0]))
    out_i = np.empty(size, dtype=np.int32)
    out_x = np.empty(size, dtype=np.float32)
    pos = 0
    off = 0
    n_updated = 0
    for c in range(width):
        j = col_start + c
        lo = Mp[c]
        hi = Mp[c + 1]
        changed = False
        if update[c]:
            mi = Mi[lo:hi]
            mx = Mx[lo:hi]
            nr = _residual(Lp, Li, Lx, j, mi, mx, r, rmark, rpat)
            rr = 0.0
            for t in range(nr):
                rr += r[rpat[t]] * r[rpat[t]]
            norms[c] = np.sqrt(rr)
            if rr > 0.0 and norms[c] >= skip_below:
                nq = 0
                for t in range(nr):
                    i = rpat[t]
                    ri = r[i]
                    if ri == 0.0:
                        continue
                    for p in range(Lp[i], Lp[i + 1]):
                        k = Li[p]
                        if not qmark[k]:
                            qmark[k] = True
                            qpat[nq] = k
                            nq += 1
                        q[k] += np.float64(Lx[p]) * ri
                rq = 0.0
                for t in range(nr):
                    rq += r[rpat[t]] * q[rpat[t]]
                qq = 0.0
                for t in range(nq):
                    qq += q[qpat[t]] * q[qpat[t]]
                _clear(q, qmark, qpat, nq)
                if qq > 0.0:
                    alpha = rq / qq
                    for t in range(nr):
                        r[rpat[t]] *= alpha
                    for t in range(mi.shape[0]):  # m_j's pattern lies in r's (L has its diagonal)
                        k = mi[t]
                        if not rmark[k]:
                            rmark[k] = True
                            rpat[nr] = k
                            nr += 1
                        r[k] += np.float64(mx[t])
                    rows = np.sort(rpat[:nr])
                    out_i, out_x = grow_buffers(out_i, out_x, pos + nr)
                    for t in range(nr):
                        k = rows[t]
                        v = np.float32(r[k])
                        if v != 0.0 or k == j:
                            out_i[pos] = k
                            out_x[pos] = v
                            pos += 1
                            if k != j:
                                off += 1
                    changed = True
                    n_updated += 1
            _clear(r, rmark, rpat, nr)
        if not changed:
            out_i, out_x = grow_buffers(out_i, out_x, pos + hi - lo)
            for p in range(lo, hi):
                out_i[pos] = Mi[p]
                out_x[pos] = Mx[p]
                pos += 1
                if Mi[p] != j:
                    off += 1
        out_p[c + 1] = pos
        if cap >= 0 and off > 2 * cap + 1024:
            pos, off = compact_to_cap(out_p, out_i, out_x, c + 1, col_start, cap)
    if cap >= 0 and off > cap:
        pos, off = compact_to_cap(out_p, out_i, out_x, width, col_start, cap)
    return out_p, out_i[:pos].copy(), out_x[:pos].copy(), norms, n_updated


@njit(nogil=True, cache=True)
def _residual_norms(Lp, Li, Lx, n, Mp, Mi, Mx, col_start, cols):
    """``‖r_j‖₂`` of the block's local columns ``cols`` (one value each, same order)."""
    r = np.zeros(n, dtype=np.float64)
    mark = np.zeros(n, dtype=np.bool_)
    pat = np.empty(n, dtype=np.int64)
    norms = np.empty(cols.shape[0], dtype=np.float64)
    for t in range(cols.shape[0]):
        c = cols[t]
        lo = Mp[c]
        hi = Mp[c + 1]
        nr = _residual(Lp, Li, Lx, col_start + c, Mi[lo:hi], Mx[lo:hi], r, mark, pat)
        rr = 0.0
        for s in range(nr):
            rr += r[pat[s]] * r[pat[s]]
        norms[t] = np.sqrt(rr)
        _clear(r, mark, pat, nr)
    return norms


@njit(nogil=True, cache=True)
def _changed_columns(Ap, Ai, Ax, Bp, Bi, Bx):
    """Columns whose stored pattern or values differ between two blocks of the same shape."""
    width = Ap.shape[0] - 1
    out = np.zeros(width, dtype=np.bool_)
    for c in range(width):
        a0 = Ap[c]
        b0 = Bp[c]
        count = Ap[c + 1] - a0
        if count != Bp[c + 1] - b0:
            out[c] = True
            continue
        for t in range(count):
            if Ai[a0 + t] != Bi[b0 + t] or Ax[a0 + t] != Bx[b0 + t]:
                out[c] = True
                break
    return out


# ---------------------------------------------------------------------------------------------
# Python entry points (one call = one task)
# ---------------------------------------------------------------------------------------------


def _as_block(M, n: int, width: int) -> sp.csc_matrix:
    if not sp.issparse(M):
        raise TypeError(f"a block of M must be a scipy sparse matrix; got {type(M).__name__}")
    M = M.tocsc() if M.format != "csc" else M
    if M.shape != (n, width):
        raise ValueError(f"block shape {M.shape} does not match ({n}, {width})")
    if M.dtype != np.float32:
        M = M.astype(np.float32)
    if not M.has_sorted_indices:
        M = M.sorted_indices()
    return M


def initial_block(L, col_start: int, col_stop: int) -> sp.csc_matrix:
    """Columns ``col_start:col_stop`` of ``M₀ = 2I − L`` (one Schulz step from ``I``), float32."""
    L = check_csc_square(L)
    block = L[:, col_start:col_stop].astype(np.float32)  # a copy
    block.sort_indices()
    block.data = -block.data
    cols = np.repeat(np.arange(col_start, col_stop), np.diff(block.indptr))
    diag = block.indices == cols
    block.data[diag] += np.float32(2.0)  # 2 − L_jj
    return csc_from_buffers(block.indptr, block.indices, block.data, block.shape)


def umr_update_block(L, M, col_start: int, columns=None, skip_below: float = -1.0,
                     cap: int | None = None):
    """One UMR step on the chosen columns of the block ``M = M_full[:, col_start:col_start+w]``.

    Parameters
    ----------
    L : csc_matrix
        Unit lower triangular, n × n, sorted indices, unit diagonal stored.
    M : csc_matrix
        The block, n × w, float32.
    col_start : int
        Global index of the block's first column.
    columns : array_like of int, optional
        Local indices (``0 <= c < w``) of the columns to update; all columns when ``None``.
    skip_below : float
        Columns whose residual norm ``‖r_j‖₂`` is below this are left as they are.
    cap : int, optional
        Keep at most this many off-diagonal entries in the output, those of largest magnitude
        (ties at the cut kept); ``None`` keeps everything. A block in which no column changed
        is returned as it was, uncapped.

    Returns
    -------
    block : csc_matrix
        The updated block, float32, sorted indices, exact zeros dropped from updated columns.
    norms : ndarray of float64, shape (w,)
        ``‖r_j‖₂`` of each chosen column before its update; NaN for columns not chosen.
    n_updated : int
        Columns actually changed (not skipped, non-zero residual).
    """
    L = check_csc_square(L)
    n = L.shape[0]
    width = M.shape[1]
    M = _as_block(M, n, width)
    update = np.zeros(width, dtype=np.bool_)
    if columns is None:
        update[:] = True
    else:
        update[np.asarray(columns, dtype=np.int64)] = True
    indptr, indices, data, norms, n_updated = _umr_block(
        L.indptr, L.indices, L.data, n, M.indptr, M.indices, M.data, int(col_start), update,
        float(skip_below), -1 if cap is None else int(cap),
    )
    if n_updated == 0:  # nothing changed: the block as it was (the cap only applies to updated blocks)
        return M, norms, 0
    return csc_from_buffers(indptr, indices, data, (n, width)), norms, int(n_updated)


def residual_norms(L, M, col_start: int, columns=None) -> np.ndarray:
    """``‖e_j − L m_j‖₂`` for each column ``j`` of the block (float64), or for the local
    ``columns`` only (in that order). A column's value does not depend on which others are asked."""
    L = check_csc_square(L)
    n = L.shape[0]
    M = _as_block(M, n, M.shape[1])
    cols = np.arange(M.shape[1], dtype=np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
    if cols.ndim != 1 or (cols.size and (cols.min() < 0 or cols.max() >= M.shape[1])):
        raise ValueError(f"columns must be local column indices in [0, {M.shape[1]})")
    return _residual_norms(L.indptr, L.indices, L.data, n, M.indptr, M.indices, M.data, int(col_start), cols)


def changed_columns(A, B) -> np.ndarray:
    """Boolean mask of the columns that differ (pattern or value) between blocks ``A`` and ``B``.

    Both are CSC blocks of the same shape with sorted indices, as the kernels here produce.
    """
    if A.shape != B.shape:
        raise ValueError(f"blocks of different shapes: {A.shape} and {B.shape}")
    A = _as_block(A, A.shape[0], A.shape[1])
    B = _as_block(B, B.shape[0], B.shape[1])
    return _changed_columns(A.indptr, A.indices, A.data, B.indptr, B.indices, B.data)


def cap_block(M, col_start: int, cap: int | None) -> sp.csc_matrix:
    """Keep the diagonal and the ``cap`` off-diagonal entries of largest magnitude (ties kept)."""
    M = _as_block(M, M.shape[0], M.shape[1])
    if cap is None:
        return M
    indptr = M.indptr.astype(np.int64)
    indices = M.indices.astype(np.int32)
    data = M.data.copy()
    pos, _ = compact_to_cap(indptr, indices, data, M.shape[1], int(col_start), int(cap))
    return csc_from_buffers(indptr, indices[:pos], data[:pos], M.shape)
