"""Factorizers: CHOLMOD exact-then-prune and the numba ICF, against dense oracles."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.kernels.cholesky import NotPositiveDefiniteError, cholmod_ldlt
from dask_rec.kernels.gramian import block_gramian, gramian_row_norms, icf_scaling, regularize, scale_symmetric
from dask_rec.kernels.icf import icf_ldlt
from dask_rec.kernels.ordering import item_ordering
from shared_data import interaction_matrix_in_file_order

pytest.importorskip("sksparse.cholmod")



# ---------------------------------------------------------------------------------------------
# the oracle: a slow, obviously-correct dense twin of the ICF
# ---------------------------------------------------------------------------------------------


def icf_dense_twin(A, max_nnz, shift=0.0):
    """Dense pure-NumPy ICF with the same rules as ``icf_ldlt`` (one attempt, fixed shift).

    Returns ``(L_hat, None)`` (lower triangular, LLᵀ form) or ``(None, j)`` if pivot j fails.
    Column j: ``w = A[j+1:, j] - L[j+1:, :j] @ L[j, :j]``; pivot ``dd[j]``, where ``dd`` starts
    at ``diag(A) + shift`` and loses the square of every computed entry of its row; keep the
    ``(max(max_nnz, n) - n - stored_so_far) // (n - j)`` largest non-zero entries, ties by row.
    """
    A = np.asarray(A, dtype=np.float64)
    n = A.shape[0]
    L = np.zeros((n, n))
    dd = np.diag(A).copy() + shift
    total = max(max_nnz, n)
    stored = 0
    for j in range(n):
        w = A[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]
        if not dd[j] > 0:
            return None, j
        ljj = np.sqrt(dd[j])
        L[j, j] = ljj
        col = w / ljj
        dd[j + 1 :] -= col * col
        rows = np.flatnonzero(col)
        budget = (total - n - stored) // (n - j)
        order = np.lexsort((rows, -np.abs(col[rows])))  # by magnitude desc, then row asc
        keep = rows[order[:budget]]
        L[j + 1 + keep, j] = col[keep]
        stored += len(keep)
    return L, None


def random_spd(n, density, seed, ridge=0.5):
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=density, random_state=rng)
    return (B @ B.T + ridge * sp.eye(n)).tocsc()


def load_gramian(name: str, l2: float, icf: bool):
    X = interaction_matrix_in_file_order(name)
    G = block_gramian(X)
    if icf:
        G = scale_symmetric(G, icf_scaling(gramian_row_norms(G)))
    return X, regularize(G, l2)


def ldlt_dense(L, d):
    Ld = L.toarray().astype(np.float64)
    return (Ld * d) @ Ld.T


def assert_unit_lower_csc(L, n):
    assert L.format == "csc" and L.dtype == np.float32 and L.shape == (n, n)
    assert L.has_sorted_indices
    for j in range(n):
        rows = L.indices[L.indptr[j] : L.indptr[j + 1]]
        assert rows[0] == j, "the unit diagonal is stored, first in its column"
        assert np.all(np.diff(rows) > 0)
    assert np.all(L.diagonal() == 1.0)
    assert sp.triu(L, k=1).nnz == 0


# ---------------------------------------------------------------------------------------------
# CHOLMOD
# ---------------------------------------------------------------------------------------------


def test_cholmod_full_budget_reproduces_A():
    A = random_spd(80, 0.08, seed=0)
    started = time.perf_counter()
    L, d, stats = cholmod_ldlt(A, max_nnz=80 * 80)
    elapsed = time.perf_counter() - started
    assert_unit_lower_csc(L, 80)
    assert d.dtype == np.float64 and np.all(d > 0)
    assert stats["factor_nnz"] == L.nnz
    assert 0 <= stats["seconds"] <= elapsed  # the call's own time, not a stale or summed figure
    Ad = A.toarray()
    assert np.abs(ldlt_dense(L, d) - Ad).max() / np.abs(Ad).max() < 1e-5


def test_cholmod_ml100k_full_fill_reproduces_A():
    X, A = load_gramian("ml-100k", l2=10.0, icf=False)
    p = item_ordering("colamd", X=X)
    A_p = A[p][:, p].tocsc()
    n = A_p.shape[0]
    L, d, stats = cholmod_ldlt(A_p, max_nnz=n * n)
    Ad = A_p.toarray()
    assert np.abs(ldlt_dense(L, d) - Ad).max() / np.abs(Ad).max() < 1e-5
    assert stats["factor_nnz"] == L.nnz


def test_cholmod_pruning_keeps_diagonal_and_largest():
    A = random_spd(120, 0.05, seed=1)
    full, d_full, _ = cholmod_ldlt(A, max_nnz=120 * 120)
    budget = 600
    L, d, stats = cholmod_ldlt(A, max_nnz=budget)
    assert_unit_lower_csc(L, 120)
    np.testing.assert_array_equal(d, d_full)  # d comes from the exact factor's diagonal
    assert stats["factor_nnz"] == full.nnz
    assert L.nnz <= budget + 2  # ties at the cut are kept (none expected on random data)
    assert L.nnz >= budget
    # the kept entries are the largest of L̂ = L·diag(sqrt(d)), compared as float32 magnitudes
    L_hat_full = (full.astype(np.float64) @ sp.diags(np.sqrt(d_full))).tocsc()
    L_hat_kept = (L.astype(np.float64) @ sp.diags(np.sqrt(d))).tocsc()
    off_full = np.abs(sp.tril(L_hat_full, k=-1).tocoo())
    kept = sp.tril(L_hat_kept, k=-1).tocoo()
    kept_set = set(zip(kept.row.tolist(), kept.col.tolist()))
    mags = off_full.data.astype(np.float32)
    is_kept = np.array([(r, c) in kept_set for r, c in zip(off_full.row, off_full.col)])
    assert is_kept.sum() == kept.nnz
    assert mags[is_kept].min() >= mags[~is_kept].max()


def test_cholmod_below_n_keeps_only_the_diagonal():
    A = random_spd(30, 0.1, seed=2)
    L, d, _ = cholmod_ldlt(A, max_nnz=5)
    assert L.nnz == 30
    np.testing.assert_array_equal(L.toarray(), np.eye(30, dtype=np.float32))


def test_cholmod_not_positive_definite_is_a_clear_error():
    A = sp.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(NotPositiveDefiniteError, match="l2"):
        cholmod_ldlt(A, 9)
    with pytest.raises(np.linalg.LinAlgError):
        cholmod_ldlt(sp.csc_matrix((3, 3)), 9)
    with pytest.raises(ValueError):
        cholmod_ldlt(A, -1)


# ---------------------------------------------------------------------------------------------
# ICF
# ---------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 2**31))
def test_icf_full_budget_is_exact_cholesky(n, density, seed):
    A = random_spd(n, density, seed)
    L, d, stats = icf_ldlt(A, max_nnz=n * n)
    assert stats["shift"] == 0.0 and stats["attempts"] == 0
    assert_unit_lower_csc(L, n)
    exact = np.linalg.cholesky(A.toarray())
    np.testing.assert_allclose(d, np.diag(exact) ** 2, rtol=1e-10)
    np.testing.assert_allclose(L.toarray(), exact / np.diag(exact), rtol=2e-6, atol=1e-6)


def test_icf_full_budget_matches_cholmod_on_ml100k():
    X, A = load_gramian("ml-100k", l2=10.0, icf=True)
    p = item_ordering("popularity", X=X)
    A_p = A[p][:, p].tocsc()
    n = A_p.shape[0]
    L, d, stats = icf_ldlt(A_p, max_nnz=n * n)
    assert stats["attempts"] == 0
    L_c, d_c, _ = cholmod_ldlt(A_p, max_nnz=n * n)
    np.testing.assert_allclose(d, d_c, rtol=1e-8)
    assert abs(L - L_c).max() < 1e-5
    Ad = A_p.toarray()
    assert np.abs(ldlt_dense(L, d) - Ad).max() / np.abs(Ad).max() < 1e-5


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 45),
    density=st.floats(0.02, 0.4),
    seed=st.integers(0, 2**31),
    fraction=st.floats(0.0, 1.0),
)
def test_icf_budget_equals_dense_twin(n, density, seed, fraction):
    # a strongly regularised SPD matrix, so that no shift is needed for any budget
    A = random_spd(n, density, seed, ridge=5.0)
    max_nnz = n + int(fraction * n * (n - 1) / 2)
    L, d, stats = icf_ldlt(A, max_nnz=max_nnz)
    twin, failed = icf_dense_twin(A.toarray(), max_nnz)
    if failed is not None:  # the twin's pivot broke down: the kernel must have restarted
        assert stats["attempts"] > 0
        return
    assert stats["attempts"] == 0
    assert L.nnz <= max(max_nnz, n)
    assert_unit_lower_csc(L, n)
    np.testing.assert_allclose(d, np.diag(twin) ** 2, rtol=1e-10)
    expected = twin / np.diag(twin)
    # the same entries, the same values
    np.testing.assert_array_equal(L.toarray() != 0, expected != 0)
    np.testing.assert_allclose(L.toarray(), expected.astype(np.float32), rtol=1e-6, atol=1e-7)


def test_icf_budget_on_ml100k_equals_twin():
    X, A = load_gramian("ml-100k", l2=10.0, icf=True)
    p = item_ordering("popularity", X=X)
    A_p = A[p][:, p].tocsc()
    # the twin is dense O(n³): use the 400 most popular items (the trailing block of A_p)
    A_s = A_p[-400:, -400:].tocsc()
    max_nnz = int(np.ceil(0.05 * 400 * 400))
    L, d, stats = icf_ldlt(A_s, max_nnz)
    twin, failed = icf_dense_twin(A_s.toarray(), max_nnz)
    assert failed is None and stats["attempts"] == 0
    assert L.nnz <= max_nnz
    np.testing.assert_allclose(d, np.diag(twin) ** 2, rtol=1e-10)
    np.testing.assert_array_equal(L.toarray() != 0, twin != 0)
    np.testing.assert_allclose(L.toarray(), (twin / np.diag(twin)).astype(np.float32), rtol=1e-6, atol=1e-7)


def test_icf_ties_keep_smaller_rows():
    n = 8
    A = np.eye(n) * 10.0
    A[1:, 0] = A[0, 1:] = 1.0  # column 0: seven equal candidates
    A[5, 3] = A[3, 5] = 2.0
    max_nnz = n + 3 * n  # column 0 may keep floor(3n / n) = 3 entries
    L, d, _ = icf_ldlt(sp.csc_matrix(A), max_nnz)
    col0 = L.indices[L.indptr[0] : L.indptr[1]]
    np.testing.assert_array_equal(col0, [0, 1, 2, 3])
    twin, _ = icf_dense_twin(A, max_nnz)
    np.testing.assert_array_equal(L.toarray() != 0, twin != 0)


def test_icf_dropped_entries_update_the_diagonal():
    # column 0 has two off-diagonal entries; with room for none, both are dropped, but row
    # 1's and row 2's pivots still lose their squares.
    A = np.array([[4.0, 2.0, 1.0], [2.0, 5.0, 0.0], [1.0, 0.0, 6.0]])
    L, d, _ = icf_ldlt(sp.csc_matrix(A), max_nnz=3)
    assert L.nnz == 3
    np.testing.assert_allclose(d, [4.0, 5.0 - 1.0, 6.0 - 0.25])


def test_icf_lower_triangle_input_is_enough():
    A = random_spd(30, 0.15, seed=7)
    full = icf_ldlt(A, 200)
    lower = icf_ldlt(sp.tril(A).tocsc(), 200)
    csr = icf_ldlt(A.tocsr(), 200)
    for other in (lower, csr):
        assert abs(full[0] - other[0]).max() == 0
        np.testing.assert_array_equal(full[1], other[1])


def test_icf_below_n_is_diagonal():
    A = random_spd(20, 0.2, seed=8, ridge=20.0)
    L, d, stats = icf_ldlt(A, 0)
    assert stats["attempts"] == 0
    np.testing.assert_array_equal(L.toarray(), np.eye(20, dtype=np.float32))
    twin, _ = icf_dense_twin(A.toarray(), 0)
    np.testing.assert_allclose(d, np.diag(twin) ** 2, rtol=1e-12)  # dropped entries still count
    assert np.all(d <= A.diagonal())


def test_icf_indefinite_matrix_restarts_with_shift(caplog):
    A = sp.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.5, 2.0]]))
    with caplog.at_level(logging.WARNING, logger="dask_rec.kernels.icf"):
        L, d, stats = icf_ldlt(A, max_nnz=9, shift_step=1e-3, shift_multiplier=2.0)
    # pivot 1 is 1 + s - 4/(1 + s) > 0 once s > 1, then pivot 2 = 2 + s - 0.25/pivot1 needs
    # s > ~1.2: restarts with s = 1e-3 * 2**a, a = 0..11, the last one (2.048) succeeds
    assert stats["attempts"] == 12
    assert stats["shift"] == pytest.approx(1e-3 * 2**11)
    assert sum("restarting" in r.message for r in caplog.records) == 12
    shifted = A.toarray() + stats["shift"] * np.eye(3)
    np.testing.assert_allclose(ldlt_dense(L, d), shifted, rtol=1e-6, atol=1e-6)
    exact = np.linalg.cholesky(shifted)
    np.testing.assert_allclose(d, np.diag(exact) ** 2, rtol=1e-10)


def test_icf_gives_up_after_max_attempts():
    A = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(NotPositiveDefiniteError, match="after 3 restarts"):
        icf_ldlt(A, 4, max_attempts=3)
    with pytest.raises(NotPositiveDefiniteError):
        icf_ldlt(sp.csc_matrix((2, 2)), 4, max_attempts=0)  # zero diagonal, no restarts
    with pytest.raises(ValueError):
        icf_ldlt(A, 4, shift_step=0.0)
    with pytest.raises(ValueError):
        icf_ldlt(A, 4, shift_multiplier=0.5)


def test_icf_and_cholmod_agree_in_format():
    A = random_spd(25, 0.2, seed=9, ridge=2.0)
    Li, di, si = icf_ldlt(A, 120)
    Lc, dc, sc = cholmod_ldlt(A, 120)
    for L in (Li, Lc):
        assert_unit_lower_csc(L, 25)
        assert L.nnz <= 120
    assert set(si) >= {"shift", "attempts", "seconds"}
    assert set(sc) >= {"factor_nnz", "seconds"}
