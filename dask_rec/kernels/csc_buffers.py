"""Output buffers of the column-block inverse kernels (UMR and the exact inverse), shared by both.

A block's columns are written into flat ``indices``/``data`` buffers that grow by doubling
(:func:`grow_buffers`) and can be compacted to their ``cap`` off-diagonal entries of largest
magnitude while the block is built (:func:`compact_to_cap`); :func:`csc_from_buffers` wraps the
result and :func:`check_csc_square` checks the triangular factor both kernels read. No Dask here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

__all__ = ["grow_buffers", "compact_to_cap", "check_csc_square", "csc_from_buffers"]


@njit(nogil=True, cache=True)
def grow_buffers(out_i, out_x, need):
    """Grow the output buffers (doubling) so that they hold ``need`` entries."""
    if need <= out_i.shape[0]:
        return out_i, out_x
    size = max(need, 2 * out_i.shape[0])
    ni = np.empty(size, dtype=out_i.dtype)
    nx = np.empty(size, dtype=out_x.dtype)
    ni[: out_i.shape[0]] = out_i
    nx[: out_x.shape[0]] = out_x
    return ni, nx


@njit(nogil=True, cache=True)
def compact_to_cap(out_p, out_i, out_x, ncols_done, col_start, cap):
    """Keep, among the first ``ncols_done`` columns, the diagonal and the ``cap`` off-diagonal
    entries of largest magnitude (all ties at the cut). Returns the new entry and off-diagonal
    counts."""
    total = out_p[ncols_done]
    # magnitudes of the off-diagonal entries
    mags = np.empty(total, dtype=np.float32)
    m = 0
    for c in range(ncols_done):
        j = col_start + c
        for p in range(out_p[c], out_p[c + 1]):
            if out_i[p] != j:
                mags[m] = abs(out_x[p])
                m += 1
    if m <= cap:
        return total, m
    if cap <= 0:
        cut = np.float32(np.inf)
    else:
        part = np.partition(mags[:m], m - cap)
        cut = part[m - cap]  # the cap-th largest magnitude
    w = 0
    off = 0
    start = out_p[0]
    for c in range(ncols_done):
        j = col_start + c
        stop = out_p[c + 1]
        for p in range(start, stop):
            row = out_i[p]
            val = out_x[p]
            if row == j or abs(val) >= cut:
                out_i[w] = row
                out_x[w] = val
                if row != j:
                    off += 1
                w += 1
        start = stop
        out_p[c + 1] = w
    return w, off


def check_csc_square(L) -> sp.csc_matrix:
    """``L`` as a square CSC matrix with sorted indices; a clear error for anything else."""
    if not sp.issparse(L) or L.format != "csc":
        raise TypeError(f"L must be a scipy.sparse CSC matrix; got {type(L).__name__}")
    if L.shape[0] != L.shape[1]:
        raise ValueError(f"L must be square; got shape {L.shape}")
    if not L.has_sorted_indices:
        L = L.sorted_indices()
    return L


def csc_from_buffers(indptr, indices, data, shape) -> sp.csc_matrix:
    """A CSC matrix over the filled buffers (int32 indices when they fit), marked sorted."""
    idx_dtype = np.int32 if data.shape[0] < np.iinfo(np.int32).max else np.int64
    out = sp.csc_matrix(
        (data, indices.astype(idx_dtype, copy=False), indptr.astype(idx_dtype, copy=False)),
        shape=shape,
    )
    out.has_sorted_indices = True
    return out
