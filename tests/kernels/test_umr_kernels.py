"""Column-block kernels of the inverse of L: UMR update, residual norms, exact solve, local cap.

Each numba kernel is checked against a dense NumPy twin written straight from the maths.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_rec.kernels.exact_inverse import exact_inverse_block
from dask_rec.kernels.umr import cap_block, changed_columns, initial_block, residual_norms, umr_update_block

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# inputs and dense twins
# ---------------------------------------------------------------------------------------------


def random_unit_lower(n: int, density: float, scale: float, seed: int) -> sp.csc_matrix:
    """Unit lower triangular, float32, unit diagonal stored, sorted indices."""
    rng = np.random.default_rng(seed)
    A = np.tril(rng.standard_normal((n, n)) * (rng.random((n, n)) < density), -1) * scale
    L = sp.csc_matrix((A + np.eye(n)).astype(np.float32))
    L.sort_indices()
    return L


def random_lower_block(n: int, start: int, width: int, density: float, seed: int) -> sp.csc_matrix:
    """A lower triangular block of some M (rows >= global column), unit diagonal, float32."""
    rng = np.random.default_rng(seed + 1)
    B = rng.standard_normal((n, width)) * (rng.random((n, width)) < density)
    rows = np.arange(n)[:, None]
    cols = np.arange(start, start + width)[None, :]
    B[rows < cols] = 0.0
    B[rows == cols] = 1.0
    M = sp.csc_matrix(B.astype(np.float32))
    M.sort_indices()
    return M


def dense_umr_update(L: np.ndarray, M: np.ndarray, col_start: int, columns, skip_below: float):
    """The NumPy twin of :func:`umr_update_block` (float64 throughout)."""
    n = L.shape[0]
    M = M.astype(np.float64).copy()
    norms = np.full(M.shape[1], np.nan)
    for c in columns:
        e = np.zeros(n)
        e[col_start + c] = 1.0
        r = e - L @ M[:, c]
        q = L @ r
        norms[c] = np.linalg.norm(r)
        if norms[c] > 0 and norms[c] >= skip_below and q @ q > 0:
            M[:, c] += (r @ q) / (q @ q) * r
    return M, norms


def dense_cap(M: np.ndarray, col_start: int, cap: int) -> np.ndarray:
    """Keep the diagonal and the ``cap`` largest off-diagonal magnitudes (ties at the cut)."""
    M = M.copy()
    rows, cols = np.nonzero(M)
    off = rows != cols + col_start
    mags = np.abs(M[rows[off], cols[off]])
    if mags.size > cap:
        cut = np.inf if cap == 0 else np.sort(mags)[::-1][cap - 1]
        drop = mags < cut
        M[rows[off][drop], cols[off][drop]] = 0.0
    return M


@st.composite
def block_problems(draw):
    n = draw(st.integers(1, 40))
    density = draw(st.sampled_from([0.05, 0.2, 0.6]))
    scale = draw(st.sampled_from([0.1, 0.5, 1.5]))
    seed = draw(st.integers(0, 2**31 - 1))
    start = draw(st.integers(0, n - 1))
    width = draw(st.integers(1, n - start))
    columns = draw(st.lists(st.integers(0, width - 1), unique=True, max_size=width))
    return n, density, scale, seed, start, width, sorted(columns)


# ---------------------------------------------------------------------------------------------
# UMR column update
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(block_problems(), st.booleans())
def test_umr_update_matches_dense_twin(problem, from_schulz):
    n, density, scale, seed, start, width, columns = problem
    L = random_unit_lower(n, density, scale, seed)
    if from_schulz:
        M = initial_block(L, start, start + width)
    else:
        M = random_lower_block(n, start, width, density, seed)
    out, norms, n_updated = umr_update_block(L, M, start, columns)
    want, want_norms = dense_umr_update(L.toarray().astype(np.float64), M.toarray(), start, columns, -1.0)

    assert out.dtype == np.float32 and out.shape == (n, width) and out.has_sorted_indices
    scale_ = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(out.toarray(), want, rtol=2e-6, atol=2e-6 * scale_)
    np.testing.assert_allclose(norms, want_norms, rtol=1e-9, atol=1e-12)
    untouched = np.setdiff1d(np.arange(width), columns)
    assert (out[:, untouched] != M[:, untouched]).nnz == 0  # other columns bit-identical
    assert n_updated <= len(columns)
    global_cols = np.repeat(np.arange(start, start + width), np.diff(out.indptr))
    zeros = out.data == 0
    assert np.all(out.indices[zeros] == global_cols[zeros])  # explicit zeros only on the diagonal


@SETTINGS
@given(block_problems(), st.floats(0.0, 3.0))
def test_umr_skip_threshold(problem, skip_below):
    n, density, scale, seed, start, width, columns = problem
    L = random_unit_lower(n, density, scale, seed)
    M = initial_block(L, start, start + width)
    out, norms, n_updated = umr_update_block(L, M, start, columns, skip_below=skip_below)
    want, _ = dense_umr_update(L.toarray().astype(np.float64), M.toarray(), start, columns, skip_below)
    np.testing.assert_allclose(out.toarray(), want, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(want).max()))
    skipped = [c for c in columns if norms[c] < skip_below]
    assert (out[:, skipped] != M[:, skipped]).nnz == 0


def test_umr_update_reduces_each_column_residual():
    L = random_unit_lower(60, 0.2, 0.8, 3)
    M = initial_block(L, 0, 60)
    before = residual_norms(L, M, 0)
    out, norms, _ = umr_update_block(L, M, 0)
    after = residual_norms(L, out, 0)
    np.testing.assert_allclose(norms, before, rtol=1e-12)
    assert np.all(after <= before * (1 + 1e-6) + 1e-7)
    assert after.sum() < before.sum()
    np.testing.assert_array_equal(out.diagonal(), np.ones(60, np.float32))  # unit diagonal kept


def test_initial_block_is_one_schulz_step():
    L = random_unit_lower(30, 0.3, 1.0, 7)
    M = sp.hstack([initial_block(L, s, min(s + 7, 30)) for s in range(0, 30, 7)]).toarray()
    np.testing.assert_array_equal(M, 2 * np.eye(30, dtype=np.float32) - L.toarray())


@SETTINGS
@given(block_problems())
def test_residual_norms_match_dense(problem):
    n, density, scale, seed, start, width, _ = problem
    L = random_unit_lower(n, density, scale, seed)
    M = random_lower_block(n, start, width, density, seed)
    E = np.eye(n)[:, start : start + width]
    want = np.linalg.norm(E - L.toarray().astype(np.float64) @ M.toarray().astype(np.float64), axis=0)
    np.testing.assert_allclose(residual_norms(L, M, start), want, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(block_problems(), st.integers(0, 2**32 - 1))
def test_residual_norms_of_some_columns_equal_those_of_all(problem, seed):
    n, density, scale, seed_, start, width, _ = problem
    L = random_unit_lower(n, density, scale, seed_)
    M = random_lower_block(n, start, width, density, seed_)
    cols = np.random.default_rng(seed).permutation(width)[: max(1, width // 2)]
    np.testing.assert_array_equal(residual_norms(L, M, start, cols), residual_norms(L, M, start)[cols])
    with pytest.raises(ValueError, match="local column indices"):
        residual_norms(L, M, start, [width])


def test_changed_columns_finds_pattern_and_value_changes():
    L = random_unit_lower(40, 0.2, 0.8, 5)
    M = initial_block(L, 10, 20)
    assert not changed_columns(M, M.copy()).any()
    other = M.tolil()
    other[35, 3] = 0.5  # a new entry in local column 3
    B = other.tocsc()
    B.sort_indices()
    C = M.copy()
    C.data[C.indptr[7]] += 1.0  # a changed value in local column 7
    np.testing.assert_array_equal(np.flatnonzero(changed_columns(M, B)), [3])
    np.testing.assert_array_equal(np.flatnonzero(changed_columns(M, C)), [7])
    with pytest.raises(ValueError, match="different shapes"):
        changed_columns(M, M[:, :5])


def test_update_without_change_returns_the_block_uncapped():
    L = random_unit_lower(50, 0.2, 0.8, 9)
    M = initial_block(L, 0, 50)
    out, norms, n_updated = umr_update_block(L, M, 0, skip_below=np.inf, cap=0)
    assert n_updated == 0 and np.isnan(norms).sum() == 0
    np.testing.assert_array_equal(out.toarray(), M.toarray())  # not capped to its diagonal


# ---------------------------------------------------------------------------------------------
# local cap (streaming compaction equals capping the finished block)
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(block_problems(), st.integers(0, 60))
def test_capped_update_equals_cap_of_uncapped(problem, cap):
    n, density, scale, seed, start, width, columns = problem
    L = random_unit_lower(n, density, scale, seed)
    M = random_lower_block(n, start, width, density, seed)
    full, _, n_updated = umr_update_block(L, M, start, columns)
    capped, _, _ = umr_update_block(L, M, start, columns, cap=cap)
    if n_updated == 0:  # no column changed: the block comes back as it was, uncapped
        np.testing.assert_array_equal(capped.toarray(), M.toarray())
        return
    np.testing.assert_array_equal(capped.toarray(), cap_block(full, start, cap).toarray())
    np.testing.assert_array_equal(capped.toarray(), dense_cap(full.toarray(), start, cap))


def test_streaming_compaction_path():
    # enough fill that the buffer is compacted several times while the block is built
    L = random_unit_lower(400, 0.1, 0.7, 11)
    M = initial_block(L, 0, 400)
    full, _, _ = umr_update_block(L, M, 0)
    for cap in (0, 50, 300):
        capped, _, _ = umr_update_block(L, M, 0, cap=cap)
        np.testing.assert_array_equal(capped.toarray(), dense_cap(full.toarray(), 0, cap))
        off = capped.nnz - 400
        assert off >= min(cap, full.nnz - 400)


# ---------------------------------------------------------------------------------------------
# exact inverse
# ---------------------------------------------------------------------------------------------


@SETTINGS
@given(block_problems())
def test_exact_block_matches_dense_inverse(problem):
    n, density, scale, seed, start, width, _ = problem
    L = random_unit_lower(n, density, min(scale, 0.5), seed)
    out = exact_inverse_block(L, start, start + width)
    want = np.linalg.inv(L.toarray().astype(np.float64))[:, start : start + width]
    assert out.dtype == np.float32 and out.has_sorted_indices
    np.testing.assert_allclose(out.toarray(), want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()))


def test_exact_block_is_sparse_and_capped():
    # block diagonal L: the inverse keeps the blocks, the solve never touches other rows
    blocks = [random_unit_lower(5, 0.8, 0.5, s).toarray() for s in range(4)]
    L = sp.csc_matrix(sp.block_diag(blocks).toarray().astype(np.float32))
    L.sort_indices()
    out = exact_inverse_block(L, 0, 20)
    np.testing.assert_allclose(out.toarray(), sp.block_diag([np.linalg.inv(b) for b in blocks]).toarray(), atol=1e-6)
    assert out.nnz <= 4 * 15
    capped = exact_inverse_block(L, 0, 20, cap=7)
    np.testing.assert_array_equal(capped.toarray(), dense_cap(out.toarray(), 0, 7))


def test_cap_none_is_identity():
    L = random_unit_lower(20, 0.3, 1.0, 5)
    M = initial_block(L, 4, 12)
    assert cap_block(M, 4, None) is M or (cap_block(M, 4, None) != M).nnz == 0


def test_rejects_bad_inputs():
    L = random_unit_lower(10, 0.3, 1.0, 1)
    with pytest.raises(TypeError):
        umr_update_block(L.toarray(), initial_block(L, 0, 5), 0)
    with pytest.raises(ValueError):
        umr_update_block(L, initial_block(L, 0, 5)[:8], 0)
