"""The fit on a Dask cluster: same numbers as in process, work spread, nothing big at the client, lost workers."""

import dask.config
import numpy as np
import pytest
import scipy.sparse as sp

distributed = pytest.importorskip("distributed")
from distributed import Client, LocalCluster, Nanny, SpecCluster, Scheduler  # noqa: E402

from dask_rec import (  # noqa: E402
    SANSA,
    CHOLMODGramianFactorizerConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
    UMRUnitLowerTriangleInverterConfig,
)
from cluster_utils import gathered, kill_worker_during  # noqa: E402
from shared_data import interaction_matrix  # noqa: E402

CONFIG = SANSAConfig(10.0, 2e-3, ICFGramianFactorizerConfig(),
                     UMRUnitLowerTriangleInverterConfig(scans=2, finetune_steps=3))


def _same_weights(a, b):
    for wa, wb in zip(a, b):
        assert wa.shape == wb.shape
        diff = abs(wa - wb)
        assert diff.nnz == 0 or diff.max() <= 1e-6 * max(abs(wa).max(), 1.0)


def _top20(model, X):
    return model.recommend(X, k=20)[0]


@pytest.fixture(scope="module")
def yelp():
    return interaction_matrix("yelp2020")


@pytest.fixture(scope="module")
def yelp_in_process(yelp):
    return SANSA(CONFIG).fit(yelp)


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_distributed_fit_equals_in_process(yelp, yelp_in_process, n_workers):
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = SANSA(CONFIG).fit(yelp, client=client, progress=False)
        weights = model.weights  # gathered on first access
    _same_weights(weights, yelp_in_process.weights)
    users = yelp[:2000]
    np.testing.assert_array_equal(_top20(model, users), _top20(yelp_in_process, users))


def test_cholmod_fit_on_cluster_equals_in_process():
    X = interaction_matrix("ml-100k")
    config = SANSAConfig(50.0, 0.02, CHOLMODGramianFactorizerConfig(), UMRUnitLowerTriangleInverterConfig(scans=2))
    expected = SANSA(config).fit(X)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = SANSA(config).fit(X, client=client, progress=False)
        _same_weights(model.weights, expected.weights)


def _bigmem_cluster():
    worker = {"cls": Nanny, "options": {"nthreads": 1}}
    workers = {"plain": worker, "big": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"bigmem": 1}}}}
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})


def test_task_placement_and_client_traffic(yelp):
    """Gramian and UMR tasks run on both workers, the factorization on the bigmem one,
    and the client never receives a Gramian or a weight matrix during the fit."""
    X = yelp[:12000]
    with _bigmem_cluster() as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        with gathered(client) as received, distributed.get_task_stream(client) as ts, \
                dask.config.set({"dask_rec.blocks.target-nnz": 40_000, "dask_rec.model.fetch-bytes": 0}):
            model = SANSA(CONFIG).fit(X, client=client, progress=False)  # fetch-bytes 0: weights stay there
        names = {w["id"]: addr for addr, w in client.scheduler_info()["workers"].items()}
        big = names["big"]
        by_prefix = {}
        for rec in ts.data:
            prefix = rec["key"].split("-")[0] if isinstance(rec["key"], str) else str(rec["key"])
            by_prefix.setdefault(prefix, set()).add(rec["worker"])
        assert by_prefix["gramian"] == set(names.values()), by_prefix
        assert by_prefix["umr"] == set(names.values()), by_prefix
        assert by_prefix["factorize"] == {big}
        assert by_prefix["weights"] == {big}

        def sizes(obj):
            if sp.issparse(obj):
                yield obj.nnz
            elif isinstance(obj, np.ndarray):
                yield obj.size
            elif isinstance(obj, (list, tuple)):
                for x in obj:
                    yield from sizes(x)
            elif isinstance(obj, dict):
                for x in obj.values():
                    yield from sizes(x)

        n = X.shape[1]
        assert not any(sp.issparse(x) for r in received for x in (r if isinstance(r, list) else [r]))
        # nothing larger than a per-item vector (or a histogram) travelled to the client
        assert max(max(sizes(r), default=0) for r in received) <= max(n, 1 << 16)
        assert model._weights_handle is not None and model._weights[0] is None  # weights still on the cluster


def test_lost_worker_during_umr_gives_the_same_model(yelp, yelp_in_process):
    """Kill one of three worker processes while the UMR column tasks run: the fit completes, same weights."""
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # any of the UMR stage's column-block tasks (the stage is a few seconds now, and the update
        # rounds alone were sometimes missed between two looks)
        with kill_worker_during(client, ("umr-initial", "umr-update", "umr-prune", "umr-residual")) as killed:
            model = SANSA(CONFIG).fit(yelp, client=client, progress=False)
        weights = model.weights
    assert killed, "no UMR task was seen running, so no worker was killed"
    _same_weights(weights, yelp_in_process.weights)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["gowalla", "amazon-book-kgat"])
def test_distributed_fit_equals_in_process_on_large_datasets(dataset):
    X = interaction_matrix(dataset)
    config = SANSAConfig(10.0, 1e-3, ICFGramianFactorizerConfig(), UMRUnitLowerTriangleInverterConfig(scans=3, finetune_steps=10))
    expected = SANSA(config).fit(X)
    users = X[:: max(1, X.shape[0] // 3000)]
    for n_workers in (1, 2, 3):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            model = SANSA(config).fit(X, client=client, progress=False)
            _same_weights(model.weights, expected.weights)
            np.testing.assert_array_equal(_top20(model, users), _top20(expected, users))


@pytest.mark.slow
def test_recommend_users_on_gowalla_split_equals_in_process_recommend():
    from dask_rec.serving.evaluation import split_strong_generalization

    X = interaction_matrix("gowalla")
    split = split_strong_generalization(X, n_test_users=3000, seed=0)
    model = SANSA(SANSAConfig(10.0, 1e-3, ICFGramianFactorizerConfig(), UMRUnitLowerTriangleInverterConfig())).fit(split.train)
    ids, scores = model.recommend(split.test_history, k=20)
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            frame = model.recommend_users(split.test_history, k=20, client=client, users_per_block=500)
        got = np.full_like(ids, -1)
        got[frame["user_id"].to_numpy(), frame["rank"].to_numpy() - 1] = frame["item_id"].to_numpy()
        np.testing.assert_array_equal(got, ids)
