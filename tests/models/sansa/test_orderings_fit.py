"""Item orderings inside real fits: valid permutations, popularity semantics, cluster = in process.

Small data (ml-100k: 943 users x 1,682 items), l2 = 50, density 0.02, both factorizers and all four
orderings. The ordering a fit used is observable in its weights: M ≈ L⁻¹ is lower triangular in the
factor's order p with its diagonal always kept, and ``W1 = M[:, p⁻¹]ᵀ``, so row i of W1 (item i)
has its smallest column index at item i's position in p. :func:`order_from_weights` reads p back.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec import (
    SANSA,
    CHOLMODGramianFactorizerConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
    UMRUnitLowerTriangleInverterConfig,
)
from dask_rec.config import REORDERING_METHODS
from dask_rec.kernels.factorization import factor_budget
from dask_rec.kernels import ordering as ordering_module
from dask_rec.kernels.gramian import block_gramian, icf_scaling, gramian_row_norms, item_counts, regularize, scale_symmetric
from dask_rec.kernels.ordering import item_ordering
from shared_data import interaction_matrix

pytest.importorskip("sksparse.cholmod")

L2, DENSITY = 50.0, 0.02
FACTORIZERS = {"icf": ICFGramianFactorizerConfig, "cholmod": CHOLMODGramianFactorizerConfig}
CASES = [(f, o) for f in FACTORIZERS for o in REORDERING_METHODS]


def _config(factorizer: str, ordering: str) -> SANSAConfig:
    return SANSAConfig(L2, DENSITY, FACTORIZERS[factorizer](reordering_method=ordering),
                       UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=2))


@pytest.fixture(scope="module")
def X():
    return interaction_matrix("ml-100k")


@pytest.fixture(scope="module")
def fits(X):
    """In-process fit per (factorizer, ordering), with the permutation each fit computed."""
    out = {}
    mp = pytest.MonkeyPatch()
    seen = []
    real = ordering_module.item_ordering

    def spy(method, **kwargs):
        p = real(method, **kwargs)
        seen.append((method, p.copy()))
        return p

    mp.setattr(ordering_module, "item_ordering", spy)  # factorize imports it at call time
    try:
        for case in CASES:
            seen.clear()
            model = SANSA(_config(*case)).fit(X)
            assert len(seen) == 1, f"{case}: the fit computed {len(seen)} orderings"
            out[case] = (model, seen[0][0], seen[0][1])
    finally:
        mp.undo()
    return out


def order_from_weights(W1: sp.csr_matrix) -> np.ndarray:
    """The factor's item order p, read back from W1 (see the module docstring)."""
    W1 = W1.tocsr()
    assert np.all(np.diff(W1.indptr) > 0), "an item lost its diagonal entry"
    first = np.minimum.reduceat(W1.indices, W1.indptr[:-1])  # smallest latent index per item
    p = np.empty(W1.shape[0], dtype=np.int64)
    p[first] = np.arange(W1.shape[0])
    assert np.array_equal(np.sort(first), np.arange(W1.shape[0])), "positions are not a permutation"
    return p


def _expected_order(X, factorizer: str, ordering: str) -> np.ndarray:
    """The ordering as the factorize stage computes it, from the same inputs."""
    G = block_gramian(X)
    if factorizer == "icf":
        G = scale_symmetric(G, icf_scaling(gramian_row_norms(G)))
    A = regularize(G, L2).tocsc()
    return item_ordering(ordering, X=X if ordering == "colamd" else None, A=A, item_counts=item_counts(X))


@pytest.mark.parametrize("factorizer,ordering", CASES)
def test_fit_uses_a_valid_permutation_and_gives_sane_factor_and_weights(X, fits, factorizer, ordering):
    model, method, p = fits[(factorizer, ordering)]
    n = X.shape[1]
    assert method == ordering
    assert p.dtype == np.int64 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))
    # the permutation the fit computed is the one the weights were built in, and the documented one
    np.testing.assert_array_equal(order_from_weights(model.weights[0]), p)
    np.testing.assert_array_equal(p, _expected_order(X, factorizer, ordering))

    stats = model.fit_report_["factor"]
    budget = factor_budget(DENSITY, n)
    assert stats["n_items"] == n
    assert 0.0 <= stats["ordering_seconds"] < 30 and 0.0 < stats["factorization_seconds"] < 60
    assert n <= stats["L_nnz"] <= budget + n  # ties at CHOLMOD's cut may keep a few more
    assert stats["L_nnz"] >= 0.9 * budget  # ml-100k's Gramian is dense enough to fill the budget
    if factorizer == "cholmod":
        assert stats["factor_nnz"] >= stats["L_nnz"]  # fill before pruning
        assert stats["factor_nnz"] <= n * (n + 1) // 2
    for W in model.weights:
        assert W.shape == (n, n) and np.all(np.isfinite(W.data))
        assert 0.5 * budget <= W.nnz <= 1.5 * budget
    # a sane model ranks: the held-in history scores highest for co-watched films, not NaN
    scores = model.forward(X[:50])
    assert np.all(np.isfinite(scores[scores > -np.inf]))


@pytest.mark.parametrize("factorizer", FACTORIZERS)
def test_orderings_give_different_working_models(X, fits, factorizer):
    """The ordering changes the approximation (else the option would be moot) and none breaks it.

    How much each ordering ranks better or worse is the benchmark's question
    (``benchmarks/bench_orderings.py``), not a test's: on ml-100k in-sample they differ by up to 0.1.
    """
    from dask_rec import evaluate, split_strong_generalization

    weights = {o: fits[(factorizer, o)][0].weights for o in REORDERING_METHODS}
    W_pop = weights["popularity"][0]
    for o in ("colamd", "natural"):
        assert abs(weights[o][0] - W_pop).nnz > 0, f"{o} and popularity gave the same W1"
    # quality on the full data (in-sample; a smoke check that no ordering breaks the model)
    _, history, targets = split_strong_generalization(X, n_test_users=200, seed=0)
    recalls = {o: evaluate(w, history, targets, ks=(20,))["recall@20"] for o, w in weights.items()}
    assert min(recalls.values()) > 0.3, recalls  # popularity ranking alone: about 0.2


def test_popularity_order_is_deterministic_and_puts_the_most_popular_item_last(X, fits):
    counts = np.asarray((X != 0).sum(axis=0)).ravel()
    p1 = item_ordering("popularity", X=X)
    p2 = item_ordering("popularity", X=X.copy())
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, item_ordering("popularity", item_counts=counts))
    assert np.all(np.diff(counts[p1]) >= 0)  # ascending popularity
    top = np.flatnonzero(counts == counts.max())
    assert p1[-1] == top.max()  # the most popular item last (ties: the highest index)
    ties = np.diff(counts[p1]) == 0
    assert np.all(np.diff(p1)[ties] > 0)  # stable: ties by item index

    for factorizer in FACTORIZERS:
        model, _, p = fits[(factorizer, "popularity")]
        np.testing.assert_array_equal(p, p1)
        # observable in the weights: the last-eliminated item's column of M is e_n, so its W1 row
        # holds only the diagonal, while every other item's row reaches later positions
        W1 = model.weights[0].tocsr()
        last = W1[p1[-1]]
        assert last.nnz == 1 and last.indices[0] == X.shape[1] - 1
        assert np.mean(np.diff(W1.indptr)[p1[:-1]] > 1) > 0.5


def _same_weights(a, b) -> None:
    for wa, wb in zip(a, b):
        assert wa.shape == wb.shape
        diff = abs(wa - wb)
        assert diff.nnz == 0 or diff.max() <= 1e-6 * max(abs(wa).max(), 1.0)


@pytest.mark.parametrize("factorizer,ordering", CASES)
def test_cluster_fit_equals_in_process_fit(X, fits, local_client, factorizer, ordering):
    expected = fits[(factorizer, ordering)][0]
    model = SANSA(_config(factorizer, ordering)).fit(X, client=local_client, progress=False)
    weights = model.weights
    _same_weights(weights, expected.weights)
    np.testing.assert_array_equal(order_from_weights(weights[0]), fits[(factorizer, ordering)][2])
    assert model.fit_report_["factor"]["L_nnz"] == expected.fit_report_["factor"]["L_nnz"]


def test_fit_with_a_client_that_is_not_the_default(X, local_client):
    model = SANSA(_config("icf", "popularity")).fit(X, client=local_client, progress=False)
    assert model.weights[0].shape == (X.shape[1], X.shape[1])
