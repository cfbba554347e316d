"""Accuracy parity with the published reference ``sansa`` 1.1.0 on real datasets.

Same data, same split (strong generalization: held-out users, 20% of each one's items as targets),
same configuration, the reference's COLAMD ordering; Recall@20 and NDCG@100 of ours must be
within 1% (relative) of the reference's. Both models are evaluated by the same metric code.
"""

import numpy as np
import pytest

sansa = pytest.importorskip("sansa", reason="the reference package sansa==1.1.0 (test extra) is not installed")

import dask_rec  # noqa: E402
from dask_rec.serving.evaluation import evaluate, split_strong_generalization  # noqa: E402
from shared_data import interaction_matrix  # noqa: E402


def _configs(module, factorizer, l2, density, scans, finetune):
    fconf = module.ICFGramianFactorizerConfig() if factorizer == "icf" else module.CHOLMODGramianFactorizerConfig()
    if module is dask_rec:
        fconf.reordering_method = "colamd"
    return module.SANSAConfig(
        l2=l2, weight_matrix_density=density, gramian_factorizer_config=fconf,
        lower_triangle_inverter_config=module.UMRUnitLowerTriangleInverterConfig(scans=scans, finetune_steps=finetune),
    )


def _compare(dataset, factorizer, l2, density, scans, finetune, n_test):
    X = interaction_matrix(dataset)
    split = split_strong_generalization(X, n_test_users=n_test, seed=0)
    ours = dask_rec.SANSA(_configs(dask_rec, factorizer, l2, density, scans, finetune)).fit(split.train)
    ref = sansa.SANSA(_configs(sansa, factorizer, l2, density, scans, finetune)).fit(split.train)
    m_ours = evaluate(ours.weights, split.test_history, split.test_targets, ks=(20, 100))
    m_ref = evaluate(ref.weights, split.test_history, split.test_targets, ks=(20, 100))
    for key in ("recall@20", "ndcg@100"):
        assert m_ours[key] == pytest.approx(m_ref[key], rel=0.01), (key, m_ours[key], m_ref[key])
    # the two models are the same size
    nnz_ours = sum(w.nnz for w in ours.weights)
    nnz_ref = sum(w.nnz for w in ref.weights)
    assert nnz_ours == pytest.approx(nnz_ref, rel=0.1)
    return m_ours, m_ref


@pytest.mark.parametrize("factorizer", ["icf", "cholmod"])
def test_parity_ml100k(factorizer):
    _compare("ml-100k", factorizer, l2=50.0, density=0.05, scans=3, finetune=10, n_test=300)


def test_parity_yelp2020_icf():
    _compare("yelp2020", "icf", l2=10.0, density=2e-3, scans=3, finetune=10, n_test=2400)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["gowalla", "amazon-book-kgat"])
@pytest.mark.parametrize("factorizer", ["icf", "cholmod"])
def test_parity_large(dataset, factorizer):
    _compare(dataset, factorizer, l2=10.0, density=2e-3, scans=3, finetune=10, n_test=5000)
