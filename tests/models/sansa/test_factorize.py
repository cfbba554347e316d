"""The factorization stage's kernel: ``L·diag(d)·Lᵀ`` against the regularised, permuted Gramian."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.config import CHOLMODGramianFactorizerConfig, ICFGramianFactorizerConfig
from dask_rec.exceptions import DaskRecWarning
from dask_rec.kernels.gramian import gramian_row_norms, icf_scaling
from dask_rec.kernels.factorization import effective_density, factor_budget, factorize_gramian
from oracles import random_interactions

pytest.importorskip("sksparse.cholmod")


def _ldlt(factor) -> np.ndarray:
    L = factor.L.toarray().astype(np.float64)
    return L @ np.diag(factor.d) @ L.T


def test_budget_and_density_floor():
    assert factor_budget(0.1, 30) == 90
    assert factor_budget(1e-6, 30) == 30  # never below the diagonal
    assert effective_density(0.5, 10) == 0.5
    with pytest.warns(DaskRecWarning, match="below 2/n_items"):
        assert effective_density(1e-4, 100) == pytest.approx(0.02)


@pytest.mark.parametrize("ordering", ["natural", "popularity", "amd"])
def test_cholmod_full_budget_factors_the_regularised_gramian(rng, ordering):
    X = random_interactions(rng, 80, 20, 0.2)
    G = (X.T @ X).astype(np.float64).tocsr()
    counts = np.bincount(X.indices, minlength=20)
    factor = factorize_gramian([G[:, :7], G[:, 7:]], l2=3.0, density=1.0, item_counts=counts,
                               factorizer_config=CHOLMODGramianFactorizerConfig(reordering_method=ordering))
    p = factor.p
    assert sorted(p.tolist()) == list(range(20))
    if ordering == "natural":
        np.testing.assert_array_equal(p, np.arange(20))
    if ordering == "popularity":
        assert np.all(np.diff(counts[p]) <= 0) or np.all(np.diff(counts[p]) >= 0)  # sorted by count
    A = (G.toarray() + 3.0 * np.eye(20))[np.ix_(p, p)]
    assert np.abs(_ldlt(factor) - A).max() / np.abs(A).max() < 1e-5
    assert np.allclose(factor.L.diagonal(), 1.0) and sp.tril(factor.L).nnz == factor.L.nnz
    assert factor.stats["L_nnz"] == factor.L.nnz and factor.stats["n_items"] == 20


def test_icf_full_budget_factors_the_scaled_gramian(rng):
    X = random_interactions(rng, 80, 20, 0.2)
    G = (X.T @ X).astype(np.float64).tocsr()
    factor = factorize_gramian([G], l2=3.0, density=1.0,
                               factorizer_config=ICFGramianFactorizerConfig(reordering_method="natural"))
    s = icf_scaling(gramian_row_norms(G))
    A = s[:, None] * G.toarray() * s[None, :] + 3.0 * np.eye(20)
    assert np.abs(_ldlt(factor) - A).max() / np.abs(A).max() < 1e-4


def test_icf_budget_bounds_the_factor(rng):
    X = random_interactions(rng, 200, 60, 0.15)
    G = (X.T @ X).astype(np.float64).tocsr()
    density = 0.05
    factor = factorize_gramian([G], l2=5.0, density=density, factorizer_config=ICFGramianFactorizerConfig())
    assert factor.L.nnz <= factor_budget(density, 60)
