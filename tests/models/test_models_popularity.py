"""PopRec, RandomRec, Wilson and UserPopRec against the contract and hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from conformance import RecommenderConformance, small_interactions
from dask_rec.kernels.item_scores import wilson_lower_bound
from dask_rec.models.popularity import (
    PopRec, RandomRec, RandomRecConfig, UserPopRec, Wilson, WilsonConfig,
)


class TestPopRec(RecommenderConformance):
    def make_model(self):
        return PopRec()

    def known_answer(self, X):
        counts = np.asarray((X != 0).sum(axis=0)).ravel()
        order = np.lexsort((np.arange(X.shape[1]), -counts))
        return {((0,), 3, False): order[None, :3]}


class TestRandomRecUniform(RecommenderConformance):
    def make_model(self):
        return RandomRec(RandomRecConfig(seed=3))


class TestRandomRecPopularity(RecommenderConformance):
    def make_model(self):
        return RandomRec(RandomRecConfig(distribution="popularity", seed=1))


class TestWilson(RecommenderConformance):
    def make_data(self):
        X = small_interactions()
        X.data = np.random.default_rng(1).integers(1, 6, X.nnz).astype(np.float32)  # ratings 1-5
        return X

    def make_model(self):
        return Wilson(WilsonConfig(threshold=4))


class TestUserPopRec(RecommenderConformance):
    recommends_seen = True

    def make_model(self):
        return UserPopRec()

    def known_answer(self, X):
        return {((0,), 2, True): np.array([[-1, -1]])}


def test_wilson_bound_hand_computed():
    # 8 positives of 10 at 95%: z = 1.959964; p = 0.8
    z = 1.959963984540054
    n, p = 10.0, 0.8
    expected = (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert wilson_lower_bound([8], [10])[0] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.4901625, abs=1e-6)  # the textbook value of 8/10
    assert wilson_lower_bound([0, 5], [0, 5]).tolist()[0] == 0.0
    with pytest.raises(ValueError, match="confidence"):
        wilson_lower_bound([1], [2], confidence=1.5)


def test_wilson_ranks_share_of_positives_with_uncertainty():
    # item 0: 2 of 2 positive; item 1: 9 of 10; item 2: 1 of 3 (ratings >= 4 positive)
    rows = [[5, 5, 0], [4, 4, 0], [0, 5, 1], [0, 5, 1], [0, 5, 5]] + [[0, 4, 0]] * 5
    X = sp.csr_matrix(np.array(rows, dtype=np.float32))
    X[9, 1] = 2.0
    model = Wilson(WilsonConfig(threshold=4)).fit(X)
    expected = wilson_lower_bound([2, 9, 1], [2, 10, 3])
    np.testing.assert_allclose(model.item_counts, expected)
    ids, _ = model.recommend(sp.csr_matrix((1, 3)), 3)
    np.testing.assert_array_equal(ids[0], np.argsort(-expected, kind="stable"))


def test_random_is_deterministic_and_weighted():
    X = small_interactions(n_users=400, n_items=30)
    model = RandomRec(RandomRecConfig(distribution="popularity", seed=7)).fit(X)
    a = model.recommend(X[:50], 5)[0]
    b = model.recommend(X[:50][::-1], 5)[0][::-1]
    np.testing.assert_array_equal(a, b)  # per user, not per position in the block
    assert not np.array_equal(a, RandomRec(RandomRecConfig(distribution="popularity", seed=8)).fit(X)
                              .recommend(X[:50], 5)[0])
    # the first draw of an empty user follows the counts: compare frequencies over many seeds
    counts = np.bincount(X.indices, minlength=30).astype(float)
    firsts = [RandomRec(RandomRecConfig("popularity", seed=s)).fit(X).recommend(sp.csr_matrix((1, 30)), 1)[0][0, 0]
              for s in range(1500)]
    freq = np.bincount(firsts, minlength=30) / 1500
    np.testing.assert_allclose(freq, counts / counts.sum(), atol=0.03)


def test_userpop_ranks_own_counts():
    X = sp.csr_matrix(np.array([[3, 0, 1, 3, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    ids, scores = UserPopRec().fit(X).scorer().topk_block(X, 3, exclude_seen=False)
    np.testing.assert_array_equal(ids, [[0, 3, 2], [-1, -1, -1]])
    np.testing.assert_array_equal(scores[0], [3, 3, 1])


def test_popularity_baseline_still_works():
    from dask_rec.serving.evaluation import PopularityBaseline

    X = small_interactions()
    np.testing.assert_array_equal(PopularityBaseline().fit(X).topk_block(X[:5], 4)[0],
                                  PopRec().fit(X).topk_block(X[:5], 4)[0])


@pytest.mark.parametrize("bad", [dict(distribution="zipf"), dict(alpha=-1.0)])
def test_random_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RandomRecConfig(**bad)


def test_fit_report_is_saved_as_plain_json_and_older_reports_still_load(tmp_path):
    import zarr

    X = small_interactions()
    model = PopRec().fit(X)
    model.fit_report_["per_block"] = np.array([3, 4], dtype=np.int64)  # NumPy values: lists and ints, not str()
    model.fit_report_["share"] = np.float32(0.5)
    path = model.save(tmp_path / "pop.zarr")
    loaded = PopRec.load(path)
    assert loaded.fit_report_["per_block"] == [3, 4] and loaded.fit_report_["share"] == 0.5
    np.testing.assert_array_equal(loaded.item_counts, model.item_counts)
    # a directory saved before (json.dumps(default=str)) holds strings there: it loads unchanged
    root = zarr.open_group(str(path), mode="r+")
    root.attrs["fit_report"] = {**root.attrs["fit_report"], "per_block": "[3 4]"}
    assert PopRec.load(path).fit_report_["per_block"] == "[3 4]"
