"""dask_rec on a real cluster: a scheduler and workers as separate OS processes, the CLI as subprocesses.

The cluster is started by ``cluster/start-local-cluster.sh`` (one ordinary worker, one with the
``bigmem`` resource) on 127.0.0.1. Every ``dask-rec`` command runs against it with ``--scheduler``,
from a working directory of its own and with relative paths (the workers run elsewhere), and each
result is checked against the same computation done in this process.
"""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cluster_utils import (
    START_SCRIPT,
    ProcessCluster,
    ml100k_path,
    read_parquet_dir,
    require_posix_tools,
    run_cli,
    subprocess_env,
    worker_table,
)

pytestmark = pytest.mark.cluster

MODEL_ARGS = ["--l2", "50", "--density", "0.02"]
K = 10


def _config(*extra):
    """The SANSAConfig the CLI builds from ``MODEL_ARGS`` (parsed by the CLI's own parser)."""
    from dask_rec.cli import build_parser
    from dask_rec.cli._model_options import config_from_args

    return config_from_args(build_parser().parse_args(["fit", "store", "model", *MODEL_ARGS, *extra]))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_posix_tools()
    c = ProcessCluster(tmp_path_factory.mktemp("cluster"), workers=1, bigmem_workers=1,
                       memory_limit="2GiB", bigmem_memory_limit="3GiB")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def observer(cluster):
    """A client of the cluster that records the task stream from before the first command on."""
    client = cluster.client()
    client.get_task_stream()  # installs the scheduler's task-stream plugin
    yield client
    client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def store(cluster, workdir):
    source = ml100k_path()
    result = run_cli("ingest", source, "store", "--scheduler", cluster.address, cwd=workdir)
    assert "943 users, 1,682 items, 100,000 interactions" in result.stdout, result.stdout
    from dask_rec.data.store import open_store

    return open_store(workdir / "store")


@pytest.fixture(scope="module")
def fitted(cluster, observer, store, workdir):
    """Run ``dask-rec fit`` on the cluster; returns (loaded model, task stream of the fit)."""
    from dask_rec import SANSA

    t0 = time.time()
    result = run_cli("fit", "store", "model.zarr", *MODEL_ARGS, "--no-progress", "--scheduler", cluster.address,
                     cwd=workdir)
    assert "model written to model.zarr" in result.stdout, result.stdout
    stream = observer.get_task_stream(start=t0)
    return SANSA.load(workdir / "model.zarr"), stream


def test_cluster_is_separate_processes_with_a_bigmem_worker(cluster, observer):
    info = worker_table(observer)
    assert len(info) == 2, info
    bigmem = [w for w in info.values() if w["resources"].get("bigmem") == 1]
    plain = [w for w in info.values() if "bigmem" not in w["resources"]]
    assert len(bigmem) == 1 and len(plain) == 1, info
    assert bigmem[0]["memory_limit"] == 3 * 2**30 and plain[0]["memory_limit"] == 2 * 2**30, info
    # each worker is its own OS process, under a nanny that the script started in its own session
    started = cluster.pids()
    assert set(started) == {"scheduler", "worker-0", "bigmem-0"}, started
    worker_pids = {w["pid"] for w in info.values()}
    assert len(worker_pids | set(started.values())) == 5
    status = subprocess.run(["bash", str(START_SCRIPT), "--status", "--dir", str(cluster.run_dir)],
                            capture_output=True, text=True, timeout=30, env=subprocess_env())
    assert status.returncode == 0 and status.stdout.count("running") == 3, status.stdout + status.stderr
    assert cluster.address in status.stdout


def test_ingest_on_cluster_matches_the_log(store):
    log = pd.read_parquet(ml100k_path(), columns=["user_id", "item_id"])
    users, u = np.unique(log["user_id"].to_numpy(), return_inverse=True)
    items, i = np.unique(log["item_id"].to_numpy(), return_inverse=True)
    expected = sp.csr_matrix((np.ones(len(log), np.float32), (u, i)), shape=(len(users), len(items)))
    expected.data[:] = 1.0
    X = store.to_scipy()
    assert X.shape == expected.shape
    assert abs(X - expected).nnz == 0
    np.testing.assert_array_equal(np.asarray(store.user_vocabulary.ids), users)
    np.testing.assert_array_equal(np.asarray(store.item_vocabulary.ids), items)


def test_fit_on_cluster_equals_in_process_fit(fitted, store):
    from dask_rec import SANSA

    model, _ = fitted
    assert model.config == _config()
    expected = SANSA(_config()).fit(store.to_scipy())  # in this process: no client anywhere
    for name, got, want in zip(("W1", "W2"), model.weights, expected.weights):
        assert got.shape == want.shape == (1682, 1682), name
        assert got.nnz > 0
        scale = max(abs(want).max(), 1.0)
        diff = abs(got - want)
        assert diff.nnz == 0 or diff.max() <= 1e-5 * scale, f"{name}: max |diff| {diff.max()} (scale {scale})"
    np.testing.assert_array_equal(np.asarray(model.item_vocabulary.ids), np.asarray(store.item_vocabulary.ids))


def test_factorization_ran_on_the_bigmem_worker(fitted, observer):
    _, stream = fitted
    info = worker_table(observer)
    bigmem = {addr for addr, w in info.items() if w["resources"].get("bigmem")}
    by_prefix: dict[str, set] = {}
    for record in stream:
        key = record["key"] if isinstance(record["key"], str) else str(record["key"])
        prefix = key.split("-", 1)[0]
        by_prefix.setdefault(prefix, set()).add(record["worker"])
    assert by_prefix.get("factorize"), f"no factorize task in the task stream: {sorted(by_prefix)}"
    assert by_prefix["factorize"] <= bigmem, (by_prefix["factorize"], bigmem)
    assert by_prefix["weights"] <= bigmem, (by_prefix["weights"], bigmem)
    assert {"read", "gramian", "umr"} <= set(by_prefix), sorted(by_prefix)  # the stages ran on the cluster


def test_recommend_on_cluster_equals_model_recommend(cluster, fitted, store, workdir):
    model, _ = fitted
    result = run_cli("recommend", "model.zarr", "store", "recs", "-k", K, "--scheduler", cluster.address, cwd=workdir)
    assert "recommended 10 items for 943 users" in result.stdout, result.stdout
    got = read_parquet_dir(workdir / "recs").sort_values(["user_id", "rank"]).reset_index(drop=True)

    ids, scores = model.recommend(store.to_scipy(), k=K)
    user_ids = np.asarray(store.user_vocabulary.ids)
    item_ids = np.asarray(store.item_vocabulary.ids)
    assert (ids >= 0).all()  # every ml-100k user has at least K unseen items
    expected = pd.DataFrame({
        "user_id": np.repeat(user_ids, K),
        "item_id": item_ids[ids.ravel()],
        "score": scores.ravel(),
        "rank": np.tile(np.arange(1, K + 1), len(user_ids)),
    }).sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert list(got.columns) == ["user_id", "item_id", "score", "rank"]
    np.testing.assert_array_equal(got["user_id"].to_numpy(), expected["user_id"].to_numpy())
    np.testing.assert_array_equal(got["rank"].to_numpy(), expected["rank"].to_numpy())
    np.testing.assert_array_equal(got["item_id"].to_numpy(), expected["item_id"].to_numpy())
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6, atol=1e-7)
    # nothing a user has seen is recommended
    seen = set(zip(*store.to_scipy().nonzero()))
    rows = np.searchsorted(user_ids, got["user_id"].to_numpy())
    cols = np.searchsorted(item_ids, got["item_id"].to_numpy())
    assert not any((r, c) in seen for r, c in zip(rows, cols))


def test_evaluate_on_cluster_equals_in_process(cluster, store, workdir):
    from dask_rec.cli.evaluate import evaluate_store

    result = run_cli("evaluate", "store", "--json", "--seed", "3", "--k", "10,50", *MODEL_ARGS,
                     "--scheduler", cluster.address, cwd=workdir)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    expected = evaluate_store(store, _config(), ks=(10, 50), seed=3, client=None)
    for key in ("n_train_users", "n_test_users", "n_items"):
        assert got[key] == expected[key], key
    assert got["popularity"] == pytest.approx(expected["popularity"], rel=1e-12)
    assert set(got["sansa"]) == set(expected["sansa"])
    # the cluster's weights equal the in-process ones to float32 round-off, so the rankings and
    # the metrics agree (a near-tie flipped by round-off would move a metric by ~1/n_users)
    for key, value in expected["sansa"].items():
        assert got["sansa"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    report = got["fit_reports"]["sansa"]  # what bench_scale reads: the route, the Gramian, the stages
    assert report["gramian"]["route"] == "streamed" and report["factor"]["gramian_nnz"] > report["n_items"]
    assert set(report["stage_seconds"]) == {"read", "gramian", "factorize", "invert", "weights"}
    assert set(got["evaluate_seconds"]) == {"sansa", "pop"}
