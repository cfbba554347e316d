"""Issue 13, finding 8: a model fitted on a client outlives it (small weights come home at the end of
fit); weights left on the cluster give one line saying what to call before closing."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from conformance import small_interactions
from dask_rec import SANSA, SANSAConfig

X = small_interactions(n_users=300, n_items=60)
CFG = SANSAConfig(weight_matrix_density=0.2)


def _cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit="2GiB", silence_logs=40)
    return cluster, Client(cluster)


def test_the_notebook_snippet_works_after_the_client_closes(tmp_path):
    reference = SANSA(CFG).fit(X)
    cluster, client = _cluster()
    with cluster, client:
        model = SANSA(CFG).fit(X, client=client)
    assert client.status == "closed"
    W1, W2 = model.weights
    assert (W1 != reference.weights[0]).nnz == 0 and (W2 != reference.weights[1]).nnz == 0
    ids, scores = model.recommend(X[:20], 5)
    np.testing.assert_array_equal(ids, reference.recommend(X[:20], 5)[0])
    model.save(tmp_path / "m.zarr")
    assert SANSA.load(tmp_path / "m.zarr").n_items == 60
    assert 0 < model.fit_report_["weights_bytes"] <= dask.config.get("dask_rec.model.fetch-bytes")


def test_weights_above_the_threshold_stay_and_say_what_to_call(tmp_path):
    cluster, client = _cluster()
    with cluster, client, dask.config.set({"dask_rec.model.fetch-bytes": 0}):
        kept = SANSA(CFG).fit(X, client=client)
        fetched = SANSA(CFG).fit(X, client=client)
        assert kept._weights[0] is None and fetched._weights[0] is None  # both left on the cluster
        fetched.fetch()
        saved = SANSA(CFG).fit(X, client=client)
        saved.save(tmp_path / "m.zarr")  # the workers write the weights
    for call in (lambda: kept.weights, lambda: kept.recommend(X[:3], 5), lambda: kept.save(tmp_path / "x.zarr"),
                 lambda: kept.recommend_users(X[:3], k=5), kept.fetch):
        with pytest.raises(RuntimeError) as info:
            call()
        text = str(info.value)
        assert "\n" not in text and "stayed on the cluster and its client is closed" in text
        assert "call model.fetch() or model.save(path) before closing the client" in text
    assert fetched.recommend(X[:3], 5)[0].shape == (3, 5)
    assert SANSA.load(tmp_path / "m.zarr").recommend(X[:3], 5)[0].shape == (3, 5)
