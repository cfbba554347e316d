"""A TLS-secured cluster: only clients with a certificate from the cluster's CA get in.

Certificates are made by ``cluster/tls/make-certs.sh`` (openssl) into a temporary directory; the
scheduler and workers are started by ``cluster/start-local-cluster.sh --tls-dir``. Clients without
the right certificate (none, CA only, another CA's, plain TCP) fail fast and run nothing; with it,
``dask-rec fit --scheduler tls://... --tls-ca-file ... --tls-cert ... --tls-key ...`` trains the
same model as in process, and ``cluster/tls/dask-tls.yaml`` lets the commands run without flags.
"""

from __future__ import annotations

import time

import pytest
import yaml

from cluster_utils import CLUSTER, ProcessCluster, make_certs, require_posix_tools, run_cli

pytestmark = pytest.mark.cluster

MODEL_ARGS = ["--l2", "20", "--density", "0.02", "--no-progress"]
FAIL_FAST = 45  # seconds within which a refused client must have given up


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls") / "certs")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, certs):
    require_posix_tools()
    c = ProcessCluster(tmp_path_factory.mktemp("cluster"), workers=1, bigmem_workers=1, memory_limit="2GiB",
                       bigmem_memory_limit="3GiB", tls_dir=certs)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def monitor(cluster, certs):
    from distributed.security import Security

    security = Security(tls_ca_file=str(certs / "ca.pem"), tls_client_cert=str(certs / "client.pem"),
                        tls_client_key=str(certs / "client-key.pem"), require_encryption=True)
    client = cluster.client(security=security)
    client.get_task_stream()  # record every task from now on
    yield client
    client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tls-cli")
    from dask_rec.data.synthetic import generate_interactions

    generate_interactions(path / "log", 3_000, 600, 40_000, seed=5)
    return path


@pytest.fixture(scope="module")
def dask_config_dir(tmp_path_factory, certs):
    """``cluster/tls/dask-tls.yaml`` with its certificate paths pointed at ``certs``."""
    text = (CLUSTER / "tls" / "dask-tls.yaml").read_text().replace("/etc/dask-rec/tls", str(certs))
    path = tmp_path_factory.mktemp("dask-config")
    (path / "dask-tls.yaml").write_text(text)
    return path


def tls_flags(certs, name="client"):
    return ["--tls-ca-file", certs / "ca.pem", "--tls-cert", certs / f"{name}.pem", "--tls-key", certs / f"{name}-key.pem"]


def test_cluster_listens_on_tls_only(cluster, monitor):
    assert cluster.address.startswith("tls://127.0.0.1:")
    workers = monitor.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 2 and all(addr.startswith("tls://") for addr in workers), list(workers)
    assert sum("bigmem" in (w.get("resources") or {}) for w in workers.values()) == 1


def test_clients_without_the_certificate_cannot_submit_work(cluster, monitor, certs, workdir, tmp_path):
    other_ca = make_certs(tmp_path / "other")  # a valid certificate, but from another CA
    port = cluster.address.rsplit(":", 1)[1]
    attempts = {
        "no TLS options": ["--scheduler", cluster.address],
        "CA only, no client certificate": ["--scheduler", cluster.address, "--tls-ca-file", certs / "ca.pem"],
        "certificate of another CA": ["--scheduler", cluster.address, *tls_flags(other_ca)],
        "plain TCP": ["--scheduler", f"tcp://127.0.0.1:{port}"],
    }
    t0 = time.time()
    for i, (what, args) in enumerate(attempts.items()):
        started = time.monotonic()
        result = run_cli("ingest", "log", f"store-{i}", *args, cwd=workdir, timeout=120, check=False)
        seconds = time.monotonic() - started
        assert result.returncode != 0, f"{what}: the command succeeded\n{result.stdout}"
        assert seconds < FAIL_FAST, f"{what}: took {seconds:.0f} s to fail"
        assert not (workdir / f"store-{i}").exists(), what
    # none of them ran anything on the cluster
    assert list(monitor.get_task_stream(start=t0)) == []
    assert monitor.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_ingest_and_fit_with_the_certificate(cluster, certs, workdir, dask_config_dir):
    from dask_rec import SANSA
    from dask_rec.data.store import open_store

    # the Dask config file alone (no flags) is enough for a client
    run_cli("ingest", "log", "store", "--scheduler", cluster.address, cwd=workdir,
            env={"DASK_CONFIG": dask_config_dir})
    # or Dask configuration in environment variables (as the compose and Kubernetes recipes give the client)
    run_cli("ingest", "log", "store-env", "--scheduler", cluster.address, cwd=workdir, env={
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": certs / "ca.pem",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": certs / "client.pem",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": certs / "client-key.pem",
    })
    assert open_store(workdir / "store-env").nnz == open_store(workdir / "store").nnz > 0
    # the flags of every dask-rec command
    result = run_cli("fit", "store", "model.zarr", *MODEL_ARGS, "--scheduler", cluster.address, *tls_flags(certs),
                     cwd=workdir)
    assert "model written to model.zarr" in result.stdout
    model = SANSA.load(workdir / "model.zarr")
    expected = SANSA(model.config).fit(open_store(workdir / "store").to_scipy())
    for got, want in zip(model.weights, expected.weights):
        diff = abs(got - want)
        assert got.nnz > 0 and (diff.nnz == 0 or diff.max() <= 1e-5 * max(abs(want).max(), 1.0))


def test_tls_config_file_names_every_certificate():
    config = yaml.safe_load((CLUSTER / "tls" / "dask-tls.yaml").read_text())
    comm = config["distributed"]["comm"]
    assert comm["require-encryption"] is True
    tls = comm["tls"]
    assert tls["ca-file"].endswith("ca.pem")
    for role in ("scheduler", "worker", "client"):
        assert tls[role]["cert"].endswith(f"{role}.pem") and tls[role]["key"].endswith(f"{role}-key.pem")
