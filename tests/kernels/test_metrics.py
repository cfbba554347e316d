"""Ranking metrics: a hand-computed example and a straightforward independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.kernels.metrics import (
    finalize_metrics,
    hits_block,
    merge_metric_sums,
    metric_sums,
    ndcg_at_k,
    recall_at_k,
    recommended_items,
)

N_ITEMS = 10
TOPK = np.array([
    [3, 1, 4, -1],  # targets {1, 4, 5}: hits at ranks 1 and 2 (0-based)
    [8, 6, 0, 1],   # no targets: left out of everything
    [2, 0, 7, 5],   # targets {2}: hit at rank 0
    [0, 1, 2, 3],   # targets {6, 7}: no hit
    [5, 9, 0, 1],   # targets {0, 9}: hits at ranks 1 and 2
])
TARGETS = [[1, 4, 5], [], [2], [6, 7], [0, 9]]


def _csr(rows, n_items=N_ITEMS):
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])]
    indices = np.array([i for r in rows for i in r], dtype=np.int64)
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(rows), n_items))


def test_hand_computed_example():
    T = _csr(TARGETS)
    log2_3 = math.log2(3)  # 1.5849625007211563
    # user 0, k=3: hits 2 of min(3, 3); DCG = 1/log2(3) + 1/log2(4) = 0.6309297535714575 + 0.5
    # = 1.1309297535714575; IDCG = 1 + 0.6309297535714575 + 0.5 = 2.1309297535714575
    # user 4, k=3: hits 2 of min(3, 2); IDCG = 1 + 0.6309297535714575 = 1.6309297535714575
    recall3 = recall_at_k(TOPK, T, 3)
    np.testing.assert_allclose(recall3, [2 / 3, np.nan, 1.0, 0.0, 1.0])
    ndcg3 = ndcg_at_k(TOPK, T, 3)
    np.testing.assert_allclose(
        ndcg3, [1.1309297535714575 / 2.1309297535714575, np.nan, 1.0, 0.0, 1.1309297535714575 / 1.6309297535714575]
    )
    np.testing.assert_allclose(ndcg3[[0, 4]], [0.5307212739772434, 0.6934264036172708])
    assert 1 / log2_3 == pytest.approx(0.6309297535714575)
    # k=1: only user 2 hits; k=4: padding (-1) of user 0 is not a hit, min(4, 3) = 3
    np.testing.assert_allclose(recall_at_k(TOPK, T, 1), [0, np.nan, 1, 0, 0])
    np.testing.assert_allclose(recall_at_k(TOPK, T, 4), [2 / 3, np.nan, 1, 0, 1])
    np.testing.assert_allclose(ndcg_at_k(TOPK, T, 4)[0], ndcg3[0])

    sums = metric_sums(TOPK, T, ks=(1, 3))
    assert sums["n_users"] == 4
    result = finalize_metrics(sums)
    # means over the 4 users with targets
    assert result["recall@3"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)  # 0.6666666666666666
    assert result["ndcg@3"] == pytest.approx((0.5307212739772434 + 1 + 0 + 0.6934264036172708) / 4)
    assert result["recall@1"] == pytest.approx(0.25)
    assert result["ndcg@1"] == pytest.approx(0.25)
    # first 3 ids of users 0, 2, 3, 4: {0, 1, 2, 3, 4, 5, 7, 9} -> 8 of 10 (user 1's 8, 6 don't count)
    assert result["coverage@3"] == pytest.approx(0.8)
    assert result["coverage@1"] == pytest.approx(0.4)  # {3, 2, 0, 5}
    assert result["n_users"] == 4


def test_hits_and_recommended_items():
    T = _csr(TARGETS)
    hits = hits_block(TOPK, T)
    np.testing.assert_array_equal(hits[0], [False, True, True, False])
    assert not hits[1].any()
    np.testing.assert_array_equal(np.flatnonzero(recommended_items(TOPK, N_ITEMS, 2)), [0, 1, 2, 3, 5, 6, 8, 9])


def test_merge_of_blocks_equals_whole():
    T = _csr(TARGETS)
    whole = finalize_metrics(metric_sums(TOPK, T, ks=(2, 4)))
    parts = [metric_sums(TOPK[a:b], T[a:b], ks=(2, 4)) for a, b in ((0, 2), (2, 3), (3, 5))]
    merged = finalize_metrics(merge_metric_sums(parts))
    assert merged.keys() == whole.keys()
    for key in whole:
        assert merged[key] == pytest.approx(whole[key])


def test_no_users_gives_nan_means():
    result = finalize_metrics(metric_sums(np.zeros((0, 3), np.int64), sp.csr_matrix((0, 5)), ks=(3,)))
    assert result["n_users"] == 0 and math.isnan(result["recall@3"])


def test_duplicate_target_entries_count_once():
    T = sp.csr_matrix((np.ones(3), np.array([1, 1, 2]), np.array([0, 3])), shape=(1, 4))
    assert not T.has_canonical_format
    np.testing.assert_allclose(recall_at_k(np.array([[1, 0]]), T, 2), [0.5])


def test_errors():
    T = _csr(TARGETS)
    with pytest.raises(ValueError, match="at least k"):
        recall_at_k(TOPK, T, 5)
    with pytest.raises(ValueError, match="rows"):
        ndcg_at_k(TOPK[:2], T, 2)
    with pytest.raises(ValueError, match="unknown metrics"):
        metric_sums(TOPK, T, ks=(2,), metrics=("precision",))


def _straightforward(topk, targets, k):
    """Liang et al.'s definitions, one user at a time in plain Python."""
    recalls, ndcgs = [], []
    for r in range(topk.shape[0]):
        t = set(targets.indices[targets.indptr[r]:targets.indptr[r + 1]].tolist())
        if not t:
            recalls.append(np.nan)
            ndcgs.append(np.nan)
            continue
        ranked = topk[r, :k].tolist()
        hits = [1.0 if i in t else 0.0 for i in ranked]
        recalls.append(sum(hits) / min(k, len(t)))
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(t))))
        ndcgs.append(dcg / idcg)
    return np.array(recalls), np.array(ndcgs)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 12), st.integers(1, 30), st.integers(1, 10))
def test_agrees_with_straightforward_implementation(seed, b, n, k):
    rng = np.random.default_rng(seed)
    width = k + int(rng.integers(0, 3))
    topk = np.full((b, width), -1, np.int64)
    for r in range(b):
        m = int(rng.integers(0, min(width, n) + 1))
        topk[r, :m] = rng.choice(n, size=m, replace=False)
    T = sp.random(b, n, density=0.2, format="csr", random_state=int(rng.integers(2**31)))
    rec, nd = _straightforward(topk, T, k)
    np.testing.assert_allclose(recall_at_k(topk, T, k), rec)
    np.testing.assert_allclose(ndcg_at_k(topk, T, k), nd)
    result = finalize_metrics(metric_sums(topk, T, ks=(k,)))
    valid = ~np.isnan(rec)
    assert result["n_users"] == valid.sum()
    if valid.any():
        assert result[f"recall@{k}"] == pytest.approx(rec[valid].mean())
        assert result[f"ndcg@{k}"] == pytest.approx(nd[valid].mean())
        items = {i for r in np.flatnonzero(valid) for i in topk[r, :k].tolist() if i >= 0}
        assert result[f"coverage@{k}"] == pytest.approx(len(items) / n)
