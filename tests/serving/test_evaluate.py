"""Strong-generalization split and evaluate(): against an independent EASE evaluation on ml-100k."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dask_rec.serving.evaluation import PopularityBaseline, evaluate, split_strong_generalization
from dask_rec.data.store_writer import write_store


def _random_interactions(rng, n_users=300, n_items=60, density=0.08):
    X = sp.random(n_users, n_items, density=density, format="csr", random_state=int(rng.integers(2**31)),
                  dtype=np.float32)
    X.data = rng.integers(1, 6, size=X.nnz).astype(np.float32)  # weighted: values must survive
    return X


def _rows(A, r):
    return {int(i): float(v) for i, v in zip(A.indices[A.indptr[r]:A.indptr[r + 1]], A.data[A.indptr[r]:A.indptr[r + 1]])}


# ---------------------------------------------------------------------------- split


def test_split_partitions_users_and_items(rng):
    X = _random_interactions(rng)
    split = split_strong_generalization(X, n_test_users=50, seed=3)
    train, history, targets = split  # unpacks as a triple
    test_users, train_users = split.test_users, split.train_users
    assert test_users.size == 50 and np.all(np.diff(test_users) > 0)
    assert not set(test_users) & set(train_users)
    assert set(test_users) | set(train_users) == set(range(X.shape[0]))
    # held-out users are absent from training; training rows are the others, unchanged
    assert train.shape == (X.shape[0] - 50, X.shape[1])
    assert (train != X[train_users]).nnz == 0
    lengths = np.diff(X.indptr)
    for row, user in enumerate(test_users):
        h, t, full = _rows(history, row), _rows(targets, row), _rows(X, user)
        assert not set(h) & set(t)  # disjoint
        assert {**h, **t} == full  # together the user's items, values kept
        n = lengths[user]
        assert len(t) == min(max(math.floor(0.2 * n + 0.5), 1), n - 1)  # 20%, >= 1 target, >= 1 input
        assert len(h) >= 1


def test_split_is_deterministic_for_a_seed(rng):
    X = _random_interactions(rng)
    a = split_strong_generalization(X, test_fraction=0.25, seed=7)
    b = split_strong_generalization(X, test_fraction=0.25, seed=7)
    c = split_strong_generalization(X, test_fraction=0.25, seed=8)
    np.testing.assert_array_equal(a.test_users, b.test_users)
    for m1, m2 in zip(a, b):
        assert (m1 != m2).nnz == 0
    assert not np.array_equal(a.test_users, c.test_users) or (a.test_targets != c.test_targets).nnz


def test_split_target_fraction_overall(rng):
    X = sp.random(400, 200, density=0.2, format="csr", random_state=1, dtype=np.float32)
    split = split_strong_generalization(X, test_fraction=0.5, target_fraction=0.2, seed=0)
    share = split.test_targets.nnz / (split.test_targets.nnz + split.test_history.nnz)
    assert share == pytest.approx(0.2, abs=0.01)


def test_split_min_items_and_arguments(rng):
    X = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32))
    split = split_strong_generalization(X, n_test_users=2, min_items=3, seed=0)
    assert set(split.test_users) == {2, 3}  # the only users with >= 3 items
    # users with a single item (or none) are never held out
    split = split_strong_generalization(X, test_fraction=1.0, min_items=1, seed=0)
    assert set(split.test_users) == {1, 2, 3}
    with pytest.raises(ValueError, match="exactly one"):
        split_strong_generalization(X, n_test_users=1, test_fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        split_strong_generalization(X)
    with pytest.raises(ValueError, match="n_test_users"):
        split_strong_generalization(X, n_test_users=4)
    with pytest.raises(ValueError, match="target_fraction"):
        split_strong_generalization(X, n_test_users=1, target_fraction=1.0)


def test_split_of_a_store_equals_split_of_its_matrix(rng, tmp_path):
    X = _random_interactions(rng)
    store = write_store(tmp_path / "s.zarr", X, rows_per_block=70)
    a = split_strong_generalization(store, n_test_users=40, seed=1)
    b = split_strong_generalization(X, n_test_users=40, seed=1)
    for m1, m2 in zip(a, b):
        assert (m1 != m2).nnz == 0


# ---------------------------------------------------------------------------- evaluate: independent oracle


def _ease(train: sp.csr_matrix, l2: float) -> np.ndarray:
    """Exact EASE: B = I - P diagMat(1/diag P), P = (X^T X + l2 I)^-1, zero diagonal."""
    G = (train.T @ train).toarray().astype(np.float64)
    P = np.linalg.inv(G + l2 * np.eye(G.shape[0]))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def _independent_metrics(scores: np.ndarray, history, targets, ks):
    """Mask seen items, sort, and compute Recall/NDCG/coverage with plain Python."""
    scores = scores.copy()
    scores[history.toarray() > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in ks:
        recalls, ndcgs, items = [], [], set()
        for r in range(scores.shape[0]):
            t = set(targets.indices[targets.indptr[r]:targets.indptr[r + 1]].tolist())
            if not t:
                continue
            ranked = [int(i) for i in order[r, :k] if np.isfinite(scores[r, i])]
            items.update(ranked)
            hits = [i in t for i in ranked]
            recalls.append(sum(hits) / min(k, len(t)))
            dcg = sum(1 / math.log2(p + 2) for p, h in enumerate(hits) if h)
            ndcgs.append(dcg / sum(1 / math.log2(p + 2) for p in range(min(k, len(t)))))
        out[f"recall@{k}"] = float(np.mean(recalls))
        out[f"ndcg@{k}"] = float(np.mean(ndcgs))
        out[f"coverage@{k}"] = len(items) / scores.shape[1]
        out["n_users"] = len(recalls)
    return out


@pytest.fixture(scope="module")
def ml100k_ease(load_dataset):
    df = load_dataset("ml-100k")
    users, _ = pd.factorize(df["user_id"])
    items, item_ids = pd.factorize(df["item_id"])
    X = sp.csr_matrix((np.ones(len(df), np.float32), (users, items)), shape=(users.max() + 1, len(item_ids)))
    X.sum_duplicates()
    X.data[:] = 1
    split = split_strong_generalization(X, test_fraction=0.2, seed=0)
    B = _ease(split.train, l2=500.0).astype(np.float32)  # the model evaluated below is this float32 B
    weights = (sp.identity(B.shape[0], dtype=np.float32, format="csr"), sp.csr_matrix(B))
    return split, B, weights


def test_evaluate_matches_independent_ease_evaluation(ml100k_ease):
    split, B, weights = ml100k_ease
    ks = (20, 100)
    expected = _independent_metrics(split.test_history.toarray() @ B.astype(np.float64),
                                    split.test_history, split.test_targets, ks)
    got = evaluate(weights, split.test_history, split.test_targets, ks=ks, users_per_block=50)
    assert got["n_users"] == expected["n_users"] == split.test_users.size
    for key, value in expected.items():
        # equal here; the slack allows a float32 near-tie to swap elsewhere (one swap per 2 users)
        assert got[key] == pytest.approx(value, abs=1e-3), key
    # EASE is far better than chance on ml-100k (Recall@20 about 0.48 with this split)
    assert got["recall@20"] > 0.2


def test_evaluate_is_independent_of_blocking(ml100k_ease):
    split, _, weights = ml100k_ease
    one = evaluate(weights, split.test_history, split.test_targets, ks=(10,), users_per_block=10_000)
    many = evaluate(weights, split.test_history, split.test_targets, ks=10, users_per_block=7)
    assert one.keys() == many.keys()
    for key in one:
        assert many[key] == pytest.approx(one[key], rel=1e-12)


@pytest.mark.cluster
def test_evaluate_on_a_cluster_equals_in_process(ml100k_ease, local_client):
    split, _, weights = ml100k_ease
    here = evaluate(weights, split.test_history, split.test_targets, ks=(20, 100), users_per_block=40)
    there = evaluate(weights, split.test_history, split.test_targets, ks=(20, 100), users_per_block=40,
                     client=local_client)
    assert there == pytest.approx(here, rel=1e-12)


def test_popularity_baseline_matches_independent_evaluation(ml100k_ease):
    split, _, _ = ml100k_ease
    counts = np.bincount(split.train.indices, minlength=split.train.shape[1])
    # scores that rank like the counts, lower id first on ties, nothing for count 0
    scores = np.where(counts > 0, counts - np.arange(counts.size) * 1e-6, -np.inf)
    scores = np.repeat(scores[None, :], split.test_history.shape[0], axis=0)
    expected = _independent_metrics(scores, split.test_history, split.test_targets, (20,))
    got = evaluate(PopularityBaseline().fit(split.train), split.test_history, split.test_targets, ks=(20,))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    via_counts = evaluate(PopularityBaseline(counts), split.test_history, split.test_targets, ks=(20,))
    assert via_counts == got


def test_evaluate_accepts_a_model_and_selects_metrics(ml100k_ease):
    split, _, weights = ml100k_ease

    class Model:
        pass

    model = Model()
    model.weights = weights
    got = evaluate(model, split.test_history, split.test_targets, ks=(5,), metrics=("ndcg",))
    assert set(got) == {"ndcg@5", "n_users"}
    ref = evaluate(weights, split.test_history, split.test_targets, ks=(5,), metrics=("ndcg",))
    assert got == ref


def test_evaluate_leaves_out_users_without_targets():
    W = sp.identity(3, format="csr", dtype=np.float32)
    B = sp.csr_matrix(np.array([[0, 1, 0.5], [1, 0, 0.2], [0.5, 0.2, 0]], np.float32))
    history = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32))
    targets = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [0, 1, 0]], np.float32))
    got = evaluate((W, B), history, targets, ks=(1,))
    # user 0 ranks item 1 (score 1) first: hit; user 2 ranks item 0 (0.5) before item 1 (0.2): miss
    assert got == {"recall@1": 0.5, "ndcg@1": 0.5, "coverage@1": 2 / 3, "n_users": 2}


def test_evaluate_errors():
    W = sp.identity(3, format="csr", dtype=np.float32)
    X = sp.csr_matrix((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="users"):
        evaluate((W, W), X, X[:1])
    with pytest.raises(ValueError, match="items"):
        evaluate((W, W), sp.csr_matrix((2, 4)), sp.csr_matrix((2, 4)))
    with pytest.raises(ValueError, match="metrics"):
        evaluate((W, W), X, X, metrics=("map",))
    with pytest.raises(ValueError, match="ks"):
        evaluate((W, W), X, X, ks=(0,))
    with pytest.raises(TypeError):
        evaluate(object(), X, X)


def test_evaluate_from_stores(ml100k_ease, tmp_path):
    split, _, weights = ml100k_ease
    h = write_store(tmp_path / "h.zarr", split.test_history, rows_per_block=45)
    t = write_store(tmp_path / "t.zarr", split.test_targets, rows_per_block=45)
    ref = evaluate(weights, split.test_history, split.test_targets, ks=(20,))
    got = evaluate(weights, h, t, ks=(20,))
    assert got == pytest.approx(ref, rel=1e-12)
    got = evaluate(weights, h, split.test_targets, ks=(20,), users_per_block=30)
    assert got == pytest.approx(ref, rel=1e-12)
