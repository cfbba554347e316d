"""CHOLMOD factorizer: exact supernodal Cholesky of the reordered Gramian, then magnitude pruning.

``A_p = L̂·L̂ᵀ`` exactly (CHOLMOD, no further permutation), keep the ``max_nnz`` entries of L̂ of
largest magnitude (diagonal always kept; :func:`dask_rec.kernels.pruning.prune_to_nnz`), then
rewrite ``L̂·L̂ᵀ = L·diag(d)·Lᵀ`` with ``d = diag(L̂)²`` and ``L = L̂·diag(1/diag(L̂))`` unit lower
triangular. The exact factor is held in memory before pruning: its fill (``stats["factor_nnz"]``)
dominates this path's memory.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from dask_rec.exceptions import NotPositiveDefiniteError

__all__ = ["cholmod_ldlt", "NotPositiveDefiniteError", "unit_lower_from_cholesky", "square_csc", "check_budget"]

log = logging.getLogger(__name__)


def cholmod_ldlt(A_p, max_nnz: int):
    """Exact Cholesky of ``A_p`` in the given order, pruned to ``max_nnz`` entries, as LDLᵀ.

    Parameters
    ----------
    A_p : scipy.sparse matrix, shape (n, n)
        Symmetric positive definite, already permuted (the regularised Gramian ``A[p][:, p]``).
        CHOLMOD reads its lower triangle only: a full symmetric matrix or its lower triangle.
        Converted to CSC float64 if needed.
    max_nnz : int
        Entries of L to keep, the diagonal included (it is always kept, so at least n remain).
        Ties at the cut are all kept, so a few more may remain (magnitudes compared as float32).

    Returns
    -------
    L : scipy.sparse.csc_matrix, float32
        Unit lower triangular, the unit diagonal stored explicitly, sorted row indices.
    d : numpy.ndarray, float64
        ``diag(L̂)²``, so that ``A_p ≈ L·diag(d)·Lᵀ`` (equality when nothing is pruned).
    stats : dict
        ``factor_nnz``: non-zeros of the exact factor before pruning (CHOLMOD's supernodal
        pattern, diagonal included); ``seconds``: wall time. (``L.nnz`` gives the kept count.)

    Raises
    ------
    NotPositiveDefiniteError
        ``A_p`` is not positive definite (e.g. ``l2`` was not > 0 on a singular Gramian).
    """
    from dask_rec.kernels.pruning import prune_to_nnz
    from sksparse import cholmod

    t0 = time.perf_counter()
    A = square_csc(A_p, "A_p")
    max_nnz = check_budget(max_nnz)
    n = A.shape[0]
    try:
        factor = cholmod.cholesky(A, ordering_method="natural", mode="supernodal")
    except cholmod.CholmodNotPositiveDefiniteError as exc:
        raise NotPositiveDefiniteError(
            f"A_p ({n} x {n}) is not positive definite, CHOLMOD stopped: {exc}. The regularised "
            "Gramian XᵀX + l2·I is positive definite for any l2 > 0; check that l2 > 0 was added "
            "and that the matrix is symmetric."
        ) from exc
    if not np.array_equal(factor.P(), np.arange(n)):  # pragma: no cover - CHOLMOD contract
        raise RuntimeError("CHOLMOD permuted A_p although the natural ordering was requested")
    L_hat = factor.L()
    del factor
    factor_nnz = int(L_hat.nnz)
    L_hat = prune_to_nnz(L_hat, max_nnz, protect_diagonal=True)
    L, d = unit_lower_from_cholesky(L_hat)
    seconds = time.perf_counter() - t0
    stats = {"factor_nnz": factor_nnz, "seconds": seconds}
    log.info("CHOLMOD: n=%d, fill %d, kept %d of max_nnz %d, %.2fs", n, factor_nnz, L.nnz, max_nnz, seconds)
    return L, d, stats


def unit_lower_from_cholesky(L_hat):
    """Rewrite ``L̂·L̂ᵀ`` as ``L·diag(d)·Lᵀ``: ``d = diag(L̂)²``, ``L = L̂·diag(1/diag(L̂))``.

    ``L_hat`` is lower triangular (CSC) with a positive stored diagonal. Returns L as CSC float32
    with sorted indices and its unit diagonal stored explicitly, and d as float64.
    """
    L_hat = sp.csc_matrix(L_hat, dtype=np.float64, copy=True)
    L_hat.sum_duplicates()  # sorts indices too
    n = L_hat.shape[0]
    cols = np.repeat(np.arange(n), np.diff(L_hat.indptr))
    if np.any(L_hat.indices < cols):
        raise ValueError("L_hat must be lower triangular")
    on_diag = L_hat.indices == cols
    diag = np.zeros(n)
    diag[cols[on_diag]] = L_hat.data[on_diag]
    if np.any(diag <= 0) or not np.all(np.isfinite(diag)):
        raise ValueError("L_hat must have a positive, finite stored diagonal")
    L_hat.data /= diag[cols]
    L_hat.data[on_diag] = 1.0
    L = sp.csc_matrix((L_hat.data.astype(np.float32), L_hat.indices, L_hat.indptr), shape=(n, n))
    L.has_sorted_indices = True
    return L, diag * diag


def square_csc(A, name: str) -> sp.csc_matrix:
    """``A`` as a square CSC matrix (shared by both factorizers); a one-line error names ``name``."""
    if not sp.issparse(A):
        raise TypeError(f"{name} must be a scipy sparse matrix; got {type(A).__name__}")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square; got shape {A.shape}")
    A = sp.csc_matrix(A, dtype=np.float64)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    return A


def check_budget(max_nnz) -> int:
    """The factor's non-zero budget as an int; a one-line error when it is not a count."""
    if isinstance(max_nnz, (bool, np.bool_)) or not isinstance(max_nnz, (int, np.integer)) or max_nnz < 0:
        raise ValueError(f"max_nnz must be a non-negative integer; got {max_nnz!r}")
    return int(max_nnz)
