"""Scoring and top-k kernels for one block of users (NumPy/SciPy/numba, no Dask).

A SANSA model scores a user row ``x`` (1 × n_items) as ``(x · W1) · W2``. The kernels here do it
for a CSR block of users, one row at a time: the latent row ``x · W1`` goes into a small sparse
accumulator, then every stored entry of ``W2`` that it reaches is scatter-added into one dense
item-length float64 buffer that is reused across rows. :func:`recommend_block` selects the top
``k`` straight from that buffer, so it never holds more than its ``b × k`` output plus a few
item-length arrays, whatever the block size; :func:`score_block` (dense ``b × n_items`` scores)
is for callers that want the scores themselves.

Candidates
----------
An item is a *candidate* for a user when its score is non-zero (after rounding to float32):
items that no sparse path reaches have no score at all (not "score 0"), so a sparse model may
have fewer than ``k`` candidates for a user; an exact zero from cancellation is treated the same
way (as ``scipy.sparse`` products, which drop it, and the reference package do). Seen items (the
CSR pattern of ``exclude``), items outside ``allowed`` and non-finite (NaN, −inf) scores are never
candidates either. :func:`top_k_of_scores`, which takes arbitrary dense scores, counts every finite
score as a candidate, zeros included.

Recommend contract
------------------
``(ids, scores)`` arrays of shape ``(b, k)``: int64 item indices and float32 scores ranked best
first; ties broken by the lower item index; rows with fewer than ``k`` candidates padded with id
−1 and score −inf. A masked item is never returned, even when every other score is negative.

The top-k selection itself (the bounded heap, :func:`~dask_rec.kernels.topk.top_k_of_scores` for dense
scores, the input checks) lives in :mod:`dask_rec.kernels.topk`, shared with the other models.

Every kernel has a slow, obviously-correct NumPy/Python twin (``*_naive``) that the tests use as
the oracle. Kernels are compiled ``nogil=True`` and single-threaded (no ``prange``), so they run
side by side on threaded Dask workers without nested thread pools.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .topk import (NEG_INF, allowed_array, check_top_k, checked_csr, exclude_arrays, heap_drain, heap_offer,
                   padded_top, top_k_of_scores, top_k_of_scores_naive)

__all__ = [
    "score_block",
    "recommend_block",
    "similar_items_block",
    "popularity_order",
    "popularity_topk_block",
    "run_chunks",
    "score_block_naive",
    "recommend_block_naive",
    "similar_items_block_naive",
    "popularity_topk_block_naive",
]

_JIT = dict(nogil=True, cache=True)

# Scatter tuning (measured on gowalla, W2 of 13 MiB, which does not stay in cache): rows of W2
# are requested this many latent entries ahead of their use, the first lines of each...
_PREFETCH_AHEAD = 8
_PREFETCH_ENTRIES = 48  # ...covering this many stored entries (3 cache lines of int32/float32)
# ...and the top-k scan visits items in chunks, skipping a chunk whose largest score cannot
# enter the full heap.
_SCAN_CHUNK = 64


# --------------------------------------------------------------------------------------------
# numba building blocks: a bounded "worst at the root" heap, the latent row and the scatter
# --------------------------------------------------------------------------------------------


_I8P = ir.IntType(8).as_pointer()
# LLVM mangles the intrinsic by pointer type: "p0" with opaque pointers, "p0i8" with typed ones.
_PREFETCH_NAME = "llvm.prefetch.p0" if str(_I8P) == "ptr" else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to fetch ``array[index]`` into cache (``llvm.prefetch``: read, keep)."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_value = context.make_array(array_type)(context, builder, args[0])
        address = cgutils.get_item_pointer(context, builder, array_type, array_value, [args[1]],
                                           wraparound=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_I8P, i32, i32, i32]), _PREFETCH_NAME
        )
        builder.call(fn, [builder.bitcast(address, _I8P), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(**_JIT)
def _latent_row(x_ind, x_val, w1_ptr, w1_ind, w1_val, lat, lat_mark, lat_list, stamp):
    """Latent row ``x · W1`` into ``lat`` (float64); ``lat_list[:n]`` lists its entries.

    Marks equal to ``stamp`` flag entries touched for this row, so nothing needs a reset.
    """
    n_lat = 0
    for p in range(x_ind.shape[0]):
        i = x_ind[p]
        v = np.float64(x_val[p])
        for q in range(w1_ptr[i], w1_ptr[i + 1]):
            l = w1_ind[q]
            if lat_mark[l] != stamp:
                lat_mark[l] = stamp
                lat[l] = 0.0
                lat_list[n_lat] = l
                n_lat += 1
            lat[l] += v * w1_val[q]
    return n_lat


@numba.njit(**_JIT)
def _scatter_row(lat, lat_list, n_lat, w2_ptr, w2_ind, w2_val, acc):
    """``acc += latent · W2``: the hot loop, one scatter-add per stored entry of W2 used.

    A dense accumulator without per-entry bookkeeping; exact zeros mean "no score". The rows of
    ``W2`` are scattered over memory, so each is prefetched a few rows ahead of its use (twice as
    far ahead, its pointer): the loop no longer waits on one cache miss at a time. (Flagging the
    64-item chunks each addition touches, so that the top-k scan could skip the others, was
    measured slower, one thread: 6,300 -> 4,700 users/s at 41k items and 254 -> 185 at a million.)
    """
    for t in range(n_lat):
        if t + _PREFETCH_AHEAD < n_lat:
            ahead = lat_list[t + _PREFETCH_AHEAD]
            end = min(w2_ptr[ahead + 1], w2_ptr[ahead] + _PREFETCH_ENTRIES)
            for q in range(w2_ptr[ahead], end, 16):
                _prefetch(w2_ind, q)
                _prefetch(w2_val, q)
        if t + 2 * _PREFETCH_AHEAD < n_lat:
            _prefetch(w2_ptr, lat_list[t + 2 * _PREFETCH_AHEAD])
        l = lat_list[t]
        v = lat[l]
        for q in range(w2_ptr[l], w2_ptr[l + 1]):
            acc[w2_ind[q]] += v * w2_val[q]


@numba.njit(**_JIT)
def _score_kernel(x_ptr, x_ind, x_val, w1_ptr, w1_ind, w1_val, w2_ptr, w2_ind, w2_val,
                  n_latent, fill, out):
    n_rows, n_out = out.shape
    lat = np.empty(n_latent, np.float64)
    lat_mark = np.full(n_latent, -1, np.int64)
    lat_list = np.empty(n_latent, np.int64)
    acc = np.zeros(n_out, np.float64)
    for r in range(n_rows):
        a, b = x_ptr[r], x_ptr[r + 1]
        n_lat = _latent_row(x_ind[a:b], x_val[a:b], w1_ptr, w1_ind, w1_val, lat, lat_mark, lat_list, r)
        _scatter_row(lat, lat_list, n_lat, w2_ptr, w2_ind, w2_val, acc)
        for j in range(n_out):
            s = np.float32(acc[j])
            acc[j] = 0.0
            out[r, j] = s if s != 0 else fill


@numba.njit(**_JIT)
def _recommend_kernel(x_ptr, x_ind, x_val, w1_ptr, w1_ind, w1_val, w2_ptr, w2_ind, w2_val,
                      n_latent, n_out, ex_ptr, ex_ind, use_exclude, allowed, use_allowed,
                      out_ids, out_scores):
    n_rows, k = out_ids.shape
    lat = np.empty(n_latent, np.float64)
    lat_mark = np.full(n_latent, -1, np.int64)
    lat_list = np.empty(n_latent, np.int64)
    acc = np.zeros(n_out, np.float64)
    hs = np.empty(k, np.float32)
    hi = np.empty(k, np.int64)
    for r in range(n_rows):
        a, b = x_ptr[r], x_ptr[r + 1]
        n_lat = _latent_row(x_ind[a:b], x_val[a:b], w1_ptr, w1_ind, w1_val, lat, lat_mark, lat_list, r)
        _scatter_row(lat, lat_list, n_lat, w2_ptr, w2_ind, w2_val, acc)
        if use_exclude:  # a seen item has no score
            for p in range(ex_ptr[r], ex_ptr[r + 1]):
                acc[ex_ind[p]] = 0.0
        # Items are visited in increasing id, so a later item must beat the heap's worst
        # strictly; once the heap is full, a chunk whose largest score does not beat it is
        # passed over whole (NaN never beats it, and never is a candidate).
        size = 0
        threshold = NEG_INF  # also rejects -inf and NaN
        for c0 in range(0, n_out, _SCAN_CHUNK):
            c1 = min(c0 + _SCAN_CHUNK, n_out)
            if size == k:
                largest = -np.inf
                for j in range(c0, c1):
                    if acc[j] > largest:  # a NaN never becomes the largest
                        largest = acc[j]
                if not np.float32(largest) > threshold:
                    acc[c0:c1] = 0.0
                    continue
            for j in range(c0, c1):
                s = np.float32(acc[j])
                if s > threshold and s != 0:  # 0: no score
                    if use_allowed and not allowed[j]:
                        continue
                    size = heap_offer(hs, hi, size, s, j)
                    if size == k:
                        threshold = hs[0]
            acc[c0:c1] = 0.0
        heap_drain(hs, hi, size, out_ids[r], out_scores[r])


@numba.njit(**_JIT)
def _popularity_kernel(order, order_scores, n_items, ex_ptr, ex_ind, use_exclude, out_ids, out_scores):
    n_rows, k = out_ids.shape
    ex_mark = np.full(n_items, -1, np.int64)
    for r in range(n_rows):
        if use_exclude:
            for p in range(ex_ptr[r], ex_ptr[r + 1]):
                ex_mark[ex_ind[p]] = r
        c = 0
        for t in range(order.shape[0]):
            if c == k:
                break
            j = order[t]
            if use_exclude and ex_mark[j] == r:
                continue
            out_ids[r, c] = j
            out_scores[r, c] = order_scores[t]
            c += 1


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_chain(X, W1, W2):
    if X.shape[1] != W1.shape[0] or W1.shape[1] != W2.shape[0]:
        raise ValueError(
            f"shapes do not chain: X {X.shape}, W1 {W1.shape}, W2 {W2.shape}"
        )


# --------------------------------------------------------------------------------------------
# public kernels
# --------------------------------------------------------------------------------------------


def score_block(X_block, W1, W2, fill_value: float = 0.0) -> np.ndarray:
    """Dense scores ``(X_block · W1) · W2`` of a block of users.

    Parameters
    ----------
    X_block : scipy.sparse matrix, shape (b, n_items)
        Interactions of ``b`` users (CSR; other formats are converted).
    W1, W2 : scipy.sparse.csr_matrix
        The model's weights, shapes (n_items, n_latent) and (n_latent, n_out).
    fill_value : float, default 0.0
        Value of the scores that are exactly zero, i.e. items without a score (see "Candidates"
        in the module docstring). ``0.0`` gives ``(X @ W1 @ W2).toarray()``; ``-inf`` makes them
        non-candidates for :func:`top_k_of_scores`.

    Returns
    -------
    numpy.ndarray of float32, shape (b, n_out)
        Accumulated in float64, rounded once to float32.
    """
    X = checked_csr(X_block, "X_block")
    W1 = checked_csr(W1, "W1")
    W2 = checked_csr(W2, "W2")
    _check_chain(X, W1, W2)
    out = np.empty((X.shape[0], W2.shape[1]), np.float32)
    if out.size:
        _score_kernel(X.indptr, X.indices, X.data, W1.indptr, W1.indices, W1.data,
                      W2.indptr, W2.indices, W2.data, W1.shape[1], np.float32(fill_value), out)
    return out


def recommend_block(X_block, W1, W2, k: int, exclude_seen: bool = True, allowed=None,
                    n_threads: int = 1):
    """Top-``k`` recommendations for a block of users, without forming dense scores.

    Equal, id for id and bit for bit, to
    ``top_k_of_scores(score_block(X_block, W1, W2, fill_value=-inf), k, exclude=X_block if
    exclude_seen else None, allowed=allowed)``, in O(b·k + n_items) memory.

    Parameters
    ----------
    X_block : scipy.sparse matrix, shape (b, n_items)
        Interactions (histories) of ``b`` users.
    W1, W2 : scipy.sparse.csr_matrix
        The model's weights.
    k : int
        Items per user.
    exclude_seen : bool, default True
        Leave out each user's own items (the pattern of its row of ``X_block``).
    allowed : numpy.ndarray of bool, shape (n_items,), optional
        Only items marked True may be recommended.
    n_threads : int, default 1
        Split the rows over this many Python threads (the kernel releases the GIL). Keep 1
        inside Dask tasks, where the workers already run tasks side by side.

    Returns
    -------
    ids, scores : numpy.ndarray, shape (b, k)
        See the recommend contract in the module docstring.
    """
    k = check_top_k(k)
    X = checked_csr(X_block, "X_block")
    W1 = checked_csr(W1, "W1")
    W2 = checked_csr(W2, "W2")
    _check_chain(X, W1, W2)
    n_out = W2.shape[1]
    if exclude_seen and X.shape[1] != n_out:
        raise ValueError("exclude_seen needs a square model (n_items inputs and outputs)")
    ex_ptr, ex_ind, use_ex = exclude_arrays(X if exclude_seen else None, (X.shape[0], n_out))
    allowed, use_allowed = allowed_array(allowed, n_out)
    ids, top = padded_top(X.shape[0], k)
    if not (k and X.shape[0]):
        return ids, top

    def run(a: int, b: int) -> None:  # rows a:b; pointer arrays are sliced, the rest shared
        _recommend_kernel(X.indptr[a:b + 1], X.indices, X.data, W1.indptr, W1.indices, W1.data,
                          W2.indptr, W2.indices, W2.data, W1.shape[1], n_out,
                          ex_ptr[a:b + 1] if use_ex else ex_ptr, ex_ind, use_ex, allowed,
                          use_allowed, ids[a:b], top[a:b])

    run_chunks(run, X.shape[0], n_threads)
    return ids, top


def run_chunks(run, n_rows: int, n_threads: int, min_rows: int = 64) -> None:
    """Call ``run(a, b)`` over row chunks, on ``n_threads`` threads when that is worth it.

    While several threads run, BLAS is held to one thread (threadpoolctl, process-wide): each
    Python thread already has a core, and BLAS pools of their own on top oversubscribe them (ALS
    scoring on 2 cores ran 3× slower that way).
    """
    n_threads = max(1, int(n_threads))
    n_chunks = min(4 * n_threads, max(1, n_rows // min_rows)) if n_threads > 1 else 1
    if n_chunks == 1:
        run(0, n_rows)
        return
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    edges = np.linspace(0, n_rows, n_chunks + 1).astype(np.int64)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(n_threads, n_chunks)) as pool:
        for f in [pool.submit(run, a, b) for a, b in zip(edges[:-1], edges[1:])]:
            f.result()


def _indicator_rows(item_ids, n_items: int) -> sp.csr_matrix:
    item_ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    if item_ids.size and (item_ids.min() < 0 or item_ids.max() >= n_items):
        raise IndexError(f"item ids must be in [0, {n_items})")
    m = item_ids.shape[0]
    return sp.csr_matrix(
        (np.ones(m, np.float32), item_ids, np.arange(m + 1, dtype=np.int64)), shape=(m, n_items)
    )


def similar_items_block(item_ids, W1, W2, k: int, allowed=None):
    """The ``k`` items most similar to each of ``item_ids``: rows of ``W1 · W2``, itself excluded.

    Parameters
    ----------
    item_ids : array-like of int, shape (m,)
        Item indices.
    W1, W2 : scipy.sparse.csr_matrix
        The model's weights.
    k : int
        Items per query item.
    allowed : numpy.ndarray of bool, shape (n_items,), optional
        Only items marked True may be returned.

    Returns
    -------
    ids, scores : numpy.ndarray, shape (m, k)
        As :func:`recommend_block`.
    """
    W1 = checked_csr(W1, "W1")
    X = _indicator_rows(item_ids, W1.shape[0])
    return recommend_block(X, W1, W2, k, exclude_seen=True, allowed=allowed)


def popularity_order(item_counts, allowed=None):
    """Items with a positive count, most popular first (ties by lower id), and their counts.

    Parameters
    ----------
    item_counts : array-like, shape (n_items,)
        Interactions per item.
    allowed : numpy.ndarray of bool, shape (n_items,), optional
        Only items marked True are listed.

    Returns
    -------
    order : numpy.ndarray of int64
    counts : numpy.ndarray of float32
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1:
        raise ValueError("item_counts must be 1-D")
    keep = counts > 0
    if allowed is not None:
        keep &= allowed_array(allowed, counts.shape[0])[0]
    ids = np.flatnonzero(keep)
    order = ids[np.argsort(-counts[ids].astype(np.float64), kind="stable")]
    return order.astype(np.int64), counts[order].astype(np.float32)


def popularity_topk_block(X_block, item_counts, k: int, exclude_seen: bool = True, order=None):
    """The ``k`` most popular items per user, the user's own items excluded.

    Parameters
    ----------
    X_block : scipy.sparse matrix, shape (b, n_items)
        Interactions of ``b`` users (only their patterns are used).
    item_counts : array-like, shape (n_items,)
        Popularity of each item; items with count 0 are never recommended.
    k : int
        Items per user.
    exclude_seen : bool, default True
        Leave out each user's own items.
    order : tuple of arrays, optional
        Precomputed :func:`popularity_order` ``(order, counts)`` of ``item_counts``.

    Returns
    -------
    ids, scores : numpy.ndarray, shape (b, k)
        Item ids and their counts (as float32), padded with −1 / −inf.
    """
    k = check_top_k(k)
    X = checked_csr(X_block, "X_block")
    n_items = X.shape[1]
    if order is None:
        order = popularity_order(item_counts)
    order_ids, order_counts = order
    if order_ids.size and (order_ids.min() < 0 or order_ids.max() >= n_items or order_counts.shape != order_ids.shape):
        raise ValueError(f"the popularity order does not fit {n_items} items")
    ex_ptr, ex_ind, use_ex = exclude_arrays(X if exclude_seen else None, X.shape)
    ids, top = padded_top(X.shape[0], k)
    if k and X.shape[0]:
        _popularity_kernel(order_ids, order_counts, n_items, ex_ptr, ex_ind, use_ex, ids, top)
    return ids, top


# --------------------------------------------------------------------------------------------
# slow twins: the oracles of the tests
# --------------------------------------------------------------------------------------------


def score_block_naive(X_block, W1, W2, fill_value: float = 0.0) -> np.ndarray:
    """Twin of :func:`score_block`: dense float64 products of the densified matrices."""
    X, A, B = (sp.csr_matrix(M).toarray().astype(np.float64) for M in (X_block, W1, W2))
    scores = (X @ A @ B).astype(np.float32)
    return np.where(scores != 0, scores, np.float32(fill_value))


def recommend_block_naive(X_block, W1, W2, k: int, exclude_seen: bool = True, allowed=None):
    """Twin of :func:`recommend_block`."""
    scores = score_block_naive(X_block, W1, W2, fill_value=-np.inf)
    return top_k_of_scores_naive(scores, k, exclude=X_block if exclude_seen else None, allowed=allowed)


def similar_items_block_naive(item_ids, W1, W2, k: int, allowed=None):
    """Twin of :func:`similar_items_block`."""
    X = _indicator_rows(item_ids, W1.shape[0])
    return recommend_block_naive(X, W1, W2, k, exclude_seen=True, allowed=allowed)


def popularity_topk_block_naive(X_block, item_counts, k: int, exclude_seen: bool = True):
    """Twin of :func:`popularity_topk_block`."""
    counts = np.asarray(item_counts, dtype=np.float64)
    scores = np.where(counts > 0, counts, -np.inf)[None, :].repeat(X_block.shape[0], axis=0)
    return top_k_of_scores_naive(scores, k, exclude=X_block if exclude_seen else None)
