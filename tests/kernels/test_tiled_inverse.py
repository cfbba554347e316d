"""The tile-by-tile inverse of a symmetric positive definite matrix against NumPy's general inverse."""

from __future__ import annotations

import numpy as np
import pytest

from dask_rec.kernels.tiled_inverse import spd_inverse_lower, tile_bounds


def _spd(n, seed=0, dtype=np.float64):
    M = np.random.default_rng(seed).random((n + 20, n))
    return (M.T @ M + 3.0 * np.eye(n)).astype(dtype)


@pytest.mark.parametrize("n,tile", [(1, 4), (9, 4), (40, 8), (37, 8), (37, 64)])
def test_lower_triangle_is_the_inverse(n, tile):
    A = _spd(n, n)
    upper = np.triu(A, 1).copy()
    B = spd_inverse_lower(A.copy(), tile)
    want = np.linalg.inv(A)
    np.testing.assert_allclose(np.tril(B), np.tril(want), rtol=1e-9, atol=1e-12 * np.abs(want).max())
    # outside the diagonal tiles the upper triangle is left as it was
    bounds = tile_bounds(n, tile)
    for I in range(len(bounds) - 1):
        for J in range(I + 1, len(bounds) - 1):
            np.testing.assert_array_equal(B[bounds[I]:bounds[I + 1], bounds[J]:bounds[J + 1]],
                                          upper[bounds[I]:bounds[I + 1], bounds[J]:bounds[J + 1]])


def test_float32_matches_lapack_potri_to_round_off():
    from scipy.linalg import lapack

    A = _spd(70, 3, np.float32)
    factor, _ = lapack.spotrf(A.copy().T, lower=0, clean=1)
    lapack_inverse = lapack.spotri(factor, lower=0)[0].T
    B = spd_inverse_lower(A.copy(), 16)
    scale = np.abs(np.tril(lapack_inverse)).max()
    assert np.abs(np.tril(B) - np.tril(lapack_inverse)).max() <= 1e-4 * scale


def test_not_positive_definite_names_the_pivot():
    A = _spd(20)
    A[13, 13] = -50.0  # the 14th pivot fails, in the second tile of 8
    with pytest.raises(np.linalg.LinAlgError, match=r"pivot 14\)"):
        spd_inverse_lower(A, 8)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="square C-ordered"):
        spd_inverse_lower(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="square C-ordered"):
        spd_inverse_lower(np.asfortranarray(_spd(5)))
