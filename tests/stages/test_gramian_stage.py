"""The Gramian stage: XᵀX summed over row blocks in item column blocks, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.data.blocks import as_row_block_source
from dask_rec.executor import InProcessExecutor, executor_for
from dask_rec.stages.gramian import item_column_blocks, reduce_gramian, reduce_item_counts
from oracles import random_interactions


def test_item_column_blocks():
    assert item_column_blocks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert item_column_blocks(5) == [(0, 5)]


@pytest.mark.parametrize("item_block_size, fan_in", [(None, 8), (3, 2), (7, 3)])
def test_reduce_gramian_equals_scipy(rng, item_block_size, fan_in):
    X = random_interactions(rng, 90, 17, 0.2)
    X.data = rng.integers(1, 4, X.nnz).astype(np.float32)  # non-binary values
    ex = InProcessExecutor()
    blocks = as_row_block_source(X, rows_per_block=10).block_handles(ex)
    parts = reduce_gramian(ex, blocks, 17, item_block_size=item_block_size, fan_in=fan_in)
    assert [(a, b) for a, b, _ in parts] == item_column_blocks(17, item_block_size)
    G = sp.hstack([h for _, _, h in parts], format="csr")
    expected = (X.T @ X).astype(np.float64).toarray()
    np.testing.assert_allclose(G.toarray(), expected, rtol=0, atol=0)  # integer sums: exact
    counts = ex.gather(reduce_item_counts(ex, blocks, fan_in=fan_in))
    np.testing.assert_array_equal(counts, np.bincount(X.indices, minlength=17))


def test_reduce_gramian_refuses_a_fan_in_below_two(rng):
    X = random_interactions(rng, 10, 4, 0.5)
    ex = InProcessExecutor()
    with pytest.raises(ValueError, match="fan-in must be >= 2"):
        reduce_gramian(ex, as_row_block_source(X).block_handles(ex), 4, fan_in=1)


@pytest.mark.cluster
def test_cluster_gramian_is_the_in_process_one(rng, local_client):
    X = random_interactions(rng, 120, 15, 0.2)
    source = as_row_block_source(X, rows_per_block=13)
    results = []
    for ex in (InProcessExecutor(), executor_for(local_client)):
        parts = reduce_gramian(ex, source.block_handles(ex), 15, item_block_size=4, fan_in=2)
        results.append(sp.hstack(ex.gather([h for _, _, h in parts]), format="csr").toarray())
    np.testing.assert_array_equal(results[0], results[1])
