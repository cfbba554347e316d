"""Scoring and top-k kernels against their slow twins, scipy, hand-made cases and the reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_rec.kernels.scoring import (
    popularity_order,
    popularity_topk_block,
    popularity_topk_block_naive,
    recommend_block,
    recommend_block_naive,
    score_block,
    score_block_naive,
    similar_items_block,
    similar_items_block_naive,
)
from dask_rec.kernels.topk import top_k_of_scores, top_k_of_scores_naive

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sparse(rng, shape, density, integer=True, index_dtype=np.int32):
    """A random CSR matrix; small integer values make every sum exact (ties and all)."""
    n = int(round(density * shape[0] * shape[1]))
    flat = rng.choice(shape[0] * shape[1], size=n, replace=False) if shape[0] * shape[1] else np.zeros(0, int)
    rows, cols = np.divmod(flat, max(shape[1], 1))
    if integer:
        values = rng.integers(-3, 4, size=n).astype(np.float32)
        values[values == 0] = 1
    else:
        values = rng.standard_normal(n).astype(np.float32)
    A = sp.csr_matrix((values, (rows, cols)), shape=shape, dtype=np.float32)
    A.indices = A.indices.astype(index_dtype)
    A.indptr = A.indptr.astype(index_dtype)
    return A


@st.composite
def problems(draw, integer=True):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b = draw(st.integers(0, 9))
    n = draw(st.integers(1, 14))
    X = _sparse(rng, (b, n), draw(st.sampled_from([0.0, 0.1, 0.3, 0.6])), integer)
    X.data[:] = np.abs(X.data)  # interactions are positive; weights are not
    W1 = _sparse(rng, (n, n), draw(st.sampled_from([0.05, 0.2, 0.5, 1.0])), integer)
    W2 = _sparse(rng, (n, n), draw(st.sampled_from([0.05, 0.2, 0.5, 1.0])), integer,
                 index_dtype=draw(st.sampled_from([np.int32, np.int64])))
    k = draw(st.integers(0, n + 3))
    return X, W1, W2, k


def _assert_contract(ids, scores, exclude=None):
    """Ranked best first, ties by lower id, padding only at the end, nothing excluded."""
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    pad = ids < 0
    assert np.all(scores[pad] == -np.inf) and np.all(np.isfinite(scores[~pad]))
    assert np.all(pad[:, :-1] <= pad[:, 1:])  # padding is a suffix
    for r in range(ids.shape[0]):
        real = ids[r][~pad[r]]
        s = scores[r][~pad[r]]
        assert len(set(real.tolist())) == real.size
        assert np.all((s[:-1] > s[1:]) | ((s[:-1] == s[1:]) & (real[:-1] < real[1:])))
        if exclude is not None:
            seen = set(exclude.indices[exclude.indptr[r]:exclude.indptr[r + 1]].tolist())
            assert not seen & set(real.tolist())


# ---------------------------------------------------------------------------- score_block


@HYPOTHESIS
@given(problems(integer=False))
def test_score_block_equals_scipy_product(problem):
    X, W1, W2, _ = problem
    expected = (X @ W1 @ W2).toarray()
    got = score_block(X, W1, W2)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@HYPOTHESIS
@given(problems(integer=True))
def test_score_block_matches_twin_exactly(problem):
    X, W1, W2, _ = problem
    for fill in (0.0, -np.inf):
        np.testing.assert_array_equal(score_block(X, W1, W2, fill), score_block_naive(X, W1, W2, fill))


def test_score_block_on_real_sized_model(rng):
    X = _sparse(rng, (50, 300), 0.05, integer=False)
    X.data[:] = 1
    W1 = _sparse(rng, (300, 300), 0.02, integer=False)
    W2 = _sparse(rng, (300, 300), 0.02, integer=False)
    np.testing.assert_allclose(score_block(X, W1, W2), (X @ W1 @ W2).toarray(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- top_k_of_scores


@HYPOTHESIS
@given(st.integers(0, 2**32 - 1), st.integers(0, 6), st.integers(1, 12), st.integers(0, 15),
       st.booleans(), st.booleans())
def test_topk_block_matches_twin(seed, b, n, k, use_exclude, use_allowed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, size=(b, n)).astype(np.float32)  # many ties
    scores[rng.random((b, n)) < 0.15] = -np.inf
    scores[rng.random((b, n)) < 0.1] = np.nan
    exclude = _sparse(rng, (b, n), 0.3) if use_exclude else None
    allowed = rng.random(n) < 0.7 if use_allowed else None
    ids, top = top_k_of_scores(scores, k, exclude=exclude, allowed=allowed)
    ids_n, top_n = top_k_of_scores_naive(scores, k, exclude=exclude, allowed=allowed)
    np.testing.assert_array_equal(ids, ids_n)
    np.testing.assert_array_equal(top, top_n)
    _assert_contract(ids, top, exclude)
    if allowed is not None:
        assert np.all(allowed[ids[ids >= 0]])


def test_topk_block_hand_example():
    scores = np.array([[0.5, 2.0, 2.0, -1.0, 3.0],
                       [-np.inf, -2.0, np.nan, -1.0, -np.inf]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]))
    ids, top = top_k_of_scores(scores, 4, exclude=exclude)
    # row 0: item 4 is masked; 1 and 2 tie at 2.0 -> lower id first
    np.testing.assert_array_equal(ids, [[1, 2, 0, 3], [3, 1, -1, -1]])
    np.testing.assert_array_equal(top, np.array([[2, 2, 0.5, -1], [-1, -2, -np.inf, -np.inf]], np.float32))


def test_topk_block_float64_scores_and_k_zero():
    scores = np.array([[1.0, 3.0, 2.0]])
    ids, top = top_k_of_scores(scores, 2)
    np.testing.assert_array_equal(ids, [[1, 2]])
    assert top.dtype == np.float32
    ids, top = top_k_of_scores(scores, 0)
    assert ids.shape == (1, 0) and top.shape == (1, 0)


# ---------------------------------------------------------------------------- recommend_block


@HYPOTHESIS
@given(problems(integer=True), st.booleans())
def test_recommend_block_matches_twin_exactly(problem, exclude_seen):
    X, W1, W2, k = problem
    ids, top = recommend_block(X, W1, W2, k, exclude_seen=exclude_seen)
    ids_n, top_n = recommend_block_naive(X, W1, W2, k, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(ids, ids_n)
    np.testing.assert_array_equal(top, top_n)
    _assert_contract(ids, top, X if exclude_seen else None)


@HYPOTHESIS
@given(problems(integer=False), st.booleans())
def test_recommend_block_is_topk_of_score_block_bit_for_bit(problem, exclude_seen):
    X, W1, W2, k = problem
    ids, top = recommend_block(X, W1, W2, k, exclude_seen=exclude_seen)
    dense = score_block(X, W1, W2, fill_value=-np.inf)
    ids_d, top_d = top_k_of_scores(dense, k, exclude=X if exclude_seen else None)
    np.testing.assert_array_equal(ids, ids_d)
    np.testing.assert_array_equal(top, top_d)


@HYPOTHESIS
@given(problems(integer=False))
def test_recommend_block_close_to_twin_with_float_weights(problem):
    X, W1, W2, k = problem
    ids, top = recommend_block(X, W1, W2, k)
    ids_n, top_n = recommend_block_naive(X, W1, W2, k)
    np.testing.assert_array_equal(ids < 0, ids_n < 0)
    np.testing.assert_allclose(top, top_n, rtol=1e-5, atol=1e-6)
    # ids agree wherever the score is not (nearly) tied with a neighbour
    exact = score_block_naive(X, W1, W2, -np.inf)
    for r, c in zip(*np.nonzero(ids != ids_n)):
        assert abs(exact[r, ids[r, c]] - exact[r, ids_n[r, c]]) <= 1e-5 * max(1.0, abs(top_n[r, c]))


@HYPOTHESIS
@given(st.integers(0, 2**32 - 1), st.integers(65, 400), st.integers(1, 8), st.booleans(), st.booleans())
def test_recommend_block_chunked_scan_on_many_items(seed, n, k, use_allowed, with_nan):
    # enough items that the scan passes over whole chunks once its heap is full (the small
    # problems above fit in one chunk); NaN weights make NaN scores, which are never candidates
    rng = np.random.default_rng(seed)
    X = _sparse(rng, (12, n), 0.03)
    X.data[:] = np.abs(X.data)
    W1 = _sparse(rng, (n, n), 0.03)
    W2 = _sparse(rng, (n, n), 0.05)
    if with_nan:
        W2.data[rng.random(W2.nnz) < 0.02] = np.nan
    allowed = rng.random(n) < 0.7 if use_allowed else None
    ids, top = recommend_block(X, W1, W2, k, allowed=allowed)
    dense = score_block(X, W1, W2, fill_value=-np.inf)  # no chunks in top_k_of_scores's scan
    ids_d, top_d = top_k_of_scores(dense, k, exclude=X, allowed=allowed)
    np.testing.assert_array_equal(ids, ids_d)
    np.testing.assert_array_equal(top, top_d)
    _assert_contract(ids, top, X)
    if not with_nan:  # the dense twin spreads NaN (0 * NaN) where the sparse product has none
        ids_n, top_n = recommend_block_naive(X, W1, W2, k, allowed=allowed)
        np.testing.assert_array_equal(ids, ids_n)
        np.testing.assert_array_equal(top, top_n)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.booleans())
def test_recommend_block_on_a_sparse_corner_of_a_large_catalog(seed, k, exclude_seen):
    # thousands of items, each user reaching a few scattered chunks of 64: most chunks hold no
    # score, negative scores must still rank, and every buffer is left clean for the next user
    # (a stale score would leak into the next row)
    rng = np.random.default_rng(seed)
    n = 2500
    X = _sparse(rng, (9, n), 0.003)
    X.data[:] = np.abs(X.data)
    W1 = _sparse(rng, (n, n), 0.001)
    W2 = _sparse(rng, (n, n), 0.002)
    ids, top = recommend_block(X, W1, W2, k, exclude_seen=exclude_seen)
    ids_n, top_n = recommend_block_naive(X, W1, W2, k, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(ids, ids_n)
    np.testing.assert_array_equal(top, top_n)
    ids_1 = np.vstack([recommend_block(X[r], W1, W2, k, exclude_seen=exclude_seen)[0] for r in range(9)])
    np.testing.assert_array_equal(ids, ids_1)


def test_masked_item_with_zero_score_never_beats_negative_scores():
    # the reference sets masked scores to 0, so a seen item would outrank negative candidates
    X = sp.csr_matrix(np.array([[1.0, 1.0, 0.0, 0.0]], np.float32))
    W1 = sp.identity(4, format="csr", dtype=np.float32)
    B = np.array([[0.0, 0.0, -1.0, -2.0],
                  [0.0, 0.0, -3.0, -0.5],
                  [0.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0]], np.float32)
    W2 = sp.csr_matrix(B)
    ids, top = recommend_block(X, W1, W2, 4)
    np.testing.assert_array_equal(ids, [[3, 2, -1, -1]])
    np.testing.assert_array_equal(top, np.array([[-2.5, -4.0, -np.inf, -np.inf]], np.float32))


def test_padding_when_fewer_candidates_than_k():
    # n_items < k, an empty user, and a user whose items lead nowhere
    X = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]], np.float32))
    W1 = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32))
    W2 = sp.csr_matrix(np.array([[0, 2, 1], [0, 0, 0], [0, 0, 0]], np.float32))
    ids, top = recommend_block(X, W1, W2, 5)
    np.testing.assert_array_equal(ids, [[1, 2, -1, -1, -1], [-1] * 5, [-1] * 5])
    assert np.all(top[1:] == -np.inf) and np.all(top[0, 2:] == -np.inf)
    np.testing.assert_array_equal(top[0, :2], [2, 1])


def test_allowed_mask_and_threads(rng):
    X = _sparse(rng, (300, 60), 0.1, integer=False)
    X.data[:] = 1
    W1 = _sparse(rng, (60, 60), 0.1, integer=False)
    W2 = _sparse(rng, (60, 60), 0.1, integer=False)
    allowed = rng.random(60) < 0.5
    ids, top = recommend_block(X, W1, W2, 7, allowed=allowed)
    assert np.all(allowed[ids[ids >= 0]])
    ids_n, top_n = recommend_block_naive(X, W1, W2, 7, allowed=allowed)
    np.testing.assert_allclose(top, top_n, rtol=1e-5, atol=1e-6)
    for threads in (2, 3):
        ids_t, top_t = recommend_block(X, W1, W2, 7, allowed=allowed, n_threads=threads)
        np.testing.assert_array_equal(ids_t, ids)
        np.testing.assert_array_equal(top_t, top)


def test_non_float_inputs_and_other_formats():
    X = sp.coo_matrix(np.array([[1, 0, 1]], dtype=np.int64))
    W = sp.csc_matrix(np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=np.float64))
    ids, top = recommend_block(X, W, sp.identity(3, format="csr"), 3)
    np.testing.assert_array_equal(ids, [[1, -1, -1]])
    np.testing.assert_array_equal(top[0, :1], [4.0])


def test_input_validation():
    W = sp.identity(3, format="csr", dtype=np.float32)
    with pytest.raises(ValueError, match="k must be"):
        recommend_block(sp.csr_matrix((1, 3)), W, W, -1)
    with pytest.raises(ValueError, match="do not chain"):
        recommend_block(sp.csr_matrix((1, 4)), W, W, 2)
    with pytest.raises(TypeError):
        recommend_block(np.zeros((1, 3)), W, W, 2)
    with pytest.raises(ValueError, match="allowed"):
        recommend_block(sp.csr_matrix((1, 3)), W, W, 2, allowed=np.ones(2, bool))
    with pytest.raises(ValueError, match="exclude"):
        top_k_of_scores(np.zeros((2, 3)), 1, exclude=sp.csr_matrix((1, 3)))


# ---------------------------------------------------------------------------- similar items, popularity


@HYPOTHESIS
@given(problems(integer=True))
def test_similar_items_matches_twin(problem):
    _, W1, W2, k = problem
    items = np.arange(W1.shape[0])[::-1]
    ids, top = similar_items_block(items, W1, W2, k)
    ids_n, top_n = similar_items_block_naive(items, W1, W2, k)
    np.testing.assert_array_equal(ids, ids_n)
    np.testing.assert_array_equal(top, top_n)
    assert not np.any(ids == items[:, None])


def test_similar_items_rejects_bad_ids():
    W = sp.identity(3, format="csr", dtype=np.float32)
    with pytest.raises(IndexError):
        similar_items_block([3], W, W, 2)


@HYPOTHESIS
@given(st.integers(0, 2**32 - 1), st.integers(0, 8), st.integers(1, 12), st.integers(0, 15), st.booleans())
def test_popularity_matches_twin(seed, b, n, k, exclude_seen):
    rng = np.random.default_rng(seed)
    X = _sparse(rng, (b, n), 0.3)
    counts = rng.integers(0, 4, size=n)
    ids, top = popularity_topk_block(X, counts, k, exclude_seen=exclude_seen)
    ids_n, top_n = popularity_topk_block_naive(X, counts, k, exclude_seen=exclude_seen)
    np.testing.assert_array_equal(ids, ids_n)
    np.testing.assert_array_equal(top, top_n)
    _assert_contract(ids, top, X if exclude_seen else None)


def test_popularity_order():
    order, counts = popularity_order(np.array([2, 0, 5, 2, 1]))
    np.testing.assert_array_equal(order, [2, 0, 3, 4])
    np.testing.assert_array_equal(counts, [5, 2, 2, 1])


# ---------------------------------------------------------------------------- the reference as oracle


def test_agrees_with_reference_sansa_recommend(rng):
    sansa = pytest.importorskip("sansa")
    n = 40
    X = _sparse(rng, (30, n), 0.1, integer=False)
    X.data[:] = 1
    # positive, fairly dense weights: every user has plenty of candidates, so the reference
    # (which crashes on fewer than k candidates and ranks masked items at 0) behaves
    W1 = sp.csr_matrix(np.abs(_sparse(rng, (n, n), 0.5, integer=False).toarray()))
    W2 = sp.csr_matrix(np.abs(_sparse(rng, (n, n), 0.5, integer=False).toarray()))
    config = sansa.SANSAConfig(
        l2=1.0, weight_matrix_density=0.5,
        gramian_factorizer_config=sansa.ICFGramianFactorizerConfig(),
        lower_triangle_inverter_config=sansa.UMRUnitLowerTriangleInverterConfig(),
    )
    ref = sansa.SANSA(config).load_weights((W1, W2))
    k = 5
    ref_ids, ref_scores = ref.recommend(X, k, True)
    ids, top = recommend_block(X, W1, W2, k)
    np.testing.assert_allclose(top, ref_scores, rtol=1e-5)
    np.testing.assert_array_equal(ids, ref_ids)


@pytest.mark.parametrize("tile", [1, 7, 50, 64])
def test_topk_accumulator_over_item_ranges_equals_topk_block(tile):
    """Scores offered one item range at a time select what top_k_of_scores selects on whole rows,
    ties (rounded scores), exclusions, the allowed mask, -inf and NaN included."""
    from dask_rec.kernels.topk import TopKAccumulator, top_k_of_scores

    rng = np.random.default_rng(tile)
    b, n, k = 9, 64, 6
    scores = np.round(rng.normal(size=(b, n)), 1).astype(np.float32)  # many ties
    scores[0, :] = -np.inf
    scores[1, ::3] = np.nan
    exclude = sp.random(b, n, density=0.3, format="csr", random_state=tile)
    allowed = rng.random(n) < 0.8
    for kwargs in ({}, {"exclude": exclude}, {"exclude": exclude, "allowed": allowed}):
        acc = TopKAccumulator(b, k, n, **kwargs)
        for t0 in range(0, n, tile):
            acc.offer(scores[:, t0:t0 + tile], t0)
        got = acc.result()
        want = top_k_of_scores(scores, k, **kwargs)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="do not fit"):
        TopKAccumulator(b, k, n).offer(scores[:, :10], n - 5)
