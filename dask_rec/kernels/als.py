"""Kernels of implicit-feedback ALS (NumPy/numba, no Dask): the per-row solves, exact and CG, and fold-in.

The model (Hu, Koren & Volinsky 2008): a user ``u`` and item ``i`` with stored value ``x_ui > 0``
have preference ``p_ui = 1`` and confidence ``c_ui = 1 + alpha * x_ui``; every other pair has
``p_ui = 0`` and ``c_ui = 1``. With user factors ``X`` (rows ``x_u``) and item factors ``Y``
(rows ``y_i``) the objective is::

    L(X, Y) = sum_ui c_ui (p_ui - x_u . y_i)^2 + lam (|X|_F^2 + |Y|_F^2)

For fixed ``Y`` each user row is the least-squares solution of::

    (Y^T Y + Y^T (C_u - I) Y + lam I) x_u = Y^T C_u p_u

whose left side is the shared ``G = Y^T Y + lam I`` plus a rank-``m`` update from the row's own
``m`` items only. The exact solver (float64) takes, per row, the cheaper of Cholesky on the
``k x k`` system, ``O(m k^2 + k^3)``, and, for ``m < k``, the Woodbury identity with the
precomputed ``W = Y G^-1``, an ``m x m`` system, ``O(m^2 k + m^3)``. Conjugate gradient
(Takács, Pilászy & Tikk 2011) costs ``O(m k + k^2)`` per step, warm-started from the previous
factors. Items are solved the same way from the item-major matrix and ``X``. The exact solver
gathers a row's item factors (float64) and forms its products (``Y_uᵀ D Y_u``, ``Y_u W_uᵀ``, ...)
with BLAS calls on them.

The CG solver works in float32 on chunks of rows in lock step: the products with the shared ``G``
are one BLAS matrix product per chunk and step, the per-row sparse parts and updates numba
kernels. (float32 CG needs a few steps more than ``k`` to reach the exact solution; ALS uses 2-4.)

All numba kernels are ``nogil`` and single-threaded: Dask workers run them side by side. A row's
sums and products run over its entries in the order they are stored, on arrays of the same
shapes whatever the block, so a row's result does not depend on which worker solves it (tested:
the same factors on 1, 2 and 3 workers); other blockings change only the round-off of the chunked
BLAS products and of the Gramian sums.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["solve_rows", "fold_in", "fold_in_operator", "solve_rows_naive"]

_JIT = dict(nogil=True, cache=True, fastmath=True)
_SOLVERS = ("cholesky", "cg")
#: Rows per matrix product of the CG solver.
CG_CHUNK = 1024


@numba.njit(**_JIT)
def _cholesky_solve(A, b, x):
    """Solve ``A x = b`` in place (A: SPD, lower triangle used and overwritten); False if not SPD."""
    k = A.shape[0]
    for j in range(k):
        s = A[j, j]
        for p in range(j):
            s -= A[j, p] * A[j, p]
        if s <= 0.0:
            return False
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, k):
            t = A[i, j]
            for p in range(j):
                t -= A[i, p] * A[j, p]
            A[i, j] = t / d
    for i in range(k):  # L z = b
        t = b[i]
        for p in range(i):
            t -= A[i, p] * x[p]
        x[i] = t / A[i, i]
    for i in range(k - 1, -1, -1):  # L^T x = z
        t = x[i]
        for p in range(i + 1, k):
            t -= A[p, i] * x[p]
        x[i] = t / A[i, i]
    return True


@numba.njit(**_JIT)
def _gather_row(lo, hi, indices, data, Y, alpha, Yu, Cu, pos):
    """The row's stored values > 0: their item factors into ``Yu`` (float64), confidences into
    ``Cu`` and items into ``pos``; returns their number ``m``."""
    k = Y.shape[1]
    m = 0
    for e in range(lo, hi):
        v = data[e]
        if v <= 0:
            continue
        y = Y[indices[e]]
        for j in range(k):
            Yu[m, j] = y[j]
        Cu[m] = 1.0 + alpha * v
        pos[m] = indices[e]
        m += 1
    return m


@numba.njit(**_JIT)
def _cholesky_row(m, Yu, Cu, G, A, x, Z_flat, P, b):
    """Solve one row's system ``(G + Y_u^T (C_u - I) Y_u) x = Y_u^T c_u`` from its gathered
    ``m`` items (:func:`_gather_row`); the two products are BLAS calls into the buffers
    ``Z_flat`` (at least ``m k``), ``P`` (k x k) and ``b`` (k).

    Returns 1 when solved, 0 when the row has no stored value > 0 (x = 0), -1 when not SPD.
    """
    if m == 0:
        x[:] = 0.0
        return 0
    k = G.shape[0]
    Y_m = Yu[:m]
    Z = Z_flat[: m * k].reshape((m, k))
    for a in range(m):
        Z[a] = (Cu[a] - 1.0) * Y_m[a]
    np.dot(Z.T, Y_m, P)
    for i in range(k):
        for j in range(k):
            A[i, j] = G[i, j] + P[i, j]
    np.dot(Cu[:m], Y_m, b)
    if not _cholesky_solve(A, b, x):
        x[:] = 0.0
        return -1
    return 1


@numba.njit(**_JIT)
def _fold_in_kernel(indptr, indices, data, Y, W, G, alpha, X):
    """Exact solves of users with few items by the Woodbury identity, the others by Cholesky.

    With ``W = Y G^-1`` (precomputed once per model) and a user's ``m`` items ``Y_u``, ``W_u``,
    ``C_u``: ``x = g - W_u^T (D^-1 + Y_u W_u^T)^-1 Y_u g`` with ``g = W_u^T c`` and
    ``D = C_u - I``, an ``m x m`` solve instead of ``k x k`` (used when ``m < k`` and every
    ``c > 1``). The products over the row's items are BLAS calls on its gathered factors, into
    buffers allocated once per call (no allocation per row).
    """
    n, k = X.shape
    longest = 1
    for u in range(n):
        longest = max(longest, indptr[u + 1] - indptr[u])
    Yu = np.empty((longest, k))
    Wu = np.empty((min(longest, k), k))
    Cu = np.empty(longest)
    pos = np.empty(longest, np.int64)
    Z_flat = np.empty(longest * k)
    S_flat = np.empty(k * k)
    A = np.empty((k, k))
    P = np.empty((k, k))
    x = np.empty(k)
    g = np.empty(k)
    h = np.empty(k)
    t = np.empty(k)
    w = np.empty(k)
    failed = -1
    for u in range(n):
        m = _gather_row(indptr[u], indptr[u + 1], indices, data, Y, alpha, Yu, Cu, pos)
        woodbury = 0 < m < k
        for a in range(m):
            if Cu[a] <= 1.0:
                woodbury = False
        solved = False
        if woodbury:
            for a in range(m):
                Wu[a] = W[pos[a]]
            Y_m, W_m = Yu[:m], Wu[:m]
            np.dot(Cu[:m], W_m, g)
            np.dot(Y_m, g, h[:m])
            S = S_flat[: m * m].reshape((m, m))
            np.dot(Y_m, W_m.T, S)
            for a in range(m):
                S[a, a] += 1.0 / (Cu[a] - 1.0)
            if _cholesky_solve(S, h[:m], t[:m]):
                np.dot(t[:m], W_m, w)
                for j in range(k):
                    x[j] = g[j] - w[j]
                solved = True
        if not solved and _cholesky_row(m, Yu, Cu, G, A, x, Z_flat, P, h) < 0 and failed < 0:
            failed = u
        for j in range(k):
            X[u, j] = x[j]
    return failed


@numba.njit(**_JIT)
def _add_sparse_part(indptr, indices, data, alpha, Y, P, AP):
    """``AP[u] += sum_e (c_e - 1) (y_e . P[u]) y_e`` over each row's stored values > 0."""
    n, k = P.shape
    for u in range(n):
        p = P[u]
        out = AP[u]
        for e in range(indptr[u], indptr[u + 1]):
            v = data[e]
            if v <= 0:
                continue
            y = Y[indices[e]]
            s = np.float32(0.0)
            for j in range(k):
                s += y[j] * p[j]
            s *= np.float32(alpha * v)
            for j in range(k):
                out[j] += s * y[j]


@numba.njit(**_JIT)
def _cg_start(indptr, indices, data, alpha, Y, X, AX, R, P, rs):
    """Residuals ``r = b - A x`` (``AX`` holds ``G x`` on entry), ``p = r``, ``rs = r . r``; empty rows: x = 0."""
    n, k = X.shape
    _add_sparse_part(indptr, indices, data, alpha, Y, X, AX)
    for u in range(n):
        r = R[u]
        for j in range(k):
            r[j] = -AX[u, j]
        m = 0
        for e in range(indptr[u], indptr[u + 1]):
            v = data[e]
            if v <= 0:
                continue
            m += 1
            c = np.float32(1.0 + alpha * v)
            y = Y[indices[e]]
            for j in range(k):
                r[j] += c * y[j]
        if m == 0:
            X[u, :] = 0.0
            r[:] = 0.0
        t = 0.0
        for j in range(k):
            P[u, j] = r[j]
            t += r[j] * r[j]
        rs[u] = t


@numba.njit(**_JIT)
def _cg_step(indptr, indices, data, alpha, Y, X, AP, R, P, rs):
    """One CG step of every row (``AP`` holds ``G p`` on entry)."""
    n, k = X.shape
    _add_sparse_part(indptr, indices, data, alpha, Y, P, AP)
    for u in range(n):
        if rs[u] < 1e-20:
            continue
        pAp = 0.0
        for j in range(k):
            pAp += P[u, j] * AP[u, j]
        step = np.float32(rs[u] / pAp)
        t = 0.0
        for j in range(k):
            X[u, j] += step * P[u, j]
            R[u, j] -= step * AP[u, j]
            t += R[u, j] * R[u, j]
        beta = np.float32(t / rs[u])
        for j in range(k):
            P[u, j] = R[u, j] + beta * P[u, j]
        rs[u] = t


def _cg_rows(X_block, Y, G, alpha, cg_steps, out, chunk, n_threads):
    """``cg_steps`` CG steps for every row, from ``out`` (updated in place), ``chunk`` rows at a time.

    The products with the shared ``G`` are one matrix product per chunk and step (BLAS); the
    per-row sparse parts and updates are numba kernels. Chunks (fixed, whatever ``n_threads``)
    run on ``n_threads`` Python threads.
    """
    G32 = np.ascontiguousarray(G, dtype=np.float32)
    data = X_block.data

    def run(a: int) -> None:
        z = min(X_block.shape[0], a + chunk)
        indptr = X_block.indptr[a:z + 1]
        X = out[a:z]
        AX = X @ G32
        R = np.empty_like(X)
        P = np.empty_like(X)
        rs = np.empty(z - a)
        _cg_start(indptr, X_block.indices, data, alpha, Y, X, AX, R, P, rs)
        for _ in range(cg_steps):
            _cg_step(indptr, X_block.indices, data, alpha, Y, X, P @ G32, R, P, rs)

    _on_threads(run, range(0, X_block.shape[0], chunk), n_threads)


def _on_threads(run, starts, n_threads: int) -> None:
    starts = list(starts)
    if n_threads <= 1 or len(starts) <= 1:
        for a in starts:
            run(a)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(n_threads, len(starts))) as pool:
        for f in [pool.submit(run, a) for a in starts]:
            f.result()


def _csr(X, name):
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse matrix; got {type(X).__name__}")
    return sp.csr_matrix(X)


def solve_rows(X_block, Y, gramian, regularization: float, alpha: float, solver: str = "cholesky",
               cg_steps: int = 3, previous=None, n_threads: int = 1, W=None) -> np.ndarray:
    """Factors of the rows of ``X_block`` given the other side's factors ``Y``.

    Parameters
    ----------
    X_block : scipy.sparse matrix, shape (b, n)
        Interactions of ``b`` rows (users, or items of the item-major matrix); stored values
        ``> 0`` are observed (confidence ``1 + alpha * value``), others are ignored.
    Y : numpy.ndarray of float32, shape (n, k)
        The other side's factors.
    gramian : numpy.ndarray of float64, shape (k, k)
        ``Y^T Y`` (see :func:`dask_rec.kernels.factors.factor_gramian`).
    regularization, alpha : float
    solver : {"cholesky", "cg"}
        Exact solve (float64; a row with fewer than ``k`` stored values through the Woodbury
        identity, ``O(m^2 k)``, the others by Cholesky, ``O(m k^2 + k^3)``), or ``cg_steps``
        conjugate-gradient steps from ``previous``.
    previous : numpy.ndarray of float32, shape (b, k), optional
        The rows' current factors (the CG start; zeros when omitted).
    n_threads : int, default 1
        Python threads over fixed chunks of rows (the kernels release the GIL); the result does
        not depend on it. Keep 1 inside Dask tasks.
    W : numpy.ndarray of float64, shape (n, k), optional
        :func:`fold_in_operator` of ``Y`` for the exact solver (computed here when omitted).

    Returns
    -------
    numpy.ndarray of float32, shape (b, k)

    Raises
    ------
    numpy.linalg.LinAlgError
        When a row's system is not positive definite (``regularization == 0`` and too few items).
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}; got {solver!r}")
    X_block = _csr(X_block, "X_block")
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    k = Y.shape[1]
    if X_block.shape[1] != Y.shape[0]:
        raise ValueError(f"X_block has {X_block.shape[1]} columns; Y has {Y.shape[0]} rows")
    G = np.array(gramian, dtype=np.float64) + float(regularization) * np.eye(k)
    if previous is None:
        out = np.zeros((X_block.shape[0], k), np.float32)
    else:
        out = np.array(previous, dtype=np.float32, order="C")
        if out.shape != (X_block.shape[0], k):
            raise ValueError(f"previous has shape {out.shape}; expected {(X_block.shape[0], k)}")
    if solver == "cg":
        _cg_rows(X_block, Y, G, float(alpha), int(cg_steps), out, CG_CHUNK, int(n_threads))
        return out
    if W is None:
        W = fold_in_operator(Y, gramian, regularization)
    data = X_block.data.astype(np.float64, copy=False)
    failures = []

    def run(a: int) -> None:
        z = min(X_block.shape[0], a + CG_CHUNK)
        bad = _fold_in_kernel(X_block.indptr[a:z + 1], X_block.indices, data, Y, W, G, float(alpha), out[a:z])
        if bad >= 0:
            failures.append(a + bad)

    _on_threads(run, range(0, X_block.shape[0], CG_CHUNK), int(n_threads))
    if failures:
        raise np.linalg.LinAlgError(f"ALS system of row {min(failures)} is not positive definite; "
                                    "use regularization > 0")
    return out


def fold_in(X_block, Y, gramian, regularization: float, alpha: float, W=None, n_threads: int = 1) -> np.ndarray:
    """Exact factors of new rows (users) given trained ``Y``: :func:`solve_rows` with the exact solver.

    ``W``: :func:`fold_in_operator` of ``Y``, to reuse across calls.
    """
    return solve_rows(X_block, Y, gramian, regularization, alpha, solver="cholesky", W=W, n_threads=n_threads)


def fold_in_operator(Y, gramian, regularization: float) -> np.ndarray:
    """``W = Y (Y^T Y + lam I)^-1`` (float64, n x k), for :func:`fold_in`."""
    k = np.shape(Y)[1]
    G = np.array(gramian, dtype=np.float64) + float(regularization) * np.eye(k)
    return np.ascontiguousarray(np.linalg.solve(G, np.asarray(Y, dtype=np.float64).T).T)


def solve_rows_naive(X_block, Y, regularization: float, alpha: float) -> np.ndarray:
    """Dense NumPy solve of every row's normal equations (float64)."""
    X_block = sp.csr_matrix(X_block)
    Y = np.asarray(Y, dtype=np.float64)
    k = Y.shape[1]
    out = np.zeros((X_block.shape[0], k))
    for u in range(X_block.shape[0]):
        x = X_block[u].toarray()[0].astype(np.float64)
        c = np.where(x > 0, 1.0 + alpha * x, 1.0)
        p = (x > 0).astype(np.float64)
        if not p.any():
            continue
        A = (Y.T * c) @ Y + regularization * np.eye(k)
        out[u] = np.linalg.solve(A, (Y.T * c) @ p)
    return out
