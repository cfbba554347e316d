"""The SANSA estimator end to end, in process: exact-EASE oracle, recommend contract, persistence."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_rec import (
    SANSA,
    CHOLMODGramianFactorizerConfig,
    DaskRecWarning,
    ExactUnitLowerTriangleInverterConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
    UMRUnitLowerTriangleInverterConfig,
)
from conformance import RecommenderConformance
from oracles import ease_weights, offdiagonal_relative_error, random_interactions


def exact_config(l2=5.0, factorizer=None):
    return SANSAConfig(
        l2=l2,
        weight_matrix_density=1.0,
        gramian_factorizer_config=factorizer or CHOLMODGramianFactorizerConfig(),
        lower_triangle_inverter_config=ExactUnitLowerTriangleInverterConfig(),
    )


def dense_B(model):
    W1, W2 = model.weights
    return (W1 @ W2).toarray()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n_users=st.integers(20, 60), n_items=st.integers(5, 30),
       l2=st.floats(0.5, 50.0), ordering=st.sampled_from(["colamd", "amd", "popularity", "natural"]))
def test_cholmod_with_exact_inverse_is_ease(seed, n_users, n_items, l2, ordering):
    X = random_interactions(np.random.default_rng(seed), n_users, n_items, 0.2)
    model = SANSA(exact_config(l2, CHOLMODGramianFactorizerConfig(reordering_method=ordering))).fit(X)
    assert offdiagonal_relative_error(dense_B(model), ease_weights(X, l2)) < 1e-3


@pytest.mark.parametrize("ordering", ["colamd", "popularity"])
def test_icf_with_full_budget_is_ease_of_the_scaled_data(rng, ordering):
    # ICF trains on X·diag(s), s_i = 1/sqrt(‖G[i,:]‖₂), and scores unscaled inputs: unpruned, its weights
    # are exactly EASE's B for the scaled data (and CHOLMOD on the same scaled data gives the same).
    X = random_interactions(rng, 200, 40, 0.1)
    G = (X.T @ X).toarray().astype(np.float64)
    s = 1 / np.sqrt(np.linalg.norm(G, axis=1))
    X_scaled = sp.csr_matrix(X.toarray() * s[None, :])
    icf = SANSA(exact_config(10.0, ICFGramianFactorizerConfig(reordering_method=ordering))).fit(X)
    chol = SANSA(exact_config(10.0, CHOLMODGramianFactorizerConfig(reordering_method=ordering))).fit(X_scaled)
    B = ease_weights(X_scaled, 10.0)
    assert offdiagonal_relative_error(dense_B(icf), B) < 1e-3
    assert offdiagonal_relative_error(dense_B(chol), B) < 1e-3


def test_exact_ease_on_ml100k(ml100k):
    X = ml100k
    model = SANSA(exact_config(200.0)).fit(X)
    assert offdiagonal_relative_error(dense_B(model), ease_weights(X, 200.0)) < 1e-3


def test_umr_residual_falls_with_scans_and_finetune_steps(ml100k):
    residuals = []
    for scans, finetune in ((0, 0), (1, 0), (3, 0), (3, 10)):
        cfg = SANSAConfig(5.0, 0.05, CHOLMODGramianFactorizerConfig(),
                          UMRUnitLowerTriangleInverterConfig(scans=scans, finetune_steps=finetune))
        last = SANSA(cfg).fit(ml100k).fit_report_["inverse"][-1]
        residuals.append(last["mean_squared_residual_norm"])
    assert residuals[0] > residuals[1] > residuals[2] > residuals[3]


def test_checkerboard_known_answer():
    # two taste groups of 4 items; users only touch their own group
    rows = []
    for u in range(40):
        group = u % 2
        items = [group * 4 + (u + j) % 4 for j in range(3)]
        rows.append(items)
    X = sp.lil_matrix((40, 8), dtype=np.float32)
    for u, items in enumerate(rows):
        X[u, items] = 1
    X = X.tocsr()
    model = SANSA(exact_config(1.0)).fit(X)
    ids, scores = model.recommend(X, k=1)
    for u in range(40):
        group = u % 2
        missing = set(range(group * 4, group * 4 + 4)) - set(rows[u])
        assert ids[u, 0] in missing and scores[u, 0] > 0


def test_recommend_contract(ml100k):
    model = SANSA(SANSAConfig(50.0, 0.02, ICFGramianFactorizerConfig(), UMRUnitLowerTriangleInverterConfig())).fit(ml100k)
    X = ml100k[:50]
    ids, scores = model.recommend(X, k=20)
    assert ids.shape == scores.shape == (50, 20) and ids.dtype == np.int64
    # ranked best first, never a seen item
    assert np.all(np.diff(scores, axis=1) <= 0)
    for u in range(50):
        assert not set(ids[u]) & set(X[u].indices)
    # batch equals single user
    one_ids, one_scores = model.recommend(X[7].toarray().ravel(), k=20)
    assert one_ids.shape == (20,)
    np.testing.assert_array_equal(one_ids, ids[7])
    # equals a dense brute force
    dense = model.forward(X)
    dense[X.nonzero()] = -np.inf
    np.testing.assert_allclose(np.take_along_axis(dense, ids, axis=1), scores, rtol=1e-6)
    np.testing.assert_allclose(np.sort(dense, axis=1)[:, ::-1][:, :20], scores, rtol=1e-6)


def test_fewer_candidates_than_k_are_padded_not_crashing():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0]], dtype=np.float32))
    model = SANSA(exact_config(1.0)).fit(X)
    ids, scores = model.recommend(X, k=3)
    # user 1 has seen 3 of 4 items: one candidate, then padding
    assert ids[1, 0] == 0 and np.isfinite(scores[1, 0])
    assert list(ids[1, 1:]) == [-1, -1] and np.all(np.isneginf(scores[1, 1:]))


def test_masked_items_never_returned_even_when_all_scores_are_negative():
    model = SANSA().load_weights((sp.identity(4, format="csr"), sp.csr_matrix(-np.ones((4, 4)) - np.eye(4))))
    X = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    ids, scores = model.recommend(X, k=4)
    assert 0 not in ids[0, :3] and ids[0, 3] == -1 and np.isneginf(scores[0, 3])


def test_input_errors_are_clear(ml100k):
    model = SANSA(SANSAConfig(50.0, 0.02)).fit(ml100k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.recommend(ml100k[:2], k=0)
    with pytest.raises(ValueError, match="item columns but the model was trained on 1682 items"):
        model.recommend(sp.csr_matrix((2, 10)), k=5)
    with pytest.raises(ValueError, match="negative"):
        SANSA().fit(-ml100k)
    with pytest.raises(TypeError, match="scipy.sparse matrix"):
        SANSA().fit([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="no weights yet"):
        SANSA().recommend(ml100k[:2], k=5)
    with pytest.raises(ValueError, match="square item-item matrix"):
        SANSA().fit(ml100k, compute_gramian=False)


def test_density_below_two_over_n_warns(rng):
    X = random_interactions(rng, 50, 20, 0.2)
    with pytest.warns(DaskRecWarning, match="below 2/n_items"):
        SANSA(SANSAConfig(1.0, 0.01)).fit(X)


def test_precomputed_gramian_equals_computed(rng):
    X = random_interactions(rng, 80, 25, 0.15)
    a = SANSA(exact_config(3.0)).fit(X)
    b = SANSA(exact_config(3.0)).fit((X.T @ X).tocsr(), compute_gramian=False)
    np.testing.assert_allclose(dense_B(a), dense_B(b), atol=1e-5)


def test_save_load_round_trip(tmp_path, ml100k):
    model = SANSA(SANSAConfig(50.0, 0.02)).fit(ml100k)
    path = model.save(tmp_path / "model.zarr")
    loaded = SANSA.load(path)
    assert loaded.config == model.config
    for a, b in zip(model.weights, loaded.weights):
        assert (a != b).nnz == 0
    np.testing.assert_array_equal(loaded.recommend(ml100k[:5], 10)[0], model.recommend(ml100k[:5], 10)[0])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_rejects_non_models(tmp_path):
    with pytest.raises(FileNotFoundError):
        SANSA.load(tmp_path / "missing")
    import zarr

    zarr.open_group(str(tmp_path / "other"), mode="w")
    with pytest.raises(ValueError, match="not a dask_rec model"):
        SANSA.load(tmp_path / "other")


@pytest.fixture(scope="module")
def ml100k():
    from shared_data import interaction_matrix

    return interaction_matrix("ml-100k")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_sansa_implements_the_recommender_contract():
    """SANSA is a Recommender: its block scorer gives what recommend gives, and the base's
    methods (scorer, topk_block) see its weights."""
    from conformance import small_interactions
    from dask_rec.models.base import Recommender

    X = small_interactions(6, n_users=80, n_items=30)
    model = SANSA(exact_config(l2=5.0)).fit(X)
    assert isinstance(model, Recommender) and model.name == "sansa"
    ids, scores = model.topk_block(X[:10], 5)
    want_ids, want_scores = model.recommend(X[:10], 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert model.scorer().n_items == 30


class TestSANSAConformance(RecommenderConformance):
    """SANSA through the recommender contract's conformance suite, like every other model."""

    def make_model(self):
        return SANSA(SANSAConfig(l2=5.0, weight_matrix_density=0.5))
