"""Gramian kernels: block Gramians, their sums, counts, norms and scalings (vs dense NumPy)."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.kernels.gramian import (
    block_gramian,
    gramian_row_norms,
    icf_scaling,
    item_counts,
    permuted_lower_triangle,
    regularize,
    scale_symmetric,
    sum_gramians,
)
from shared_data import interaction_matrix_in_file_order

@st.composite
def sparse_interactions(draw, max_users=25, max_items=20):
    """A random users x items CSR matrix (binary or weighted, with empty rows/columns)."""
    n_users = draw(st.integers(1, max_users))
    n_items = draw(st.integers(1, max_items))
    n_entries = draw(st.integers(0, n_users * n_items))
    seed = draw(st.integers(0, 2**32 - 1))
    weighted = draw(st.booleans())
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_users, n_entries)
    cols = rng.integers(0, n_items, n_entries)
    vals = rng.uniform(0.1, 3.0, n_entries) if weighted else np.ones(n_entries)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_users, n_items))  # duplicates summed
    return X


def split_points(draw, n):
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=4))))
    return [0] + [c for c in cuts if 0 < c < n] + [n]


def assert_canonical(M):
    assert M.format == "csr"
    assert M.dtype == np.float64
    for r in range(M.shape[0]):
        idx = M.indices[M.indptr[r] : M.indptr[r + 1]]
        assert np.all(np.diff(idx) > 0), "indices must be sorted without duplicates"


@settings(max_examples=60, deadline=None)
@given(X=sparse_interactions(), data=st.data())
def test_row_block_gramians_sum_to_gramian(X, data):
    cuts = split_points(data.draw, X.shape[0])
    parts = [block_gramian(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    for part in parts:
        assert part.shape == (X.shape[1], X.shape[1])
        assert_canonical(part)
    G = sum_gramians(parts)
    assert_canonical(G)
    dense = X.toarray()
    np.testing.assert_allclose(G.toarray(), dense.T @ dense, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(X=sparse_interactions(), data=st.data())
def test_column_blocks_tile_the_gramian(X, data):
    n = X.shape[1]
    cuts = split_points(data.draw, n)
    dense = X.toarray()
    expected = dense.T @ dense
    blocks = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        block = block_gramian(X, col_start=a, col_stop=b)
        assert block.shape == (n, b - a)
        assert_canonical(block)
        np.testing.assert_allclose(block.toarray(), expected[:, a:b], rtol=1e-12, atol=1e-12)
        blocks.append(block)
    np.testing.assert_allclose(sp.hstack(blocks).toarray(), expected, rtol=1e-12, atol=1e-12)


def test_block_gramian_input_formats_and_explicit_zeros():
    X = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 1], [3, 0, 0]], dtype=np.int64))
    X.data[X.data == 2] = 0  # an explicit stored zero must not appear in the output pattern
    dense = X.toarray().astype(float)
    for fmt in ("csr", "csc", "coo"):
        G = block_gramian(X.asformat(fmt))
        np.testing.assert_array_equal(G.toarray(), dense.T @ dense)
        assert G.nnz == np.count_nonzero(dense.T @ dense)
    with pytest.raises(ValueError):
        block_gramian(X, col_start=2, col_stop=1)
    with pytest.raises(TypeError):
        block_gramian(dense)


def test_zero_columns_and_empty_block():
    X = sp.csr_matrix((4, 5))
    G = block_gramian(X)
    assert G.shape == (5, 5) and G.nnz == 0
    assert block_gramian(X, 1, 3).shape == (5, 2)
    norms = gramian_row_norms(G)
    np.testing.assert_array_equal(norms, np.zeros(5))
    np.testing.assert_array_equal(icf_scaling(norms), np.ones(5))
    A = regularize(G, 2.5)
    np.testing.assert_array_equal(A.toarray(), 2.5 * np.eye(5))


@settings(max_examples=40, deadline=None)
@given(X=sparse_interactions())
def test_counts_norms_and_scaling_match_dense(X):
    dense = X.toarray()
    np.testing.assert_array_equal(item_counts(X), np.count_nonzero(dense, axis=0))
    np.testing.assert_array_equal(item_counts(X.tocsc()), np.count_nonzero(dense, axis=0))
    assert item_counts(X).dtype == np.int64
    G = block_gramian(X)
    Gd = dense.T @ dense
    norms = gramian_row_norms(G)
    np.testing.assert_allclose(norms, np.linalg.norm(Gd, axis=1), rtol=1e-12)
    s = icf_scaling(norms)
    zero = np.linalg.norm(Gd, axis=1) == 0
    np.testing.assert_array_equal(s[zero], 1.0)
    np.testing.assert_allclose(s[~zero], 1.0 / np.sqrt(np.linalg.norm(Gd, axis=1)[~zero]), rtol=1e-12)
    S = scale_symmetric(G, s)
    assert_canonical(S)
    Xs = dense * s  # X̃ = X·diag(s)
    np.testing.assert_allclose(S.toarray(), Xs.T @ Xs, rtol=1e-12, atol=1e-14)
    R = regularize(S, 10.0)
    assert_canonical(R)
    np.testing.assert_allclose(R.toarray(), Xs.T @ Xs + 10.0 * np.eye(X.shape[1]), rtol=1e-12, atol=1e-14)


def test_column_block_norms_scaling_and_regularisation():
    rng = np.random.default_rng(3)
    keep = np.ones(12)
    keep[5] = 0.0  # item 5: nobody touched it
    X = (sp.random(40, 12, density=0.3, format="csr", random_state=rng) @ sp.diags(keep)).tocsr()
    X.eliminate_zeros()
    dense = X.toarray()
    Gd = dense.T @ dense
    s = icf_scaling(np.linalg.norm(Gd, axis=1))
    a, b = 3, 9
    block = block_gramian(X, a, b)
    # row norms of G for items a..b-1 from the column block alone (symmetry)
    np.testing.assert_allclose(gramian_row_norms(block.T), np.linalg.norm(Gd, axis=1)[a:b], rtol=1e-12)
    scaled = scale_symmetric(block, s, col_start=a)
    np.testing.assert_allclose(scaled.toarray(), (Gd * np.outer(s, s))[:, a:b], rtol=1e-12)
    reg = regularize(scaled, 1.5, col_start=a)
    np.testing.assert_allclose(reg.toarray(), (Gd * np.outer(s, s) + 1.5 * np.eye(12))[:, a:b], rtol=1e-12)
    with pytest.raises(ValueError):
        scale_symmetric(block, s)  # not square: col_start required
    with pytest.raises(ValueError):
        regularize(block, 1.0, col_start=10)


def test_icf_scaling_rejects_bad_norms():
    with pytest.raises(ValueError):
        icf_scaling([1.0, -1.0])
    with pytest.raises(ValueError):
        icf_scaling([np.nan])


def test_sum_gramians_tree_of_many_parts():
    rng = np.random.default_rng(0)
    parts = [sp.random(7, 7, density=0.3, format="csr", random_state=rng) for _ in range(9)]
    total = sum_gramians(parts)
    assert_canonical(total)
    np.testing.assert_allclose(total.toarray(), sum(p.toarray() for p in parts), rtol=1e-12)
    with pytest.raises(ValueError):
        sum_gramians([])
    with pytest.raises(ValueError):
        sum_gramians([sp.csr_matrix((2, 2)), sp.csr_matrix((3, 3))])


def test_ml100k_blocks_match_scipy():
    X = interaction_matrix_in_file_order("ml-100k")
    expected = (X.T @ X).toarray()
    parts = [block_gramian(X[a : a + 300]) for a in range(0, X.shape[0], 300)]
    np.testing.assert_array_equal(sum_gramians(parts).toarray(), expected)  # integer-valued: exact
    n = X.shape[1]
    np.testing.assert_array_equal(block_gramian(X, 500, 1100).toarray(), expected[:, 500:1100])
    np.testing.assert_array_equal(item_counts(X), np.asarray((X != 0).sum(axis=0)).ravel())
    assert n == 1682


@settings(max_examples=40, deadline=None)
@given(sparse_interactions(), st.integers(0, 2**32 - 1), st.booleans())
def test_permuted_lower_triangle_equals_scale_regularize_permute(X, seed, scaled):
    """One pass gives the lower triangle of A[p][:, p], A = SGS + λI, bit for bit, including
    items without interactions (no stored diagonal in G: the entry is λ)."""
    G = block_gramian(X)
    n = G.shape[0]
    p = np.random.default_rng(seed).permutation(n)
    s = icf_scaling(gramian_row_norms(G)) if scaled else None
    A = regularize(scale_symmetric(G, s) if scaled else G, 2.5).tocsr()
    want = sp.tril(A[p][:, p]).tocsc()
    want.sort_indices()
    got = permuted_lower_triangle(G, p, 2.5, s)
    assert got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(got.indices[got.indptr[:-1]], np.arange(n))  # diagonal first


def test_permuted_lower_triangle_rejects_bad_input():
    G = sp.identity(4, format="csr")
    with pytest.raises(ValueError, match="permutation"):
        permuted_lower_triangle(G, [0, 1, 1, 3], 1.0)
    with pytest.raises(ValueError, match="square"):
        permuted_lower_triangle(sp.csr_matrix((3, 4)), [0, 1, 2], 1.0)
    with pytest.raises(ValueError, match="one entry per item"):
        permuted_lower_triangle(G, [0, 1, 2, 3], 1.0, s=np.ones(3))
