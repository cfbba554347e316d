"""Around ALS's factor matrices (NumPy/numba, no Dask): Gramians, seeded init, the objective, top-k of ``U Y^T``.

The objective (see :mod:`dask_rec.kernels.als`) splits into a part over all pairs, which the
Gramians give without touching the pairs (``sum_ui (x_u . y_i)^2 = sum((X^T X) * (Y^T Y))``), and
the stored pairs' share (:func:`observed_losses`), so it costs ``O(nnz k + (m + n) k^2)``.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["factor_gramian", "init_factors", "row_losses", "observed_losses", "score_topk", "objective_naive",
           "INIT_CHUNK"]

_JIT = dict(nogil=True, cache=True, fastmath=True)
#: Rows per seeded chunk of the initial factors (fixed, so that the init does not depend on blocks).
INIT_CHUNK = 4096
#: Items per block of scores in :func:`score_topk` (with 128 rows: 1 MiB of float32, cache-sized).
ITEM_TILE = 2048


def _csr(X, name):
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse matrix; got {type(X).__name__}")
    return sp.csr_matrix(X)


@numba.njit(**_JIT)
def _loss_kernel(indptr, indices, data, F, Y, alpha):
    """``sum over stored values > 0 of c (1 - s)^2 - s^2``, ``s = f_u . y_i`` (the quadratic part is added by the caller)."""
    n, k = F.shape
    total = 0.0
    for u in range(n):
        f = F[u]
        for e in range(indptr[u], indptr[u + 1]):
            v = data[e]
            if v <= 0:
                continue
            y = Y[indices[e]]
            t = np.float32(0.0)
            for j in range(k):
                t += f[j] * y[j]
            s = np.float64(t)
            c = 1.0 + alpha * v
            total += c * (1.0 - s) * (1.0 - s) - s * s
    return total


def row_losses(X_block, F, Y, gramian, alpha: float) -> float:
    """``sum_u sum_i c_ui (p_ui - f_u . y_i)^2`` over the rows of ``X_block`` (all items, not only stored).

    ``gramian`` is ``Y^T Y``: the sum of ``(f_u . y_i)^2`` over all items is ``f_u^T (Y^T Y) f_u``
    (summed over rows: ``sum((F^T F) * (Y^T Y))``), to which :func:`observed_losses` adds the
    stored pairs' share, so the cost is ``O(b k^2 + nnz k)``.
    """
    F64 = np.asarray(F, dtype=np.float64)
    quadratic = float(np.sum(factor_gramian(F64) * np.asarray(gramian, dtype=np.float64)))
    return quadratic + observed_losses(X_block, F, Y, alpha)


def observed_losses(X_block, F, Y, alpha: float) -> float:
    """``sum over stored values > 0 of c (1 - s)^2 - s^2`` with ``s = f_u . y_i`` (float64 sum)."""
    X_block = _csr(X_block, "X_block")
    return float(_loss_kernel(X_block.indptr, X_block.indices, X_block.data.astype(np.float64, copy=False),
                              np.ascontiguousarray(F, dtype=np.float32), np.ascontiguousarray(Y, dtype=np.float32),
                              float(alpha)))


def factor_gramian(F) -> np.ndarray:
    """``F^T F`` in float64 (k x k)."""
    F = np.asarray(F, dtype=np.float64)
    return F.T @ F


def init_factors(start: int, stop: int, factors: int, seed: int, stream: int) -> np.ndarray:
    """Initial factors of rows ``start:stop``: uniform in ``[0, 0.01)``, float32.

    Drawn in fixed chunks of :data:`INIT_CHUNK` rows, each seeded by ``(seed, stream, chunk)``,
    so that a row's values do not depend on the blocks the rows are split into.
    """
    out = np.empty((stop - start, factors), np.float32)
    c0, c1 = start // INIT_CHUNK, (stop - 1) // INIT_CHUNK + 1 if stop > start else start // INIT_CHUNK
    for c in range(c0, c1):
        values = np.random.default_rng([seed, stream, c]).random((INIT_CHUNK, factors), dtype=np.float32) * 0.01
        a, b = max(start, c * INIT_CHUNK), min(stop, (c + 1) * INIT_CHUNK)
        out[a - start:b - start] = values[a - c * INIT_CHUNK:b - c * INIT_CHUNK]
    return out


def score_topk(U, Y, k: int, exclude=None, allowed=None, empty=None, chunk: int = 128, tile: int = ITEM_TILE):
    """Top ``k`` of ``U Y^T`` per row, in blocks of ``chunk`` rows × ``tile`` items (never all scores at once).

    Every product is one ``chunk x k`` by ``k x tile`` matrix product (the last chunk padded with
    zero rows), so a row's scores are the same bits whatever the batch it comes in; each block of
    scores (1 MiB by default) is scanned while it is still in cache
    (:class:`~dask_rec.kernels.topk.TopKAccumulator`).
    ``exclude``: CSR whose pattern marks items to leave out per row; ``empty``: bool per row,
    rows with no score at all (padded with −1 / −inf). Returns ``(ids int64, scores float32)``.
    """
    from .topk import TopKAccumulator

    b = U.shape[0]
    n_items = Y.shape[0]
    ids = np.full((b, k), -1, np.int64)
    top = np.full((b, k), -np.inf, np.float32)
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    padded = np.zeros((chunk, U.shape[1]), np.float32)
    buffer = np.empty((chunk, min(tile, n_items)), np.float32)  # reused: no fresh pages per block
    for a in range(0, b, chunk):
        z = min(b, a + chunk)
        padded[: z - a] = U[a:z]
        padded[z - a:] = 0.0
        topk = TopKAccumulator(z - a, k, n_items, exclude=None if exclude is None else exclude[a:z], allowed=allowed)
        for t0 in range(0, n_items, tile):
            t1 = min(n_items, t0 + tile)
            scores = np.matmul(padded, Y[t0:t1].T, out=buffer[:, : t1 - t0])[: z - a]
            if empty is not None:
                scores[empty[a:z]] = -np.inf
            topk.offer(scores, t0)
        ids[a:z], top[a:z] = topk.result()
    return ids, top


# --------------------------------------------------------------------------------------------
# slow, obviously correct twin (test oracle)
# --------------------------------------------------------------------------------------------


def objective_naive(X, U, Y, regularization: float, alpha: float) -> float:
    """The ALS objective from dense matrices."""
    D = sp.csr_matrix(X).toarray().astype(np.float64)
    C = np.where(D > 0, 1.0 + alpha * D, 1.0)
    P = (D > 0).astype(np.float64)
    U = np.asarray(U, np.float64)
    Y = np.asarray(Y, np.float64)
    return float((C * (P - U @ Y.T) ** 2).sum() + regularization * ((U ** 2).sum() + (Y ** 2).sum()))
