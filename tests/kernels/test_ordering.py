"""Item orderings: valid permutations, popularity semantics, agreement with CHOLMOD."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.kernels.gramian import block_gramian, regularize
from dask_rec.kernels.ordering import inverse_permutation, item_ordering

cholmod = pytest.importorskip("sksparse.cholmod")

METHODS = ("colamd", "amd", "popularity", "natural")


@st.composite
def interactions(draw):
    n_users = draw(st.integers(1, 30))
    n_items = draw(st.integers(1, 25))
    density = draw(st.floats(0.0, 0.6))
    seed = draw(st.integers(0, 2**32 - 1))
    X = sp.random(n_users, n_items, density=density, format="csr", random_state=np.random.default_rng(seed))
    X.data[:] = 1.0
    return X


def assert_permutation(p, n):
    assert isinstance(p, np.ndarray) and p.dtype == np.int64 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


@settings(max_examples=40, deadline=None)
@given(X=interactions(), method=st.sampled_from(METHODS))
def test_every_method_gives_a_permutation(X, method):
    n = X.shape[1]
    A = regularize(block_gramian(X), 1.0)
    assert_permutation(item_ordering(method, X=X), n)
    assert_permutation(item_ordering(method, A=A), n)
    assert_permutation(item_ordering(method, X=X, A=A), n)
    if method in ("popularity", "natural"):
        counts = np.asarray((X != 0).sum(axis=0)).ravel()
        assert_permutation(item_ordering(method, item_counts=counts), n)


def test_popularity_ascending_ties_by_index_most_popular_last():
    counts = np.array([5, 1, 5, 0, 9, 1, 5])
    p = item_ordering("popularity", item_counts=counts)
    np.testing.assert_array_equal(p, [3, 1, 5, 0, 2, 6, 4])
    assert p[-1] == np.argmax(counts)
    np.testing.assert_array_equal(item_ordering("POPULARITY", item_counts=counts), p)  # deterministic


def test_popularity_sources_agree():
    rng = np.random.default_rng(1)
    X = sp.random(60, 30, density=0.2, format="csr", random_state=rng)
    X.data[:] = 1.0
    counts = np.asarray(X.sum(axis=0)).ravel().astype(np.int64)
    expected = np.argsort(counts, kind="stable")
    G = block_gramian(X)
    np.testing.assert_array_equal(item_ordering("popularity", item_counts=counts), expected)
    np.testing.assert_array_equal(item_ordering("popularity", X=X), expected)
    np.testing.assert_array_equal(item_ordering("popularity", A=G), expected)  # diag(XᵀX) = counts
    np.testing.assert_array_equal(item_ordering("popularity", A=regularize(G, 7.0)), expected)
    # item_counts wins over X, X over A
    rev = counts.max() - counts
    np.testing.assert_array_equal(item_ordering("popularity", X=X, A=G, item_counts=rev), np.argsort(rev, kind="stable"))


def test_natural_is_arange():
    np.testing.assert_array_equal(item_ordering("natural", item_counts=np.zeros(4)), np.arange(4))


def _fill(A, p):
    """Non-zeros of the exact Cholesky factor of A[p][:, p] (no further permutation)."""
    return cholmod.cholesky(A[p][:, p].tocsc(), ordering_method="natural").L().nnz


def test_colamd_is_cholmods_analysis_of_XtX():
    rng = np.random.default_rng(2)
    X = sp.random(200, 80, density=0.05, format="csr", random_state=rng)
    X.data[:] = 1.0
    p = item_ordering("colamd", X=X)
    np.testing.assert_array_equal(p, cholmod.analyze_AAt(X.T.tocsc(), ordering_method="colamd").P())
    # CHOLMOD factoring XᵀX + I itself with COLAMD uses the same order and gets the same fill
    own = cholmod.cholesky_AAt(X.T.tocsc(), beta=1.0, ordering_method="colamd")
    np.testing.assert_array_equal(own.P(), p)
    A = regularize(block_gramian(X), 1.0)
    assert _fill(A, p) == own.L().nnz
    assert _fill(A, p) <= _fill(A, np.arange(80))


def test_colamd_without_X_is_amd_on_A():
    rng = np.random.default_rng(4)
    X = sp.random(150, 60, density=0.05, format="csr", random_state=rng)
    X.data[:] = 1.0
    A = regularize(block_gramian(X), 1.0)
    p = item_ordering("colamd", A=A)
    np.testing.assert_array_equal(p, item_ordering("amd", A=A))
    np.testing.assert_array_equal(p, cholmod.analyze(A.tocsc(), ordering_method="amd").P())
    # X takes precedence when both are given
    np.testing.assert_array_equal(item_ordering("colamd", X=X, A=A), item_ordering("colamd", X=X))


def test_amd_from_X_has_the_fill_of_amd_on_A():
    rng = np.random.default_rng(5)
    X = sp.random(150, 60, density=0.05, format="csr", random_state=rng)
    X.data[:] = 1.0
    A = regularize(block_gramian(X), 1.0)
    assert _fill(A, item_ordering("amd", X=X)) == _fill(A, item_ordering("amd", A=A))


def test_orderings_ignore_values_and_accept_enum_like():
    rng = np.random.default_rng(6)
    X = sp.random(50, 20, density=0.1, format="csr", random_state=rng)
    Xb = X.copy()
    Xb.data[:] = 1.0

    class Method:
        value = "colamd"

    np.testing.assert_array_equal(item_ordering(Method(), X=X), item_ordering("colamd", X=Xb))


def test_clear_errors():
    X = sp.random(5, 4, density=0.5, format="csr", random_state=0)
    with pytest.raises(ValueError, match="one of"):
        item_ordering("metis", X=X)
    with pytest.raises(ValueError, match="colamd ordering needs"):
        item_ordering("colamd", item_counts=np.ones(4))
    with pytest.raises(ValueError, match="amd ordering needs"):
        item_ordering("amd", item_counts=np.ones(4))
    with pytest.raises(ValueError, match="popularity ordering needs"):
        item_ordering("popularity")
    with pytest.raises(ValueError, match="natural ordering needs"):
        item_ordering("natural")
    with pytest.raises(ValueError, match="disagree"):
        item_ordering("natural", X=X, item_counts=np.ones(3))
    with pytest.raises(ValueError, match="square"):
        item_ordering("amd", A=sp.csr_matrix((3, 4)))
    with pytest.raises(TypeError):
        item_ordering("colamd", X=X.toarray())


def test_inverse_permutation():
    p = np.array([2, 0, 3, 1])
    q = inverse_permutation(p)
    np.testing.assert_array_equal(q[p], np.arange(4))
    np.testing.assert_array_equal(p[q], np.arange(4))
