"""AssociationRules on hand-computed transactions, plus the contract and cluster parity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from conformance import RecommenderConformance, small_interactions
from dask_rec.models.rules import AssociationRules, AssociationRulesConfig

# 5 users (transactions) over 4 items:
#   u0: 0 1      u1: 0 1 2      u2: 0 2      u3: 1 3      u4: 0 1 3
# counts c = [4, 4, 2, 2]; co-occurrences c01 = 3, c02 = 2, c03 = 1, c12 = 1, c13 = 2, c23 = 0.
TRANSACTIONS = [[0, 1], [0, 1, 2], [0, 2], [1, 3], [0, 1, 3]]


def transactions(values=False):
    rows = np.repeat(np.arange(len(TRANSACTIONS)), [len(t) for t in TRANSACTIONS])
    cols = np.concatenate(TRANSACTIONS)
    data = np.arange(1, rows.size + 1, dtype=np.float32) if values else np.ones(rows.size, np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(5, 4))


# by hand: confidence(i -> j) = c_ij / c_i, lift = c_ij * 5 / (c_i c_j), support = c_ij / 5
CONFIDENCE = np.array([[0, 3 / 4, 2 / 4, 1 / 4],
                       [3 / 4, 0, 1 / 4, 2 / 4],
                       [2 / 2, 1 / 2, 0, 0],
                       [1 / 2, 2 / 2, 0, 0]])
LIFT = np.array([[0, 15 / 16, 10 / 8, 5 / 8],
                 [15 / 16, 0, 5 / 8, 10 / 8],
                 [10 / 8, 5 / 8, 0, 0],
                 [5 / 8, 10 / 8, 0, 0]])
SUPPORT = np.array([[0, 3, 2, 1], [3, 0, 1, 2], [2, 1, 0, 0], [1, 2, 0, 0]]) / 5


@pytest.mark.parametrize("metric,expected", [("confidence", CONFIDENCE), ("lift", LIFT), ("support", SUPPORT)])
def test_rules_equal_hand_computed_values(metric, expected, route):
    R = AssociationRules(AssociationRulesConfig(metric=metric)).fit(transactions(values=True)).similarity_
    np.testing.assert_allclose(R.toarray(), expected, rtol=1e-6)


def test_thresholds_and_top_k_by_hand(route):
    R = AssociationRules(AssociationRulesConfig(min_support=0.4, min_confidence=0.6)).fit(transactions()).similarity_
    # support >= 0.4 means c_ij >= 2; confidence >= 0.6 then keeps 0->1 (0.75), 1->0 (0.75), 2->0 (1), 3->1 (1)
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 0.75
    expected[2, 0] = expected[3, 1] = 1.0
    np.testing.assert_allclose(R.toarray(), expected)
    R = AssociationRules(AssociationRulesConfig(k=1, metric="lift")).fit(transactions()).similarity_
    # best rule per antecedent by lift; 0: 0->2 (1.25); 1: 1->3 (1.25); 2: 2->0 (1.25); 3: 3->1 (1.25)
    assert [list(R[i].indices) for i in range(4)] == [[2], [3], [0], [1]]


def test_scores_sum_the_rules_a_user_triggers():
    model = AssociationRules().fit(transactions())
    ids, scores = model.recommend(sp.csr_matrix(np.array([[1, 0, 0, 1]], np.float32)), 2)
    # user with items 0 and 3: item 1 <- 3/4 + 1, item 2 <- 2/4 + 0
    np.testing.assert_array_equal(ids, [[1, 2]])
    np.testing.assert_allclose(scores, [[1.75, 0.5]])


class TestAssociationRules(RecommenderConformance):
    def make_model(self):
        return AssociationRules(AssociationRulesConfig(k=6))


class TestAssociationRulesLift(RecommenderConformance):
    def make_model(self):
        return AssociationRules(AssociationRulesConfig(k=4, metric="lift", min_support=0.02))


def test_fit_on_a_store_in_a_cluster_equals_in_process(tmp_path, route):
    import dask

    from dask_rec.data.store_writer import write_store

    X = small_interactions(11, n_users=240, n_items=35)
    write_store(tmp_path / "s.zarr", X, rows_per_block=60)
    local = AssociationRules(AssociationRulesConfig(k=5, metric="lift")).fit(X)
    with dask.config.set({"dask_rec.gramian.item-block-size": 8}):
        on_cluster = AssociationRules(AssociationRulesConfig(k=5, metric="lift")).fit(str(tmp_path / "s.zarr"),
                                                                                      client="local")
    np.testing.assert_allclose(on_cluster.similarity_.toarray(), local.similarity_.toarray(), rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(k=0), dict(metric="leverage"), dict(min_support=1.5),
                                 dict(min_confidence=-0.1)])
def test_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AssociationRulesConfig(**bad)


@pytest.mark.parametrize("metric", ["confidence", "lift", "support"])
@pytest.mark.parametrize("min_support,min_confidence,k", [(0.0, 0.0, 4), (0.05, 0.3, 2), (0.0, 0.0, 40)])
def test_rules_from_rows_equal_rules_from_the_gramian(metric, min_support, min_confidence, k):
    """The kernel of the route from the rows against rules_block on the binary Gramian, item
    range by item range (binary data: many ties, broken by the lower item index)."""
    from dask_rec.kernels.gramian import block_gramian
    from dask_rec.kernels.item_columns import top_k_from_rows
    from dask_rec.kernels.rules import rules_block

    X = small_interactions(8, n_users=90, n_items=30, density=0.2)
    counts = np.asarray((X > 0).sum(axis=0)).ravel().astype(np.float64)
    C = X.tocsc()
    for start, stop in ((0, 30), (4, 17)):
        got = top_k_from_rows(X, C, start, stop, counts, k, metric, n_users=90, min_support=min_support,
                              min_confidence=min_confidence)
        want = rules_block(block_gramian(X, start, stop), start, counts, 90, k, metric, min_support, min_confidence)
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)
