"""ItemKNN against implicit 0.7.3's CosineRecommender and a dense NumPy oracle, plus the contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from conformance import RecommenderConformance, small_interactions
from dask_rec.models.itemknn import ItemKNN, ItemKNNConfig


class TestItemKNN(RecommenderConformance):
    def make_model(self):
        return ItemKNN(ItemKNNConfig(k=8))


class TestItemKNNJaccard(RecommenderConformance):
    def make_model(self):
        return ItemKNN(ItemKNNConfig(k=5, similarity="jaccard", shrinkage=2.0))


def _weighted(seed=0, n_users=300, n_items=40):
    X = small_interactions(seed, n_users, n_items, density=0.2)
    X.data = np.random.default_rng(seed).random(X.nnz).astype(np.float32) + 0.5  # no ties
    return X


def _dense_oracle(X, k, similarity, shrinkage):
    A = X.toarray().astype(np.float64)
    G = A.T @ A
    d = np.diag(G)
    if similarity == "cosine":
        S = G / (np.sqrt(d)[:, None] * np.sqrt(d)[None, :] + shrinkage)
    else:
        S = G / (d[:, None] + d[None, :] - G + shrinkage)
    out = np.zeros_like(S)
    for i in range(S.shape[0]):
        top = np.argsort(-S[i], kind="stable")[:k]
        top = top[S[i, top] != 0]
        out[i, top] = S[i, top]
    return out


@pytest.mark.parametrize("similarity,shrinkage", [("cosine", 0.0), ("cosine", 3.0), ("jaccard", 0.0)])
def test_neighbours_equal_dense_oracle_over_column_blocks(similarity, shrinkage, route):
    import dask

    X = _weighted()
    with dask.config.set({"dask_rec.gramian.item-block-size": 7}):  # several Gramian column blocks
        model = ItemKNN(ItemKNNConfig(k=6, similarity=similarity, shrinkage=shrinkage)).fit(X)
    np.testing.assert_allclose(model.similarity_.toarray(), _dense_oracle(X, 6, similarity, shrinkage),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
def test_same_neighbours_and_scores_as_implicit_cosine():
    from implicit.nearest_neighbours import CosineRecommender

    X = _weighted(1)
    theirs = CosineRecommender(K=10)
    theirs.fit(sp.csr_matrix(X, dtype=np.float64), show_progress=False)
    ours = ItemKNN(ItemKNNConfig(k=10)).fit(X)
    T = sp.csr_matrix(theirs.similarity)
    np.testing.assert_allclose(ours.similarity_.toarray(), T.toarray(), rtol=1e-5, atol=1e-6)
    ids, _ = ours.recommend(X[:20], 5)
    their_ids, _ = theirs.recommend(np.arange(20), sp.csr_matrix(X[:20], dtype=np.float64), N=5,
                                    filter_already_liked_items=True)
    np.testing.assert_array_equal(ids, their_ids)


def test_fit_on_a_store_in_a_cluster_equals_in_process(tmp_path, route):
    from dask_rec.data.store_writer import write_store

    X = _weighted(2)
    write_store(tmp_path / "s.zarr", X, rows_per_block=60)
    local = ItemKNN(ItemKNNConfig(k=7)).fit(X)
    on_cluster = ItemKNN(ItemKNNConfig(k=7)).fit(str(tmp_path / "s.zarr"), client="local")
    np.testing.assert_allclose(on_cluster.similarity_.toarray(), local.similarity_.toarray(), rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(k=0), dict(similarity="pearson"), dict(shrinkage=-1.0)])
def test_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ItemKNNConfig(**bad)


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
@pytest.mark.parametrize("similarity", ["bm25", "tfidf"])
def test_same_neighbours_as_implicit_bm25_and_tfidf(similarity, route):
    import dask
    from implicit.nearest_neighbours import BM25Recommender, TFIDFRecommender

    X = _weighted(3)
    theirs = BM25Recommender(K=10) if similarity == "bm25" else TFIDFRecommender(K=10)
    theirs.fit(sp.csr_matrix(X, dtype=np.float64), show_progress=False)
    with dask.config.set({"dask_rec.blocks.target-nnz": 500, "dask_rec.gramian.item-block-size": 9}):
        ours = ItemKNN(ItemKNNConfig(k=10, similarity=similarity)).fit(X)
    np.testing.assert_allclose(ours.similarity_.toarray(), sp.csr_matrix(theirs.similarity).toarray(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity,shrinkage,k", [("cosine", 0.0, 5), ("jaccard", 1.5, 3), ("dot", 0.0, 40)])
def test_numba_neighbours_equal_the_naive_twin(similarity, shrinkage, k):
    from dask_rec.kernels.gramian import block_gramian
    from dask_rec.kernels.neighbors import neighbours_block, neighbours_block_naive

    X = small_interactions(12, n_users=120, n_items=40, density=0.2)  # binary: many ties
    G = block_gramian(X)
    diag = G.diagonal()
    for start, stop in ((0, 40), (5, 19)):
        block = G if (start, stop) == (0, 40) else block_gramian(X, start, stop)
        got = neighbours_block(block, start, diag, k, similarity, shrinkage)
        want = neighbours_block_naive(block, start, diag, k, similarity, shrinkage)
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("similarity,shrinkage,k", [("cosine", 0.0, 5), ("jaccard", 1.5, 3), ("dot", 0.0, 40),
                                                    ("cosine", 0.5, 1)])
@pytest.mark.parametrize("weighted", [False, True])
def test_top_k_from_rows_equals_the_gramian_route(similarity, shrinkage, k, weighted):
    """The fused kernel (no Gramian stored) against the naive twin on the Gramian, item range by
    item range: the same entries, ties (binary data has many) broken by the lower item index."""
    from dask_rec.kernels.gramian import block_gramian
    from dask_rec.kernels.item_columns import top_k_from_rows
    from dask_rec.kernels.neighbors import item_square_sums, neighbours_block_naive

    X = small_interactions(12, n_users=120, n_items=40, density=0.2)
    if weighted:  # some negative values too (a BM25 idf can be negative)
        X.data = np.random.default_rng(4).integers(-2, 4, X.nnz).astype(np.float64)
        X.eliminate_zeros()
    G = block_gramian(X)
    diag = item_square_sums(X)
    np.testing.assert_allclose(diag, G.diagonal())
    C = X.tocsc()
    for start, stop in ((0, 40), (5, 19), (39, 40)):
        got = top_k_from_rows(X, C, start, stop, diag, k, similarity, shrinkage=shrinkage)
        want = neighbours_block_naive(block_gramian(X, start, stop), start, diag, k, similarity, shrinkage)
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.data, want.data, rtol=1e-6)


def test_balanced_ranges_split_the_work_evenly():
    from dask_rec.kernels.item_columns import balanced_ranges, item_column_costs

    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1]], dtype=np.float32))
    # item j visits the rows of its users: n_u = 2, 3, 1
    np.testing.assert_array_equal(item_column_costs(X), [5, 2, 3, 4])
    np.testing.assert_array_equal(balanced_ranges([1, 1, 1, 1, 4], 2), [0, 4, 5])
    # at most one range per item; cuts where the running sum 5, 7, 10, 14 passes 14 * (1, 2, 3) / 4
    np.testing.assert_array_equal(balanced_ranges([5, 2, 3, 4], 8), [0, 2, 3, 4])
    np.testing.assert_array_equal(balanced_ranges([0, 0, 0], 2), [0, 1, 3])


def test_fit_from_rows_splits_items_over_the_cluster_threads():
    """On a cluster the route from the rows runs several item-range tasks (four per thread)."""
    from distributed import Client, LocalCluster, get_task_stream

    X = _weighted(5)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, get_task_stream(client) as stream:
        model = ItemKNN(ItemKNNConfig(k=4)).fit(X, client=client)
    keys = [t["key"] for t in stream.data if str(t["key"]).startswith("item-top-k")]
    assert len(keys) == 8
    np.testing.assert_allclose(model.similarity_.toarray(), ItemKNN(ItemKNNConfig(k=4)).fit(X).similarity_.toarray())


class _ImplicitItemItem:
    """implicit's item-item scores of a history block, ranked by our top-k (a block scorer)."""

    def __init__(self, model, n_items):
        self.model, self.n_items = model, n_items

    def topk_block(self, X_block, k, exclude_seen=True, allowed=None, n_threads=1):
        from dask_rec.kernels.topk import top_k_of_scores

        X = sp.csr_matrix(X_block, dtype=np.float32)
        scores = (X @ sp.csr_matrix(self.model.similarity, dtype=np.float32)).toarray()
        scores[scores == 0] = -np.inf  # as ours: an item no history item points to is no candidate
        return top_k_of_scores(scores, k, exclude=X if exclude_seen else None)


@pytest.mark.filterwarnings("ignore:Method expects CSR input")
@pytest.mark.parametrize("similarity", ["cosine", "bm25"])
def test_same_recall_as_implicit_on_gowalla(similarity):
    """Recall@20 and NDCG@100 of ItemKNN (K=100) within 1% of implicit's on gowalla (5,000
    held-out users, strong generalization)."""
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    from dask_rec.serving.evaluation import evaluate, split_strong_generalization
    from shared_data import interaction_matrix

    X = interaction_matrix("gowalla")
    train, history, targets = split_strong_generalization(X, n_test_users=5000, seed=0)
    ours = ItemKNN(ItemKNNConfig(k=100, similarity=similarity)).fit(train)
    theirs = (CosineRecommender if similarity == "cosine" else BM25Recommender)(K=100)
    theirs.fit(sp.csr_matrix(train, dtype=np.float32), show_progress=False)
    a = evaluate(ours, history, targets, ks=(20, 100))
    b = evaluate(_ImplicitItemItem(theirs, train.shape[1]), history, targets, ks=(20, 100))
    for key in ("recall@20", "ndcg@100"):
        assert a[key] == pytest.approx(b[key], rel=0.01), (key, a[key], b[key])
