"""Input checks shared by every user-facing entry point: clear errors that name the problem."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["check_interactions", "check_int", "check_k", "check_n_items"]


def check_interactions(X, name: str = "X", *, allow_empty: bool = False, dtype=np.float32) -> sp.csr_matrix:
    """Validate an interaction matrix and return it as CSR of ``dtype`` (a copy only if needed).

    Accepts scipy sparse matrices/arrays and 2-D NumPy arrays of real numbers (bool included).
    Raises ``TypeError`` for other types or non-numeric data and ``ValueError`` for a wrong
    number of dimensions, NaN/inf or negative values, and (unless ``allow_empty``) a matrix
    without rows, columns or interactions.
    """
    if sp.issparse(X):
        matrix = X
    elif isinstance(X, np.ndarray):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items); got an array of shape {X.shape}")
        matrix = X
    else:
        raise TypeError(
            f"{name} must be a scipy.sparse matrix or a 2-D numpy array (users x items); got {type(X).__name__}"
        )
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D (users x items); got shape {matrix.shape}")
    kind = matrix.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {matrix.dtype}")
    if not allow_empty and (matrix.shape[0] == 0 or matrix.shape[1] == 0):
        raise ValueError(f"{name} is empty: shape {matrix.shape}")
    matrix = sp.csr_matrix(matrix, dtype=dtype) if (not sp.issparse(matrix) or matrix.format != "csr"
                                                     or matrix.dtype != dtype) else matrix
    values = matrix.data
    if kind == "f" or dtype != matrix.dtype:
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = _position(matrix, int(np.argmax(bad)))
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite value(s), e.g. {values[bad][0].item()!r} at row {row}, column {col}"
            )
    negative = values < 0
    if negative.any():
        row, col = _position(matrix, int(np.argmax(negative)))
        raise ValueError(
            f"{name} has {int(negative.sum())} negative value(s), e.g. {values[negative][0].item()!r} at row {row}, "
            f"column {col}; interactions must be >= 0"
        )
    if not allow_empty and matrix.nnz == 0:
        raise ValueError(f"{name} has no interactions (all {matrix.shape[0]} x {matrix.shape[1]} entries are zero)")
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return matrix


def _position(matrix: sp.csr_matrix, flat: int) -> tuple[int, int]:
    row = int(np.searchsorted(matrix.indptr, flat, side="right") - 1)
    return row, int(matrix.indices[flat])


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int, when it is an integer (Python or NumPy, not a bool) ``>= minimum``;
    otherwise one ``ValueError`` line naming ``name``, the bound and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_k(k) -> int:
    """``k`` as a positive int (it may exceed the number of items: results are then padded)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    return int(k)


def check_n_items(X, n_items: int, name: str = "X") -> None:
    """Raise if ``X`` does not have one column per item of the model."""
    if X.shape[1] != n_items:
        raise ValueError(
            f"{name} has {X.shape[1]} item columns but the model was trained on {n_items} items"
        )
