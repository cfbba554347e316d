"""The inverse of a dense symmetric positive definite matrix, in place, tile by tile (no Dask).

``P = A⁻¹`` through the Cholesky factor ``A = L Lᵀ``, in three in-place sweeps over square tiles
of :data:`TILE` rows (the last one ragged), each about ``n³/3`` flops:

1. **Cholesky** (right-looking): ``L_KK = chol(A_KK)``; ``L_IK = A_IK L_KK⁻ᵀ`` below it; then the
   trailing rows ``A_I,K+1:I -= L_IK L_K+1:I,Kᵀ``.
2. **Triangular inverse** ``X = L⁻¹``, column block by column block from the last one:
   ``X_JJ = L_JJ⁻¹`` and ``X_IJ = −(Σ_{K=J+1..I} X_IK L_KJ) X_JJ``.
3. **Product** ``P = Xᵀ X`` (lower part): ``P_IJ = Σ_{K≥I} X_KIᵀ X_KJ``, row block by row block,
   the diagonal tile of a row block last (the others still read it).

LAPACK is called on one tile at a time (``potrf``, ``trtri``, ``trsm``), and every product over
more than a tile is a NumPy matrix product on views: no LAPACK routine ever sees the whole
matrix. (SciPy's bundled OpenBLAS crashed with a segmentation fault in ``potrf``/``potri`` on a
41k × 41k float32 matrix, a known class of its failures at large orders; NumPy's matrix product
uses its own 64-bit-integer OpenBLAS.) Only the lower triangle of the C-ordered array is read
and written; the upper one is left as it was, except inside the diagonal tiles, which hold
``tril`` tiles.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

__all__ = ["TILE", "spd_inverse_lower", "tile_bounds"]

#: Rows of a tile.
TILE = 2048


def tile_bounds(n: int, tile: int = TILE) -> np.ndarray:
    """Row offsets of the tiles of an ``n × n`` matrix: ``[0, tile, 2 tile, ..., n]``."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1; got {tile}")
    return np.append(np.arange(0, n, tile), n).astype(np.int64)


def spd_inverse_lower(A: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Overwrite the lower triangle of the C-ordered SPD ``A`` with that of ``A⁻¹``; returns ``A``.

    Parameters
    ----------
    A : numpy.ndarray, shape (n, n), float32 or float64, C order
        Only its lower triangle is read.
    tile : int, default :data:`TILE`

    Raises
    ------
    numpy.linalg.LinAlgError
        When ``A`` is not positive definite (the global pivot is named).
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not A.flags.c_contiguous:
        raise ValueError(f"A must be a square C-ordered array; got shape {A.shape}")
    bounds = tile_bounds(A.shape[0], tile)
    _cholesky(A, bounds)
    _invert_lower(A, bounds)
    _lower_gram(A, bounds)
    return A


def _cholesky(A, bounds) -> None:
    potrf, trsm = lapack.get_lapack_funcs("potrf", (A,)), blas.get_blas_funcs("trsm", (A,))
    nb = len(bounds) - 1
    for K in range(nb):
        k0, k1 = bounds[K], bounds[K + 1]
        L, info = potrf(np.asfortranarray(A[k0:k1, k0:k1]), lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the matrix is not positive definite (pivot {k0 + info})")
        A[k0:k1, k0:k1] = L
        for I in range(K + 1, nb):  # L_IK = A_IK L_KK^-T
            i0, i1 = bounds[I], bounds[I + 1]
            A[i0:i1, k0:k1] = trsm(1.0, L, np.asfortranarray(A[i0:i1, k0:k1]), side=1, lower=1, trans_a=1)
        for I in range(K + 1, nb):  # trailing update of row block I, columns K+1..I
            i0, i1 = bounds[I], bounds[I + 1]
            A[i0:i1, k1:i1] -= A[i0:i1, k0:k1] @ A[k1:i1, k0:k1].T


def _invert_lower(A, bounds) -> None:
    trtri = lapack.get_lapack_funcs("trtri", (A,))
    nb = len(bounds) - 1
    for J in range(nb - 1, -1, -1):
        j0, j1 = bounds[J], bounds[J + 1]
        X_JJ, info = trtri(np.asfortranarray(A[j0:j1, j0:j1]), lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the Cholesky factor is singular (pivot {j0 + info})")
        X_JJ = np.tril(X_JJ)
        panel = [-(A[bounds[I]:bounds[I + 1], j1:bounds[I + 1]] @ A[j1:bounds[I + 1], j0:j1]) @ X_JJ
                 for I in range(J + 1, nb)]  # uses L_KJ (column block J), so written after
        for I, block in zip(range(J + 1, nb), panel):
            A[bounds[I]:bounds[I + 1], j0:j1] = block
        A[j0:j1, j0:j1] = X_JJ


def _lower_gram(A, bounds) -> None:
    nb = len(bounds) - 1
    for I in range(nb):
        i0, i1 = bounds[I], bounds[I + 1]
        column = A[i0:, i0:i1]  # X_KI for K >= I (zero above: X is lower triangular)
        for J in range(I):
            j0, j1 = bounds[J], bounds[J + 1]
            A[i0:i1, j0:j1] = column.T @ A[i0:, j0:j1]
        A[i0:i1, i0:i1] = column.T @ column
