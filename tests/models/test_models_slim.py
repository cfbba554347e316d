"""SLIM against scikit-learn's ElasticNet(positive=True) per column on ml-100k, plus the contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from conformance import RecommenderConformance, small_interactions
from dask_rec.models.slim import SLIM, SLIMConfig


class TestSLIM(RecommenderConformance):
    def make_model(self):
        return SLIM(SLIMConfig(l1=0.5, l2=2.0))


class TestSLIMTopK(RecommenderConformance):
    def make_model(self):
        return SLIM(SLIMConfig(l1=0.1, l2=1.0, topk=3, columns_per_task=7))


def sklearn_columns(X, columns, alpha, l1_ratio):
    """Column ``j`` of W: ElasticNet of x_j on X with column j zeroed (so w_j = 0)."""
    from sklearn.linear_model import ElasticNet

    X = sp.csc_matrix(X, dtype=np.float64)
    out = np.zeros((X.shape[1], len(columns)))
    for c, j in enumerate(columns):
        Xj = X.copy()
        Xj.data[Xj.indptr[j]:Xj.indptr[j + 1]] = 0.0
        Xj.eliminate_zeros()
        net = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, positive=True, fit_intercept=False, tol=1e-12,
                         max_iter=100_000)
        net.fit(Xj, X[:, j].toarray().ravel())
        out[:, c] = net.coef_
    return out


@pytest.mark.parametrize("alpha,l1_ratio", [(1e-3, 0.5), (5e-3, 0.1)])
def test_columns_equal_sklearn_elastic_net_on_ml100k(alpha, l1_ratio):
    from shared_data import interaction_matrix

    X = interaction_matrix("ml-100k")
    n_users = X.shape[0]
    # sklearn minimises the objective divided by the number of samples (users): scale it back
    config = SLIMConfig(l1=n_users * alpha * l1_ratio, l2=n_users * alpha * (1 - l1_ratio), tol=1e-10,
                        max_iter=10_000, columns_per_task=500)
    W = SLIM(config).fit(X).similarity_.tocsc()
    counts = np.diff(sp.csc_matrix(X).indptr)
    columns = np.r_[np.argsort(-counts, kind="stable")[:10], np.arange(0, X.shape[1], 97)]  # popular and others
    expected = sklearn_columns(X, columns, alpha, l1_ratio)
    got = W[:, columns].toarray()
    assert (expected > 0).sum() > 100  # the comparison covers many non-zero weights
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert W.min() >= 0 and np.all(W.diagonal() == 0)


def test_topk_keeps_the_largest_weights_of_each_column():
    X = small_interactions(7, n_users=200, n_items=30, density=0.25)
    full = SLIM(SLIMConfig(l1=0.1, l2=1.0, tol=1e-8)).fit(X).similarity_.tocsc().toarray()
    top = SLIM(SLIMConfig(l1=0.1, l2=1.0, tol=1e-8, topk=4)).fit(X).similarity_.tocsc().toarray()
    for j in range(X.shape[1]):
        keep = np.argsort(-full[:, j], kind="stable")[:4]
        keep = keep[full[keep, j] > 0]
        expected = np.zeros(X.shape[1])
        expected[keep] = full[keep, j]
        np.testing.assert_allclose(top[:, j], expected, rtol=1e-6)


def test_l1_above_every_cooccurrence_gives_no_weights():
    X = small_interactions(8)
    G = (X.T @ X).toarray()
    np.fill_diagonal(G, 0)
    W = SLIM(SLIMConfig(l1=float(G.max()), l2=1.0)).fit(X).similarity_
    assert W.nnz == 0


def test_fit_on_a_store_in_a_cluster_equals_in_process(tmp_path):
    from dask_rec.data.store_writer import write_store

    X = small_interactions(9, n_users=240, n_items=35)
    write_store(tmp_path / "s.zarr", X, rows_per_block=60)
    config = SLIMConfig(l1=0.2, l2=3.0, columns_per_task=8)
    local = SLIM(config).fit(X)
    on_cluster = SLIM(config).fit(str(tmp_path / "s.zarr"), client="local")
    np.testing.assert_allclose(on_cluster.similarity_.toarray(), local.similarity_.toarray(), rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(l1=-1.0), dict(l2=float("inf")), dict(topk=-1), dict(max_iter=0),
                                 dict(tol=0.0), dict(columns_per_task=0)])
def test_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SLIMConfig(**bad)


def test_no_penalty_is_refused():
    with pytest.raises(ValueError, match="l1 \\+ l2 must be > 0"):
        SLIMConfig(l1=0.0, l2=0.0)
