"""Row blocks of in-memory data and of a store: the handles every training stage reads."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.data.blocks import as_row_block_source, default_rows_per_block, uniform_bounds
from dask_rec.data.store_writer import write_store
from dask_rec.executor import InProcessExecutor
from oracles import random_interactions


def test_uniform_bounds():
    np.testing.assert_array_equal(uniform_bounds(10, 3), [0, 3, 6, 9, 10])
    np.testing.assert_array_equal(uniform_bounds(6, 3), [0, 3, 6])
    np.testing.assert_array_equal(uniform_bounds(2, 5), [0, 2])
    np.testing.assert_array_equal(uniform_bounds(0, 4), [0])


def test_default_rows_per_block_follows_the_target():
    with dask.config.set({"dask_rec.blocks.target-nnz": 100}):
        assert default_rows_per_block(1000, 5000) == 20  # 5 entries a row
        assert default_rows_per_block(10, 10) == 10  # never more rows than there are
        assert default_rows_per_block(1000, 10**6) == 1  # at least one row


def test_matrix_blocks_are_its_row_slices(rng):
    X = random_interactions(rng, 50, 12, 0.2)
    source = as_row_block_source(X, rows_per_block=8)
    assert source.shape == X.shape and source.nnz == X.nnz and source.store is None
    np.testing.assert_array_equal(source.bounds, [0, 8, 16, 24, 32, 40, 48, 50])
    blocks = source.block_handles(InProcessExecutor())
    assert len(blocks) == source.n_blocks == 7
    assert (sp.vstack(blocks) != X).nnz == 0


def test_store_blocks_are_read_from_the_store(rng, tmp_path):
    X = random_interactions(rng, 40, 10, 0.3)
    store = write_store(tmp_path / "s.zarr", X, rows_per_block=15)
    source = as_row_block_source(str(tmp_path / "s.zarr"))  # a path opens the store
    assert source.store is not None and source.matrix is None
    np.testing.assert_array_equal(source.bounds, store.block_bounds)
    blocks = source.block_handles(InProcessExecutor())
    assert [b.shape[0] for b in blocks] == [15, 15, 10]
    assert (sp.vstack(blocks) != X).nnz == 0
    with pytest.raises(ValueError, match="rows_per_block applies to in-memory data"):
        as_row_block_source(store, rows_per_block=5)
