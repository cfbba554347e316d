"""SANSA's fit driver: stages in process, exact EASE when nothing is pruned, a shared Gramian."""

from __future__ import annotations

import numpy as np
import pytest

from dask_rec.config import (
    CHOLMODGramianFactorizerConfig,
    ExactUnitLowerTriangleInverterConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
)
from dask_rec.data.blocks import as_row_block_source
from dask_rec.executor import InProcessExecutor
from dask_rec.models.sansa.training import (
    compute_lower_gramian,
    fit_weights,
    fit_weights_from_lower_gramian,
    release_lower_gramian,
)
from oracles import ease_weights, offdiagonal_relative_error, random_interactions

pytest.importorskip("sksparse.cholmod")


def _B(result) -> np.ndarray:
    W1, W2 = result.weights
    return (W1 @ W2).toarray()


def test_unpruned_fit_is_ease(rng):
    X = random_interactions(rng, 120, 25, 0.2)
    config = SANSAConfig(l2=4.0, weight_matrix_density=1.0, gramian_factorizer_config=CHOLMODGramianFactorizerConfig(),
                         lower_triangle_inverter_config=ExactUnitLowerTriangleInverterConfig())
    result = fit_weights(as_row_block_source(X, rows_per_block=30), config, InProcessExecutor(), progress=False)
    assert result.n_items == 25
    assert offdiagonal_relative_error(_B(result), ease_weights(X, 4.0)) < 1e-3
    report = result.report
    assert report["n_users"] == 120 and report["nnz"] == X.nnz
    assert {"read", "factorize", "invert", "weights"} <= set(report["stage_seconds"])


def test_shared_gramian_gives_the_weights_of_a_direct_fit(rng):
    X = random_interactions(rng, 150, 30, 0.15)
    source = as_row_block_source(X, rows_per_block=40)
    ex = InProcessExecutor()
    lower = compute_lower_gramian(source, ex, ordering="popularity", progress=False)
    try:
        for l2, density in ((2.0, 0.3), (8.0, 0.1)):
            config = SANSAConfig(l2=l2, weight_matrix_density=density,
                                 gramian_factorizer_config=ICFGramianFactorizerConfig(reordering_method="popularity"))
            shared = fit_weights_from_lower_gramian(lower, config, ex, progress=False)
            direct = fit_weights(source, config, ex, progress=False)
            np.testing.assert_allclose(_B(shared), _B(direct), rtol=1e-5, atol=1e-6)
        wrong = SANSAConfig(gramian_factorizer_config=ICFGramianFactorizerConfig(reordering_method="natural"))
        with pytest.raises(ValueError, match="popularity' order"):
            fit_weights_from_lower_gramian(lower, wrong, ex, progress=False)
    finally:
        release_lower_gramian(ex, lower)
    with pytest.raises(ValueError, match="popularity or natural"):
        compute_lower_gramian(source, ex, ordering="amd")
