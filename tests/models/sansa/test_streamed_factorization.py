"""The Gramian's lower triangle in column blocks, and the ICF read from them block by block.

Oracles: the assembled path (``block_gramian`` → ``permuted_lower_triangle`` → ``icf_ldlt``,
i.e. :func:`dask_rec.kernels.factorization.factorize_gramian`) and scipy's dense upper triangle.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.config import ICFGramianFactorizerConfig
from dask_rec.kernels.factorization import factorize_gramian, factorize_lower_gramian
from dask_rec.stages.gramian import lower_column_bound, plan_lower_blocks
from dask_rec.stages.gramian_store import LowerGramian, create_lower_gramian, read_block, write_block
from dask_rec.kernels.gramian import (
    block_gramian,
    item_counts,
    permute_items,
    sum_gramians,
    upper_gramian_rows,
    upper_row_work,
)
from dask_rec.kernels.icf import icf_ldlt, icf_ldlt_streamed
from dask_rec.kernels.ordering import item_ordering


def _interactions(n_users=400, n_items=150, density=0.05, seed=0, weighted=False):
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, random_state=seed, format="csr")
    X.data = rng.integers(1, 4, X.nnz).astype(np.float64) if weighted else np.ones(X.nnz)
    return X


@pytest.mark.parametrize("bounds", [(0, 150), (7, 55), (140, 150), (5, 5)])
def test_upper_gramian_rows_equal_the_dense_upper_triangle(bounds):
    X = _interactions(weighted=True)
    U = sp.triu(block_gramian(X)).tocsr()
    a, b = bounds
    B = upper_gramian_rows(X, a, b)
    assert B.shape == (b - a, 150)
    np.testing.assert_array_equal(B.indptr, U[a:b].indptr)
    np.testing.assert_array_equal(B.indices, U[a:b].indices)
    np.testing.assert_array_equal(B.data, U[a:b].data)


def test_upper_row_work_bounds_the_rows_and_permute_items_is_a_column_permutation():
    X = _interactions()
    U = sp.triu(block_gramian(X)).tocsr()
    work = upper_row_work(X)
    assert np.all(work >= np.diff(U.indptr))
    # products summed into row i: sum over users of item i of their items k >= i
    dense = X.toarray() > 0
    expected = [sum(dense[u, i:].sum() for u in np.flatnonzero(dense[:, i])) for i in range(X.shape[1])]
    np.testing.assert_array_equal(work, expected)
    p = np.random.default_rng(1).permutation(X.shape[1])
    q = np.empty_like(p)
    q[p] = np.arange(p.size)
    before = X.copy()
    Xp = permute_items(X, q)
    assert abs(Xp - X[:, p]).sum() == 0 and Xp.has_sorted_indices
    assert abs(X - before).sum() == 0  # the input is not modified


def test_icf_streamed_in_blocks_equals_icf_ldlt():
    X = _interactions(n_items=300, density=0.08, seed=3)
    G = block_gramian(X) + 5.0 * sp.eye(300)
    A = sp.tril(G).tocsc()
    n = A.shape[0]
    for budget in (n, 4 * n, 40 * n):
        L0, d0, _ = icf_ldlt(A, budget)

        def columns(size=37):
            for a in range(0, n, size):
                b = min(a + size, n)
                lo, hi = A.indptr[a], A.indptr[b]
                yield a, b, A.indptr[a:b + 1] - lo, A.indices[lo:hi], A.data[lo:hi]

        L1, d1, _ = icf_ldlt_streamed(columns, n, A.diagonal(), budget)
        np.testing.assert_array_equal(L0.indptr, L1.indptr)
        np.testing.assert_array_equal(L0.indices, L1.indices)
        np.testing.assert_array_equal(L0.data, L1.data)
        np.testing.assert_array_equal(d0, d1)


def test_icf_streamed_rejects_blocks_that_do_not_tile():
    def columns():
        yield 0, 2, np.array([0, 0, 0]), np.array([], np.int32), np.array([])

    with pytest.raises(ValueError, match="tile"):
        icf_ldlt_streamed(columns, 3, np.ones(3), 3)


def test_plan_lower_blocks_respects_the_task_memory_and_refuses_a_column_that_cannot_fit():
    from dask_rec.exceptions import InsufficientMemoryError

    bound = np.array([100, 80, 60, 40, 20, 10], dtype=np.int64)
    per_entry = 10 * 12  # fan-in 8 partials + 2
    blocks = plan_lower_blocks(bound, 16 * 6 + per_entry * 150, fan_in=8)
    assert blocks[0][0] == 0 and blocks[-1][1] == 6
    assert all(bound[a:b].sum() <= 150 or b - a == 1 for a, b in blocks)
    assert len(blocks) > 1
    with pytest.raises(InsufficientMemoryError, match="stage gramian"):
        plan_lower_blocks(bound, 16 * 6 + per_entry * 50, fan_in=8)


@pytest.mark.parametrize("ordering", ["popularity", "natural"])
@pytest.mark.parametrize("on_disk", [False, True])
def test_factorization_from_lower_blocks_is_bit_identical_to_the_assembled_path(tmp_path, ordering, on_disk):
    X = _interactions(n_users=600, n_items=220, density=0.06, seed=5)
    n = X.shape[1]
    row_blocks = [X[a:a + 150] for a in range(0, X.shape[0], 150)]
    config = ICFGramianFactorizerConfig(reordering_method=ordering)
    counts = sum(item_counts(b) for b in row_blocks)
    # the assembled path: whole Gramian in the original order
    G = sum_gramians([block_gramian(b) for b in row_blocks])
    expected = factorize_gramian([G], l2=10.0, density=0.05, factorizer_config=config, item_counts=counts)
    # the streamed path: row blocks in the fit's order, lower column blocks planned from the bound
    p = item_ordering(ordering, item_counts=counts) if ordering == "popularity" else np.arange(n)
    q = np.empty(n, np.int64)
    q[p] = np.arange(n)
    permuted = [permute_items(b, q) for b in row_blocks]
    bound = lower_column_bound(sum(upper_row_work(b) for b in permuted))
    bounds = plan_lower_blocks(bound, 0, item_block_size=23)
    blocks = [sum_gramians([upper_gramian_rows(b, a, z) for b in permuted]) for a, z in bounds]
    nnz = sum(b.nnz for b in blocks)
    if on_disk:
        path = create_lower_gramian(tmp_path, n, bounds, p, ordering)
        assert sum(write_block(path, c, b) for c, b in enumerate(blocks)) == nnz
        for c, b in enumerate(blocks):
            assert (read_block(path, c) != b).nnz == 0
        lower = LowerGramian(n_items=n, bounds=bounds, order=p, path=path, nnz=nnz)
    else:
        lower = LowerGramian(n_items=n, bounds=bounds, order=p, handles=blocks, nnz=nnz)
    got = factorize_lower_gramian(lower, l2=10.0, density=0.05, factorizer_config=config)
    np.testing.assert_array_equal(got.p, expected.p)
    np.testing.assert_array_equal(got.d, expected.d)
    np.testing.assert_array_equal(got.L.indptr, expected.L.indptr)
    np.testing.assert_array_equal(got.L.indices, expected.L.indices)
    np.testing.assert_array_equal(got.L.data, expected.L.data)
    assert got.stats["gramian_nnz"] == G.nnz


def test_upper_gramian_rows_with_a_given_csc_copy_equals_the_converted_one():
    from dask_rec.kernels.gramian import canonical_rows

    X = canonical_rows(_interactions(weighted=True))
    got = upper_gramian_rows(X, 20, 90, X_columns=X.tocsc())
    assert (got != upper_gramian_rows(X, 20, 90)).nnz == 0
    with pytest.raises(ValueError, match="X_columns"):
        upper_gramian_rows(X, 20, 90, X_columns=X[:, :-1].tocsc())
