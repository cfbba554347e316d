"""EASE against the dense NumPy closed form, its memory check, cluster parity and the contract."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import RecommenderConformance, small_interactions
from dask_rec.models.ease import EASE, EASEConfig


class TestEASE(RecommenderConformance):
    def make_model(self):
        return EASE(EASEConfig(l2=3.0))


class TestEASEFloat64(RecommenderConformance):
    def make_model(self):
        return EASE(EASEConfig(l2=3.0, dtype="float64"))


def numpy_ease(X, l2):
    """EASE as Steck's paper writes it, with a general inverse."""
    A = X.toarray().astype(np.float64)
    P = np.linalg.inv(A.T @ A + l2 * np.eye(A.shape[1]))
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-6)])
@pytest.mark.parametrize("tiled", [False, True])
def test_weights_equal_dense_numpy_over_column_blocks(dtype, tol, tiled, monkeypatch):
    import dask

    import dask_rec.kernels.ease as kernel

    monkeypatch.setattr(kernel, "BAND", 7)  # several bands in the copy and the scaling
    if tiled:  # the tile-by-tile inverse of large catalogs, on ragged tiles of 8 rows
        monkeypatch.setattr(kernel, "DIRECT_BYTES", 0)
        monkeypatch.setattr(kernel, "TILE", 8)
    X = small_interactions(3, n_users=300, n_items=45, density=0.2)
    with dask.config.set({"dask_rec.gramian.item-block-size": 10}):
        B = EASE(EASEConfig(l2=5.0, dtype=dtype)).fit(X).weights_
    assert B.dtype == np.dtype(dtype) and B.flags.c_contiguous
    expected = numpy_ease(X, 5.0)
    assert np.abs(B - expected).max() <= tol * np.abs(expected).max()
    assert np.all(np.diag(B) == 0)


def test_recommendations_equal_dense_numpy_top_k():
    X = small_interactions(4, n_users=200, n_items=40)
    model = EASE(EASEConfig(l2=2.0, dtype="float64")).fit(X)
    scores = X.toarray() @ numpy_ease(X, 2.0)
    scores[X.toarray() > 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    ids, got = model.recommend(X, 5)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(got, np.take_along_axis(scores, expected, 1), rtol=1e-5)


def test_too_large_a_catalog_is_refused_up_front(monkeypatch):
    import dask_rec.stages.gramian
    import dask_rec.memory_plan as plan
    from dask_rec.exceptions import InsufficientMemoryError

    def no_gramian(*args, **kwargs):
        raise AssertionError("the Gramian must not be reduced before the memory check")

    monkeypatch.setattr(plan, "memory_limits", lambda executor: plan.MemoryLimits(2**30, 2**30, 1, True))
    monkeypatch.setattr(dask_rec.stages.gramian, "reduce_gramian", no_gramian)
    import scipy.sparse as sp

    X = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 1, 29_999])), shape=(3, 30_000))
    with pytest.raises(InsufficientMemoryError, match=r"stage ease: the dense 30,000 x 30,000 float32 solve "
                                                      r"\(3\.35 GiB for B\) needs about 3\.81 GiB, more than the 1\.00 GiB"):
        EASE().fit(X)


def test_fit_on_a_store_in_a_cluster_equals_in_process(tmp_path):
    from dask_rec.data.store_writer import write_store

    X = small_interactions(5, n_users=240, n_items=35)
    write_store(tmp_path / "s.zarr", X, rows_per_block=60)
    local = EASE(EASEConfig(l2=4.0)).fit(X)
    on_cluster = EASE(EASEConfig(l2=4.0)).fit(str(tmp_path / "s.zarr"), client="local")
    np.testing.assert_allclose(on_cluster.weights_, local.weights_, rtol=1e-5, atol=1e-7)
    assert on_cluster.item_vocabulary is not None


def test_similar_items_are_the_largest_entries_of_b_rows():
    X = small_interactions(6)
    model = EASE(EASEConfig(l2=1.0, dtype="float64")).fit(X)
    ids, scores = model.similar_items([0, 3], k=4)
    for row, item in enumerate((0, 3)):
        b = model.weights_[item].copy()
        b[item] = -np.inf
        np.testing.assert_array_equal(ids[row], np.argsort(-b, kind="stable")[:4])


@pytest.mark.parametrize("bad", [dict(l2=0.0), dict(l2=float("nan")), dict(dtype="float16")])
def test_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EASEConfig(**bad)


def test_cluster_refusal_names_the_bigmem_workers_limit():
    import scipy.sparse as sp
    from distributed import Client, LocalCluster

    from dask_rec.exceptions import InsufficientMemoryError

    X = sp.csr_matrix((np.ones(2, np.float32), ([0, 1], [0, 9_999])), shape=(2, 10_000))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="256MiB",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        with pytest.raises(InsufficientMemoryError, match=r"stage ease: the dense 10,000 x 10,000 float32 solve "
                                                          r"\(0\.37 GiB for B\) .* more than the 256\.0 MiB"):
            EASE().fit(X, client=client)


def test_solve_bytes_count_the_tiled_panels():
    from dask_rec.kernels.ease import solve_bytes

    # 1,000 items: whole-matrix LAPACK, the copy's two float64 bands of 1024 columns
    assert solve_bytes(1_000, "float32") == 1_000**2 * 4 + 2 * 1_000 * 1024 * 8
    # 30,000 float64 items (7.2 GB > 2 GiB): tiled, two 2048-column float64 panels dominate
    assert solve_bytes(30_000, "float64") == 30_000**2 * 8 + 2 * 30_000 * 2048 * 8
