"""Top-k selection for a block of users (NumPy/numba, no Dask): the ranking every scorer shares.

The building blocks keep each row's ``k`` best candidates in a bounded heap with its worst at the
root (:func:`heap_offer`, :func:`heap_drain`), ranked by score, ties by the lower item index
(:func:`ranks_below`). :class:`TopKAccumulator` keeps one heap per row while the scores of a
block arrive one item range at a time (so that a block of scores can stay in cache);
:func:`top_k_of_scores` is the same on a whole dense block at once. (These are kernels; the
models' ``topk_block`` method of :mod:`dask_rec.models.base` is the scorer contract built on
them.) The input checks (:func:`checked_csr`, :func:`exclude_arrays`, :func:`allowed_array`,
:func:`check_top_k`) and the padded output (:func:`padded_top`) are shared with
:mod:`dask_rec.kernels.scoring`.

Recommend contract: see :mod:`dask_rec.kernels.scoring` (ids best first, ties by lower id, rows
padded with −1 / −inf; NaN and −inf scores, excluded and disallowed items are never selected).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["top_k_of_scores", "TopKAccumulator", "top_k_of_scores_naive", "ranks_below", "heap_sift_down",
           "heap_offer", "heap_drain", "checked_csr", "check_bounds", "check_top_k", "exclude_arrays",
           "allowed_array", "padded_top", "NEG_INF"]

_JIT = dict(nogil=True, cache=True)
NEG_INF = np.float32(-np.inf)


# --------------------------------------------------------------------------------------------
# numba building blocks: a bounded "worst at the root" heap
# --------------------------------------------------------------------------------------------


@numba.njit(inline="always", **_JIT)
def ranks_below(s1, i1, s2, i2):
    """Whether candidate (s1, i1) ranks below (s2, i2): lower score, or equal score, higher id."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@numba.njit(**_JIT)
def heap_sift_down(hs, hi, size, pos):
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        right = child + 1
        if right < size and ranks_below(hs[right], hi[right], hs[child], hi[child]):
            child = right
        if ranks_below(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@numba.njit(**_JIT)
def heap_offer(hs, hi, size, s, i):
    """Offer candidate (s, i) to the heap of capacity ``len(hs)``; return the new size."""
    cap = hs.shape[0]
    if size < cap:
        pos = size
        hs[pos] = s
        hi[pos] = i
        while pos > 0:
            parent = (pos - 1) // 2
            if ranks_below(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size + 1
    if cap > 0 and ranks_below(hs[0], hi[0], s, i):
        hs[0] = s
        hi[0] = i
        heap_sift_down(hs, hi, size, 0)
    return size


@numba.njit(**_JIT)
def heap_drain(hs, hi, size, out_ids, out_scores):
    """Pop the heap worst-first into ``out[size-1] ... out[0]`` (best first); the rest stays padded."""
    while size > 0:
        size -= 1
        out_ids[size] = hi[0]
        out_scores[size] = hs[0]
        hs[0] = hs[size]
        hi[0] = hi[size]
        heap_sift_down(hs, hi, size, 0)


@numba.njit(**_JIT)
def _topk_tile_kernel(scores, offset, ex_ptr, ex_ind, use_exclude, allowed, use_allowed, hs, hi, sizes):
    """Offer the scores of items ``offset .. offset + width`` of each row to its running heap."""
    n_rows, width = scores.shape
    k = hs.shape[1]
    ex_mark = np.full(width, -1, np.int64)
    stop = offset + width
    for r in range(n_rows):
        if use_exclude:
            for p in range(ex_ptr[r], ex_ptr[r + 1]):
                j = ex_ind[p]
                if offset <= j < stop:
                    ex_mark[j - offset] = r
        row_s, row_i = hs[r], hi[r]
        size = sizes[r]
        threshold = row_s[0] if size == k else NEG_INF
        row = scores[r]
        for c in range(width):
            s = np.float32(row[c])
            if s > threshold:  # -inf and NaN never pass
                if use_exclude and ex_mark[c] == r:
                    continue
                if use_allowed and not allowed[offset + c]:
                    continue
                size = heap_offer(row_s, row_i, size, s, offset + c)
                if size == k:
                    threshold = row_s[0]
        sizes[r] = size


@numba.njit(**_JIT)
def _drain_rows(hs, hi, sizes, out_ids, out_scores):
    for r in range(hs.shape[0]):
        heap_drain(hs[r], hi[r], sizes[r], out_ids[r], out_scores[r])


class TopKAccumulator:
    """The ``k`` best items of ``b`` rows whose dense scores arrive one item range at a time.

    ``offer(scores, offset)`` takes the ``b × width`` scores of items ``offset .. offset+width``;
    ``result()`` returns ``(ids, scores)`` as :func:`top_k_of_scores` would have on the whole row
    (best first, ties by lower item id, −1 / −inf padding), so a score block never needs to
    span the catalog: a block that stays in cache between its product and its scan.

    Parameters
    ----------
    b, k : int
    n_items : int
    exclude : scipy.sparse matrix, shape (b, n_items), optional
    allowed : numpy.ndarray of bool, shape (n_items,), optional
        As in :func:`top_k_of_scores`.
    """

    def __init__(self, b: int, k: int, n_items: int, exclude=None, allowed=None) -> None:
        self.k = check_top_k(k)
        self.n_items = int(n_items)
        self.ex_ptr, self.ex_ind, self.use_ex = exclude_arrays(exclude, (b, self.n_items))
        self.allowed, self.use_allowed = allowed_array(allowed, self.n_items)
        self.hs = np.empty((b, self.k), np.float32)
        self.hi = np.empty((b, self.k), np.int64)
        self.sizes = np.zeros(b, np.int64)

    def offer(self, scores, offset: int) -> None:
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[0] != self.sizes.shape[0] or offset < 0 or \
                offset + scores.shape[1] > self.n_items:
            raise ValueError(f"scores of shape {scores.shape} at item {offset} do not fit "
                             f"{self.sizes.shape[0]} rows x {self.n_items} items")
        if self.k and scores.size:
            _topk_tile_kernel(scores, int(offset), self.ex_ptr, self.ex_ind, self.use_ex, self.allowed,
                              self.use_allowed, self.hs, self.hi, self.sizes)

    def result(self):
        ids, top = padded_top(self.sizes.shape[0], self.k)
        if self.k:
            _drain_rows(self.hs, self.hi, self.sizes, ids, top)
        return ids, top


# --------------------------------------------------------------------------------------------
# input checks and output
# --------------------------------------------------------------------------------------------


def checked_csr(A, name: str) -> sp.csr_matrix:
    if not sp.issparse(A):
        raise TypeError(f"{name} must be a scipy.sparse matrix; got {type(A).__name__}")
    A = A.tocsr()
    if A.data.dtype.kind not in "fc":
        A = A.astype(np.float32)
    check_bounds(A, name)
    return A


def check_bounds(A: sp.csr_matrix, name: str) -> None:
    """Raise ``ValueError`` unless every offset and index of ``A`` lies inside it: the kernels do not
    check bounds. O(nnz) once per matrix object (the pass is remembered on it, keyed by its arrays),
    O(1) after that, so a model's weights are checked once per process, a block of users per call."""
    key = (A.indptr.ctypes.data, A.indices.ctypes.data, A.indptr.shape[0], A.indices.shape[0], A.shape)
    if A.__dict__.get("_dask_rec_bounds") == key:
        return
    n_rows, n_cols = A.shape
    ptr = A.indptr
    if ptr.shape[0] != n_rows + 1 or ptr[0] != 0 or ptr[-1] > min(A.indices.shape[0], A.data.shape[0]):
        raise ValueError(f"{name}: indptr of length {ptr.shape[0]} from {ptr[0] if ptr.size else None} to "
                         f"{ptr[-1] if ptr.size else None} does not fit a {A.shape} matrix with {A.indices.shape[0]} entries")
    if n_rows and np.any(ptr[1:] < ptr[:-1]):
        raise ValueError(f"{name}: indptr decreases; not a valid CSR matrix")
    used = A.indices[: ptr[-1]]
    if used.size and (used.min() < 0 or used.max() >= n_cols):
        raise ValueError(f"{name}: column indices {used.min()}..{used.max()} outside [0, {n_cols})")
    A.__dict__["_dask_rec_bounds"] = key


def check_top_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0; got {k!r}")
    return int(k)


def exclude_arrays(exclude, shape):
    if exclude is None:
        empty = np.zeros(1, np.int64)
        return empty, empty, False
    exclude = checked_csr(exclude, "exclude")
    if exclude.shape != shape:
        raise ValueError(f"exclude has shape {exclude.shape}; expected {shape}")
    return exclude.indptr, exclude.indices, True


def allowed_array(allowed, n_items):
    if allowed is None:
        return np.zeros(1, np.bool_), False
    allowed = np.asarray(allowed)
    if allowed.dtype != np.bool_ or allowed.shape != (n_items,):
        raise ValueError(f"allowed must be a boolean mask of shape ({n_items},)")
    return allowed, True


def padded_top(b: int, k: int):
    return np.full((b, k), -1, np.int64), np.full((b, k), NEG_INF, np.float32)


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def top_k_of_scores(scores, k: int, exclude=None, allowed=None):
    """The ``k`` best items of each row of a dense score block.

    Parameters
    ----------
    scores : numpy.ndarray, shape (b, n_items)
        Scores (compared after rounding to float32); NaN and −inf are never selected.
    k : int
        Items per row.
    exclude : scipy.sparse matrix, shape (b, n_items), optional
        Items to leave out per row (its sparsity pattern; values are ignored), e.g. the
        interactions of the users, so that seen items are not recommended.
    allowed : numpy.ndarray of bool, shape (n_items,), optional
        Only items marked True may be selected.

    Returns
    -------
    ids : numpy.ndarray of int64, shape (b, k)
    scores : numpy.ndarray of float32, shape (b, k)
        Best first, ties broken by lower item id, padded with −1 / −inf.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D; got shape {scores.shape}")
    best = TopKAccumulator(scores.shape[0], k, scores.shape[1], exclude=exclude, allowed=allowed)
    best.offer(scores, 0)  # the whole row as one item range
    return best.result()


def top_k_of_scores_naive(scores, k: int, exclude=None, allowed=None):
    """Twin of :func:`top_k_of_scores`: sort each row's candidates in Python."""
    scores = np.asarray(scores).astype(np.float32)
    b, n = scores.shape
    ids = np.full((b, k), -1, np.int64)
    top = np.full((b, k), -np.inf, np.float32)
    seen = sp.csr_matrix(exclude) if exclude is not None else None
    for r in range(b):
        banned = set(seen.indices[seen.indptr[r]:seen.indptr[r + 1]].tolist()) if seen is not None else set()
        cand = [
            (-float(scores[r, j]), j)
            for j in range(n)
            if scores[r, j] > -np.inf and j not in banned and (allowed is None or allowed[j])
        ]
        cand.sort()
        for c, (neg, j) in enumerate(cand[:k]):
            ids[r, c] = j
            top[r, c] = -neg
    return ids, top
