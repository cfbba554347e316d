"""recommend_users: block tasks in process and on 1- and 2-worker clusters, IDs, Parquet output."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dask_rec.serving.evaluation import PopularityBaseline
from dask_rec.kernels.scoring import recommend_block
from dask_rec.serving.recommend import recommend_users
from dask_rec.data.store_writer import write_store
from dask_rec.data.vocabulary import UnknownIDError, Vocabulary

N_USERS, N_ITEMS, K = 230, 70, 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = sp.random(N_USERS, N_ITEMS, density=0.06, format="csr", random_state=1, dtype=np.float32)
    X.data[:] = 1
    X.data[X.indptr[5]:X.indptr[6]] = 0  # a user without history
    X.eliminate_zeros()
    W1 = sp.random(N_ITEMS, N_ITEMS, density=0.05, format="csr", random_state=2, dtype=np.float32)
    W2 = sp.random(N_ITEMS, N_ITEMS, density=0.05, format="csr", random_state=3, dtype=np.float32)
    W2.data -= 0.5  # negative scores too
    users = Vocabulary([f"user-{i:04d}" for i in range(N_USERS)])
    items = Vocabulary((np.arange(N_ITEMS) * 7 + 100).astype(np.int64))
    counts = rng.integers(0, 50, size=N_ITEMS)
    return X, (W1, W2), users, items, counts


def _expected(X, weights, users=None, items=None, k=K, rows=None):
    """The single-block in-process result, as the frame recommend_users should return."""
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    ids, scores = recommend_block(X[rows], *weights, k)
    r, c = np.nonzero(ids >= 0)
    user_ids = rows if users is None else np.asarray(users.ids)[rows]
    item_ids = ids[r, c] if items is None else np.asarray(items.ids)[ids[r, c]]
    return pd.DataFrame({"user_id": user_ids[r], "item_id": item_ids, "score": scores[r, c],
                         "rank": (c + 1).astype(np.int32)})


def _same(got: pd.DataFrame, expected: pd.DataFrame, sort: bool = False):
    assert list(got.columns) == ["user_id", "item_id", "score", "rank"]
    if sort:
        got = got.sort_values(["user_id", "rank"]).reset_index(drop=True)
        expected = expected.sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert len(got) == len(expected)
    for col in got.columns:
        np.testing.assert_array_equal(np.asarray(got[col]), np.asarray(expected[col]), err_msg=col)


def test_fewer_than_k_candidates_drop_padding(data):
    X, weights, *_ = data
    ids, _ = recommend_block(X, *weights, K)
    short = (ids < 0).any(axis=1)
    assert short.any() and (~short).any()  # the fixture has both kinds of users
    got = recommend_users(weights, X, k=K)
    per_user = got.groupby("user_id").size()
    np.testing.assert_array_equal(per_user.reindex(range(N_USERS), fill_value=0).to_numpy(), (ids >= 0).sum(axis=1))
    assert 5 not in set(got["user_id"])  # no history: no rows


@pytest.mark.parametrize("users_per_block", [None, 1, 37, 10_000])
def test_in_process_blocks_equal_single_block(data, users_per_block):
    X, weights, *_ = data
    _same(recommend_users(weights, X, k=K, users_per_block=users_per_block), _expected(X, weights))


@pytest.mark.cluster
@pytest.mark.parametrize("client_name", ["single_worker_client", "local_client"])
def test_cluster_equals_in_process_with_ids(data, client_name, request):
    client = request.getfixturevalue(client_name)
    X, weights, users, items, _ = data
    got = recommend_users(weights, X, k=K, user_vocabulary=users, item_vocabulary=items, client=client,
                          users_per_block=29)
    expected = _expected(X, weights, users, items)
    _same(got, expected)
    assert got["user_id"].iloc[0] == "user-0000" and got["item_id"].dtype == np.int64
    # the IDs are the right ones: map back and compare with index-level results
    plain = recommend_users(weights, X, k=K)
    np.testing.assert_array_equal(np.asarray(users.index(got["user_id"].to_numpy())), plain["user_id"])
    np.testing.assert_array_equal(np.asarray(items.index(got["item_id"].to_numpy())), plain["item_id"])


@pytest.mark.cluster
def test_weights_already_on_the_cluster(data, local_client):
    X, weights, *_ = data
    future = local_client.submit(lambda w: w, weights, pure=False)
    _same(recommend_users(future, X, k=K, client=local_client, users_per_block=50), _expected(X, weights))


@pytest.mark.parametrize("cluster", [None, "local_client"])
def test_parquet_output_round_trips(data, tmp_path, cluster, request):
    client = request.getfixturevalue(cluster) if cluster else None
    X, weights, users, items, _ = data
    out = tmp_path / "recs"
    path = recommend_users(weights, X, k=K, output=out, user_vocabulary=users, item_vocabulary=items,
                           client=client, users_per_block=40)
    assert path == str(out)
    assert sorted(os.listdir(out)) == [f"part-{i:06d}.parquet" for i in range(6)]
    assert sorted(os.listdir(tmp_path)) == ["recs"]  # no temporary directory left
    _same(pd.read_parquet(out), _expected(X, weights, users, items), sort=True)


def test_existing_output_is_kept_unless_overwrite(data, tmp_path):
    X, weights, *_ = data
    out = tmp_path / "recs"
    recommend_users(weights, X[:10], k=2, output=out)
    before = pd.read_parquet(out)
    with pytest.raises(FileExistsError):
        recommend_users(weights, X, k=K, output=out)
    _same(pd.read_parquet(out), before)
    recommend_users(weights, X, k=K, output=out, overwrite=True)
    _same(pd.read_parquet(out), _expected(X, weights), sort=True)
    assert sorted(os.listdir(tmp_path)) == ["recs"]


class FailingScorer:
    """Fails on the block holding user 100 (picklable: module level)."""

    def __init__(self, weights):
        self.weights_ = weights

    n_items = N_ITEMS

    def topk_block(self, X, k, exclude_seen=True, n_threads=1):
        if _is_poisoned(X):
            raise RuntimeError("boom")
        return recommend_block(X, *self.weights_, k, exclude_seen=exclude_seen)


def _is_poisoned(X):
    return bool(X[:, 0].sum() > 1e6)


@pytest.mark.parametrize("cluster", [None, "local_client"])
def test_failed_job_leaves_no_partial_output(data, tmp_path, cluster, request):
    client = request.getfixturevalue(cluster) if cluster else None
    X, weights, *_ = data
    poisoned = X.tolil()
    poisoned[100, 0] = 1e7  # the block holding user 100 raises
    poisoned = poisoned.tocsr()
    out = tmp_path / "recs"
    with pytest.raises(RuntimeError, match="boom"):
        recommend_users(FailingScorer(weights), poisoned, k=K, output=out, client=client, users_per_block=30)
    assert os.listdir(tmp_path) == []
    # an existing output survives a failed overwrite
    recommend_users(weights, X[:10], k=2, output=out)
    before = pd.read_parquet(out)
    with pytest.raises(RuntimeError, match="boom"):
        recommend_users(FailingScorer(weights), poisoned, k=K, output=out, client=client, users_per_block=30,
                        overwrite=True)
    _same(pd.read_parquet(out), before)
    assert os.listdir(tmp_path) == ["recs"]


def test_frame_histories_map_through_vocabularies(data):
    X, weights, users, items, counts = data
    coo = X.tocoo()
    frame = pd.DataFrame({"user_id": np.asarray(users.ids)[coo.row], "item_id": np.asarray(items.ids)[coo.col]})
    frame = frame.sort_values("user_id", kind="stable")
    got = recommend_users(weights, frame, k=K, item_vocabulary=items)
    expected = _expected(X, weights, users, items)
    _same(got, expected)

    # unknown items: error, drop, or drop and fall back to popularity for users left empty
    extra = pd.DataFrame({"user_id": ["user-0001", "new-user"], "item_id": [-5, -6]})
    with_unknown = pd.concat([frame, extra], ignore_index=True)
    with pytest.raises(UnknownIDError):
        recommend_users(weights, with_unknown, k=K, item_vocabulary=items)
    _same(recommend_users(weights, with_unknown, k=K, item_vocabulary=items, unknown="drop"), expected)
    got = recommend_users(weights, with_unknown, k=K, item_vocabulary=items, unknown="popular", item_counts=counts)
    new = got[got["user_id"] == "new-user"]
    top = np.argsort(-counts, kind="stable")[:K]
    np.testing.assert_array_equal(new["item_id"].to_numpy(), np.asarray(items.ids)[top])
    np.testing.assert_array_equal(new["score"].to_numpy(), counts[top].astype(np.float32))
    np.testing.assert_array_equal(new["rank"].to_numpy(), np.arange(1, K + 1))
    _same(got[got["user_id"] != "new-user"].reset_index(drop=True), expected)
    with pytest.raises(ValueError, match="item_counts"):
        recommend_users(weights, with_unknown, k=K, item_vocabulary=items, unknown="popular")


def test_users_subset_and_unknown_users(data):
    X, weights, users, items, counts = data
    wanted = ["user-0042", "user-0007", "nobody", "user-0005"]
    with pytest.raises(UnknownIDError):
        recommend_users(weights, X, k=K, users=wanted, user_vocabulary=users)
    got = recommend_users(weights, X, k=K, users=wanted, user_vocabulary=users, item_vocabulary=items,
                          unknown="drop")
    _same(got, _expected(X, weights, users, items, rows=[42, 7, 5]))  # order of `users`
    got = recommend_users(weights, X, k=K, users=wanted, user_vocabulary=users, unknown="popular",
                          item_counts=counts)
    # "nobody" and user-0005 (no history) get the popular items
    assert (got["user_id"] == "nobody").sum() == K and (got["user_id"] == "user-0005").sum() == K
    # without vocabularies, users are row indices
    _same(recommend_users(weights, X, k=K, users=[3, 1]), _expected(X, weights, rows=[3, 1]))


def test_store_histories(data, tmp_path):
    X, weights, users, items, counts = data
    store = write_store(tmp_path / "h.zarr", X, user_vocabulary=users, item_vocabulary=items,
                                  rows_per_block=45)
    assert store.n_blocks > 1
    expected = _expected(X, weights, users, items)
    _same(recommend_users(weights, store, k=K), expected)  # the store's vocabularies by default
    _same(recommend_users(weights, store, k=K, users_per_block=17), expected)
    got = recommend_users(weights, store, k=K, users=["user-0200", "user-0003", "user-0099", "nobody"],
                          unknown="popular")
    # grouped by store block (row order), unknown users last; the store's counts for popularity
    assert list(dict.fromkeys(got["user_id"])) == ["user-0003", "user-0099", "user-0200", "nobody"]
    _same(got[got["user_id"] != "nobody"], _expected(X, weights, users, items, rows=[3, 99, 200]))
    top = np.argsort(-store.item_counts, kind="stable")[:K]
    np.testing.assert_array_equal(got.loc[got["user_id"] == "nobody", "item_id"], np.asarray(items.ids)[top])


@pytest.mark.cluster
def test_store_histories_on_a_cluster(data, tmp_path, local_client):
    X, weights, users, items, _ = data
    store = write_store(tmp_path / "h.zarr", X, user_vocabulary=users, item_vocabulary=items,
                                  rows_per_block=45)
    out = recommend_users(weights, store, k=K, client=local_client, output=tmp_path / "recs")
    _same(pd.read_parquet(out), _expected(X, weights, users, items), sort=True)


def test_popularity_scorer_and_validation(data):
    X, weights, _, _, counts = data
    got = recommend_users(PopularityBaseline(counts), X, k=3)
    assert got.groupby("user_id").size().max() == 3
    with pytest.raises(ValueError, match="k must be"):
        recommend_users(weights, X, k=0)
    with pytest.raises(ValueError, match="unknown must be"):
        recommend_users(weights, X, unknown="ignore")
    with pytest.raises(ValueError, match="items"):
        recommend_users(weights, X[:, :10], k=3)
    with pytest.raises(TypeError):
        recommend_users(weights, X.toarray(), k=3)


def test_empty_inputs(data, tmp_path):
    X, weights, *_ = data
    got = recommend_users(weights, X[:0], k=3)
    assert len(got) == 0 and list(got.columns) == ["user_id", "item_id", "score", "rank"]
    out = recommend_users(weights, X[:0], k=3, output=tmp_path / "empty")
    assert len(pd.read_parquet(out)) == 0
