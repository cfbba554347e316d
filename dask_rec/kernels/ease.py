"""EASE's closed form on a dense Gramian, and its scores for a block of users (NumPy/SciPy, no Dask).

EASE (Steck, 2019) minimises ``‖X − XB‖²_F + λ‖B‖²_F`` subject to ``diag(B) = 0``; with
``P = (G + λI)⁻¹`` and ``G = XᵀX`` the solution is ``B = I − P · diag(1 / diag(P))``, i.e.
``B_ij = −P_ij / P_jj`` off the diagonal and 0 on it.

:func:`ease_weights` assembles the dense ``G + λI`` from the Gramian's sparse column blocks,
inverts it through its Cholesky factor in place (about ``n³`` flops, half of a general ``inv``),
copies the computed triangle onto the other one band by band and scales the columns in place, so
the solve holds one dense ``n × n`` array (plus the sparse blocks). :func:`dense_bytes` is that
array's size, for the memory check made before the fit.

Up to :data:`DIRECT_BYTES` (2 GiB: 23,170 items in float32) the inverse is two LAPACK calls on
the whole matrix (``potrf`` then ``potri``). Above, SciPy's bundled OpenBLAS (0.3.30, 32-bit
integers) is not trusted: here its ``spotrf`` dies with a segmentation fault within seconds from
26,500 items (2.8e9 bytes; fine at 26,100) and ``dpotrf`` at 20,000 (3.2e9 bytes), on any SPD
input. Larger matrices go through :func:`dask_rec.kernels.tiled_inverse.spd_inverse_lower`, the
same algorithm on tiles of 2048 rows (no crash; here as fast as LAPACK with one BLAS thread,
about half as fast with two).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .neighbors import gramian_columns
from .tiled_inverse import TILE, spd_inverse_lower

__all__ = ["ease_weights", "dense_bytes", "solve_bytes", "ease_scores", "BAND", "DIRECT_BYTES"]

#: Rows per band when copying the inverse's triangle and scaling (bounded temporaries).
BAND = 1024
#: Largest dense matrix (bytes) inverted by whole-matrix LAPACK calls; larger ones go tile by tile.
DIRECT_BYTES = 2**31


def dense_bytes(n_items: int, dtype="float32") -> int:
    """Bytes of the one dense ``n_items × n_items`` array the solve holds."""
    return int(n_items) ** 2 * np.dtype(dtype).itemsize


def solve_bytes(n_items: int, dtype="float32") -> int:
    """Bytes the solve holds at its peak: the dense array and its largest temporaries (two
    ``n × BAND`` float64 bands in the copy; two ``n × TILE`` panels in the tiled inverse)."""
    n = int(n_items)
    temporaries = 2 * n * BAND * 8
    if dense_bytes(n, dtype) > DIRECT_BYTES:
        temporaries = max(temporaries, 2 * n * TILE * np.dtype(dtype).itemsize)
    return dense_bytes(n, dtype) + temporaries


def ease_weights(blocks, starts, n_items: int, l2: float, dtype="float32") -> np.ndarray:
    """EASE's ``B`` (C order, ``dtype``) from the column blocks ``G[:, a:b]`` starting at ``starts``.

    Parameters
    ----------
    blocks : list of scipy.sparse matrices, shapes (n_items, width)
        The Gramian's column blocks, in order.
    starts : list of int
        First column of each block.
    n_items : int
    l2 : float
        λ > 0, added to the diagonal.
    dtype : {"float32", "float64"}
        Precision of the dense solve.

    Raises
    ------
    numpy.linalg.LinAlgError
        When ``G + λI`` is not positive definite (cannot happen for λ > 0 in exact arithmetic;
        reported with the pivot when rounding makes it so).
    """
    dtype = np.dtype(dtype)
    A = np.zeros((n_items, n_items), dtype=dtype)
    for start, block in zip(starts, blocks):
        block = gramian_columns(block, start)
        for c in range(0, block.shape[1], BAND):  # temporaries of n × BAND
            piece = block[:, c:c + BAND]
            A[:, start + c:start + c + piece.shape[1]] = piece.toarray()
    A[np.diag_indices(n_items)] += dtype.type(l2)
    if A.nbytes > DIRECT_BYTES:  # tile by tile (see the module docstring)
        try:
            P = spd_inverse_lower(A, TILE)  # lower triangle valid, in A's memory
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(f"G + λI: {exc}; raise l2") from None
    else:
        P = _lapack_inverse_lower(A)
    _symmetrize_lower(P)
    d = P.diagonal().copy()
    for a in range(0, n_items, BAND):
        P[a:a + BAND] /= -d  # B_ij = −P_ij / P_jj
    P[np.diag_indices(n_items)] = 0
    return np.ascontiguousarray(P)


def _lapack_inverse_lower(A: np.ndarray) -> np.ndarray:
    """``A⁻¹`` (lower triangle valid) by LAPACK ``potrf`` + ``potri`` on the whole matrix, in place."""
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (A,))
    # A is symmetric and C-ordered, so A.T is the same matrix in Fortran order: LAPACK works in place
    # on its upper triangle, which is A's lower one.
    factor, info = potrf(A.T, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"G + λI is not positive definite (pivot {info}); raise l2")
    inverse, info = potri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Cholesky inverse failed (LAPACK info {info})")
    return inverse.T  # the same memory as A when LAPACK worked in place


def _symmetrize_lower(P: np.ndarray) -> None:
    """Copy the lower triangle of the square ``P`` onto its upper one, in place, band by band."""
    n = P.shape[0]
    for a in range(0, n, BAND):
        b = min(a + BAND, n)
        diag = P[a:b, a:b]
        lower = np.tril(diag)
        diag[...] = lower + np.tril(lower, -1).T
        if b < n:
            P[a:b, b:] = P[b:, a:b].T


def ease_scores(X_block, B: np.ndarray) -> np.ndarray:
    """Dense scores ``X_block · B`` (float32, ``b × n_items``)."""
    X = sp.csr_matrix(X_block, dtype=B.dtype)
    return np.asarray(X @ B, dtype=np.float32)
