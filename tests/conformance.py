"""A reusable conformance suite of the recommender contract (LensKit-style), for every model.

Subclass :class:`RecommenderConformance` in a test module and define ``make_model()`` (an
unfitted model) and optionally ``make_data()`` (a users x items CSR matrix to fit on)::

    class TestPopRec(RecommenderConformance):
        def make_model(self):
            return PopRec()

Checks: a known answer (``known_answer(model, X)`` returning expected top lists, when defined),
empty users, save/load round trip (equal ids and scores), batch equals one user at a time,
excluded items never returned, −1 / −inf padding, shapes and dtypes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def small_interactions(seed: int = 0, n_users: int = 60, n_items: int = 25, density: float = 0.15) -> sp.csr_matrix:
    """A random binary users x items matrix where every item has an interaction."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n_users, n_items)) < density).astype(np.float32)
    X[rng.integers(0, n_users, n_items), np.arange(n_items)] = 1.0
    return sp.csr_matrix(X)


class RecommenderConformance:
    """Mixin of contract tests; subclasses define ``make_model``."""

    #: Whether the model recommends the user's own items (then exclusion tests expect nothing).
    recommends_seen = False

    def make_model(self):  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def make_data(self) -> sp.csr_matrix:
        return small_interactions()

    def fitted(self):
        X = self.make_data()
        return self.make_model().fit(X), X

    def test_shapes_order_and_padding(self):
        model, X = self.fitted()
        k = X.shape[1] + 3  # more than the catalog: rows must be padded
        ids, scores = model.recommend(X[:7], k)
        assert ids.shape == scores.shape == (7, k)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        for row_ids, row_scores in zip(ids, scores):
            real = row_ids >= 0
            assert np.all(real[: real.sum()]), "padding must come last"
            assert np.all(row_ids[~real] == -1) and np.all(np.isneginf(row_scores[~real]))
            assert not np.any(np.isnan(row_scores))
            assert np.all(np.diff(row_scores[real]) <= 0), "scores must be non-increasing"
            assert len(set(row_ids[real])) == real.sum(), "no item twice"

    def test_excluded_items_never_returned(self):
        model, X = self.fitted()
        ids, _ = model.recommend(X[:10], X.shape[1])
        for r in range(10):
            seen = set(X[r].indices)
            assert not seen & set(ids[r][ids[r] >= 0])
        allowed = np.zeros(X.shape[1], bool)
        allowed[::2] = True
        ids, _ = model.scorer().topk_block(X[:10], 5, exclude_seen=False, allowed=allowed)
        assert np.all(allowed[ids[ids >= 0]])

    def test_empty_users(self):
        model, X = self.fitted()
        empty = sp.csr_matrix((3, X.shape[1]), dtype=np.float32)
        ids, scores = model.recommend(empty, 5)
        assert ids.shape == (3, 5)
        assert np.all((ids >= -1) & (ids < X.shape[1]))
        assert np.all(np.isneginf(scores[ids < 0]))

    def test_batch_equals_single_user(self):
        model, X = self.fitted()
        ids, scores = model.recommend(X[:8], 6)
        for r in range(8):
            one_ids, one_scores = model.recommend(X[r].toarray()[0], 6)
            np.testing.assert_array_equal(one_ids, ids[r])
            np.testing.assert_array_equal(one_scores, scores[r])

    def test_save_load_round_trip(self, tmp_path):
        model, X = self.fitted()
        model.save(tmp_path / "m.zarr")
        from dask_rec.models.registry import load_model_directory

        again = load_model_directory(tmp_path / "m.zarr")
        assert type(again) is type(getattr(model, "wrapped", model))  # an adapter names what it wraps
        for a, b in zip(model.recommend(X[:10], 8), again.recommend(X[:10], 8)):
            np.testing.assert_array_equal(a, b)

    def test_known_answer(self):
        known = getattr(self, "known_answer", None)
        if known is None:
            return
        model, X = self.fitted()
        for (rows, k, exclude_seen), expected in known(X).items():
            ids, _ = model.scorer().topk_block(X[list(rows)], k, exclude_seen=exclude_seen)
            np.testing.assert_array_equal(ids, expected)
