"""Exact inverse of a unit lower triangular ``L`` by sparse forward substitution, per column block.

Column ``j`` of ``L⁻¹`` solves ``L x = e_j``. Its pattern is the set of rows reachable from ``j``
in the graph of ``L`` (edge ``i → k`` for ``L[k, i] ≠ 0``), so the solve visits only those rows:
a min-heap of pending row indices hands them out in increasing order, the order forward
substitution needs, and each row's update ``x[k] −= L[k, i] x[i]`` is scattered into a dense
float64 accumulator. Cost per column is ``O(Σ_{i ∈ pattern} nnz(L[:, i]) + |pattern| log n)``,
memory ``O(n)`` plus the output.

As in :mod:`dask_rec.kernels.umr`, a block can cap its off-diagonal entries to the ``cap`` of
largest magnitude (compacted while the block is built, identical to capping at the end).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from dask_rec.kernels.csc_buffers import check_csc_square, compact_to_cap, csc_from_buffers, grow_buffers

__all__ = ["exact_inverse_block"]


@njit(nogil=True, cache=True)
def _heap_push(heap, size, value):
    i = size
    heap[i] = value
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= value:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value
    return size + 1


@njit(nogil=True, cache=True)
def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    last = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= last:
            break
        heap[i] = heap[child]
        i = child
    if size > 0:
        heap[i] = last
    return top, size


@njit(nogil=True, cache=True)
def _exact_block(Lp, Li, Lx, n, col_start, col_stop, cap):
    width = col_stop - col_start
    x = np.zeros(n, dtype=np.float64)
    mark = np.zeros(n, dtype=np.bool_)
    heap = np.empty(n, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    out_p = np.zeros(width + 1, dtype=np.int64)
    out_i = np.empty(max(16, 4 * width), dtype=np.int32)
    out_x = np.empty(max(16, 4 * width), dtype=np.float32)
    pos = 0
    off = 0
    for c in range(width):
        j = col_start + c
        size = _heap_push(heap, 0, j)
        mark[j] = True
        x[j] = 1.0
        nrows = 0
        while size > 0:
            i, size = _heap_pop(heap, size)
            rows[nrows] = i
            nrows += 1
            lo = Lp[i]
            hi = Lp[i + 1]
            # diagonal first in a sorted lower triangular column
            xi = x[i]
            if lo < hi and Li[lo] == i:
                xi /= np.float64(Lx[lo])
                x[i] = xi
                lo += 1
            if xi == 0.0:
                continue
            for p in range(lo, hi):
                k = Li[p]
                if not mark[k]:
                    mark[k] = True
                    size = _heap_push(heap, size, k)
                x[k] -= np.float64(Lx[p]) * xi
        out_i, out_x = grow_buffers(out_i, out_x, pos + nrows)
        for t in range(nrows):  # rows came off the heap in increasing order
            k = rows[t]
            v = np.float32(x[k])
            if v != 0.0 or k == j:
                out_i[pos] = k
                out_x[pos] = v
                pos += 1
                if k != j:
                    off += 1
            x[k] = 0.0
            mark[k] = False
        out_p[c + 1] = pos
        if cap >= 0 and off > 2 * cap + 1024:
            pos, off = compact_to_cap(out_p, out_i, out_x, c + 1, col_start, cap)
    if cap >= 0 and off > cap:
        pos, off = compact_to_cap(out_p, out_i, out_x, width, col_start, cap)
    return out_p, out_i[:pos].copy(), out_x[:pos].copy()


def exact_inverse_block(L, col_start: int, col_stop: int, cap: int | None = None) -> sp.csc_matrix:
    """Columns ``col_start:col_stop`` of ``L⁻¹`` (n × width, CSC float32, sorted indices).

    Parameters
    ----------
    L : csc_matrix
        Lower triangular with a non-zero diagonal stored (unit in dask_rec), sorted indices.
    col_start, col_stop : int
        The global column range of the block.
    cap : int, optional
        Keep the diagonal and at most ``cap`` off-diagonal entries of largest magnitude (ties at
        the cut kept); ``None`` keeps the exact columns.
    """
    L = check_csc_square(L)
    n = L.shape[0]
    indptr, indices, data = _exact_block(
        L.indptr, L.indices, L.data, n, int(col_start), int(col_stop), -1 if cap is None else int(cap)
    )
    return csc_from_buffers(indptr, indices, data, (n, int(col_stop) - int(col_start)))
