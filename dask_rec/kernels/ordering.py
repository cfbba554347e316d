"""Item orderings applied before factorizing the Gramian: ``A_p = A[p][:, p]``.

Four methods (:data:`dask_rec.config.REORDERING_METHODS`):

``"colamd"``
    COLAMD on the interaction matrix X, through CHOLMOD's symbolic analysis of ``XᵀX``
    (``sksparse.cholmod.analyze_AAt(Xᵀ, ordering_method="colamd")``). What CHOLMOD returns is
    COLAMD's column order of X *followed by a postorder of the elimination tree* of ``XᵀX`` (its
    default); the factorization sees exactly the fill that order predicts. The same permutation
    comes back for the simplicial and the supernodal mode. When only a precomputed item-item
    matrix A is given (no X), there is no X for COLAMD to order: CHOLMOD itself replaces COLAMD
    by AMD for a symmetric input, and so do we (AMD on the pattern of A, which equals the
    pattern of ``XᵀX`` when A is a Gramian). Running COLAMD on A as if A were X would order
    ``A·A`` instead: measured on yelp2020 that doubles the fill (168M vs 83M non-zeros) and
    takes 10x longer.
``"amd"``
    AMD on the pattern of A (``cholmod.analyze(A, ordering_method="amd")``), or, with X only, on
    the pattern of ``XᵀX`` without forming it (``analyze_AAt(Xᵀ, ordering_method="amd")``;
    the fill is the same, the permutation may differ in ties).
``"popularity"``
    Ascending interaction count, ties broken by item index (a stable sort), so the most popular
    item comes last. Counts from ``item_counts``, else from X, else the diagonal of A, which
    must then be the *unscaled* Gramian (``XᵀX``, optionally ``+ λI``) — for binary X its
    diagonal is the count; for weighted X it is the sum of squared weights.
``"natural"``
    ``arange(n)``.

Exact-factor fill on yelp2020 (20,092 items, ``XᵀX + 10·I``), for reference: COLAMD on X 82.7M
non-zeros, AMD 87.6M, popularity 167M, natural 202M.

Only the pattern of X or A is used by the CHOLMOD orderings (their values are ignored). A is
read as CHOLMOD reads it: its lower triangle, so pass a full symmetric matrix or its lower
triangle.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dask_rec.config import REORDERING_METHODS

__all__ = ["item_ordering", "inverse_permutation"]


def item_ordering(method, *, X=None, A=None, item_counts=None) -> np.ndarray:
    """Permutation ``p`` (int64) of the items; factorize ``A_p = A[p][:, p]``.

    Parameters
    ----------
    method : str
        One of ``"colamd"``, ``"amd"``, ``"popularity"``, ``"natural"`` (case-insensitive; enum
        members with a ``.value`` are accepted).
    X : scipy.sparse matrix, shape (n_users, n_items), optional
        Interactions. Used by ``"colamd"`` (required unless A is given), ``"amd"`` (when A is
        not given) and ``"popularity"`` (when ``item_counts`` is not given).
    A : scipy.sparse matrix, shape (n_items, n_items), optional
        Item-item matrix (the Gramian, possibly regularised), full symmetric or lower triangle.
    item_counts : array of int, shape (n_items,), optional
        Interactions per item, for ``"popularity"``.

    Returns
    -------
    numpy.ndarray of int64
        A permutation of ``range(n_items)``.

    Raises
    ------
    ValueError
        Unknown method, missing input for it, or inputs of disagreeing sizes.
    """
    name = getattr(method, "value", method)
    if not isinstance(name, str) or name.lower() not in REORDERING_METHODS:
        raise ValueError(f"ordering method must be one of {', '.join(REORDERING_METHODS)}; got {method!r}")
    name = name.lower()
    n = _n_items(X, A, item_counts)

    if name == "natural":
        if n is None:
            raise ValueError("the natural ordering needs X, A or item_counts to know the number of items")
        return np.arange(n, dtype=np.int64)

    if name == "popularity":
        if item_counts is not None:
            counts = np.asarray(item_counts)
        elif X is not None:
            from dask_rec.kernels.gramian import item_counts as _counts

            counts = _counts(X)
        elif A is not None:
            counts = _as_sparse(A, "A").diagonal()
        else:
            raise ValueError("the popularity ordering needs item_counts, X or the unscaled Gramian A")
        if counts.ndim != 1:
            raise ValueError(f"item_counts must be one-dimensional; got shape {counts.shape}")
        return np.argsort(counts, kind="stable").astype(np.int64)

    if name == "colamd":
        if X is not None:
            return _cholmod_order_of_interactions(X, "colamd")
        if A is not None:
            # No X to run COLAMD on: AMD on A's pattern, as CHOLMOD does for symmetric input.
            return _cholmod_order_of_gramian(A, "amd")
        raise ValueError("the colamd ordering needs the interactions X (or, failing that, the Gramian A)")

    # amd
    if A is not None:
        return _cholmod_order_of_gramian(A, "amd")
    if X is not None:
        return _cholmod_order_of_interactions(X, "amd")
    raise ValueError("the amd ordering needs the Gramian A (or the interactions X)")


def _cholmod_order_of_gramian(A, method: str) -> np.ndarray:
    """CHOLMOD's ``method`` ordering of the symmetric pattern of ``A``."""
    from sksparse import cholmod

    return _perm(cholmod.analyze(_pattern_csc(_as_sparse(A, "A")), ordering_method=method, mode=_MODE))


def _cholmod_order_of_interactions(X, method: str) -> np.ndarray:
    """CHOLMOD's ``method`` ordering of the pattern of ``XᵀX``, from ``X`` (XᵀX is not formed)."""
    from sksparse import cholmod

    return _perm(cholmod.analyze_AAt(_pattern_csc(_as_sparse(X, "X").T), ordering_method=method, mode=_MODE))


#: CHOLMOD's symbolic analysis after the ordering. Only the permutation is used, and it is the same
#: in both modes (checked on ml-100k, ml-latest-small, yelp2020 and amazon-book-kgat); the
#: supernodal analysis fails with "problem too large" on catalogs of 200k items and more.
_MODE = "simplicial"


def inverse_permutation(p) -> np.ndarray:
    """``q`` with ``q[p] = arange(n)`` (int64): position of each item in the ordering."""
    p = np.asarray(p)
    q = np.empty(p.shape[0], dtype=np.int64)
    q[p] = np.arange(p.shape[0], dtype=np.int64)
    return q


def _as_sparse(M, name: str):
    if not sp.issparse(M):
        raise TypeError(f"{name} must be a scipy sparse matrix; got {type(M).__name__}")
    return M


def _n_items(X, A, item_counts) -> int | None:
    sizes = {}
    if X is not None:
        sizes["X.shape[1]"] = _as_sparse(X, "X").shape[1]
    if A is not None:
        A = _as_sparse(A, "A")
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be square (items x items); got shape {A.shape}")
        sizes["A.shape[0]"] = A.shape[0]
    if item_counts is not None:
        sizes["len(item_counts)"] = len(item_counts)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs disagree on the number of items: {sizes}")
    return next(iter(sizes.values()), None)


def _pattern_csc(M) -> sp.csc_matrix:
    """Float64 CSC matrix of ones on M's non-zero pattern (sorted, no duplicates or zeros)."""
    M = M.tocsc()
    if not M.has_canonical_format:
        M = M.copy()
        M.sum_duplicates()
    keep = M.data != 0
    if not keep.all():
        M = M.copy()
        M.data = keep.astype(np.float64)
        M.eliminate_zeros()
    return sp.csc_matrix((np.ones(M.nnz), M.indices, M.indptr), shape=M.shape)


def _perm(factor) -> np.ndarray:
    return np.asarray(factor.P(), dtype=np.int64)
