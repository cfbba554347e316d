"""Faults on a real cluster: workers killed mid-stage, a client killed mid-fit, a bigmem worker too small.

The cluster (``cluster/start-local-cluster.sh``: two ordinary workers and one ``bigmem`` worker,
each under a nanny) runs ``dask-rec fit`` as a subprocess while this test watches the scheduler
through a client of its own: when a task of the stage under test is assigned to an ordinary
worker, that worker process gets SIGKILL (as the kernel's OOM killer would do). Its nanny starts
a new one; the scheduler recomputes the lost results from their lineage, and the model must come
out bit for bit equal to an undisturbed run.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime

import pytest

from cluster_utils import (
    ProcessCluster,
    kill_tree,
    require_posix_tools,
    run_cli,
    start_cli,
    wait_exit,
    wait_for,
    worker_table,
)

pytestmark = pytest.mark.cluster

#: Six scans: the last two update most columns (their skip thresholds, 8.9e-5 and 8.9e-6 here, lie
#: below the residuals), so UMR does real work in waves; the first four are skipped whole.
MODEL_ARGS = ["--l2", "50", "--density", "2e-3", "--scans", "6", "--finetune-steps", "3", "--no-progress"]
#: Smaller UMR blocks than the default 4096 columns: more tasks and waves, so the stage lasts a while.
CLI_ENV = {"DASK_DASK_REC__UMR__BLOCK_COLUMNS": "256"}
FIT_TIMEOUT = 150


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_posix_tools()
    c = ProcessCluster(tmp_path_factory.mktemp("cluster"), workers=2, bigmem_workers=1,
                       memory_limit="2GiB", bigmem_memory_limit="3GiB")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def monitor(cluster):
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def store(cluster, workdir):
    """A synthetic log of 30,000 users x 8,000 items, ingested on the cluster into 10 row blocks."""
    from dask_rec.data.synthetic import generate_interactions

    generate_interactions(workdir / "log", 30_000, 8_000, 900_000, seed=7)
    run_cli("ingest", "log", "store", "--rows-per-block", "3000", "--scheduler", cluster.address, cwd=workdir)
    from dask_rec.data.store import open_store

    s = open_store(workdir / "store")
    assert s.n_blocks >= 8, s.n_blocks
    return s


@pytest.fixture(scope="module")
def reference(cluster, store, workdir):
    """The weights of an undisturbed ``dask-rec fit`` on the same cluster."""
    from dask_rec import SANSA

    run_cli("fit", "store", "reference.zarr", *MODEL_ARGS, "--scheduler", cluster.address, cwd=workdir, env=CLI_ENV)
    return SANSA.load(workdir / "reference.zarr").weights


def _assert_same_model(path, reference):
    from dask_rec import SANSA

    weights = SANSA.load(path).weights
    for name, got, want in zip(("W1", "W2"), weights, reference):
        assert got.shape == want.shape, name
        assert got.nnz == want.nnz, f"{name}: {got.nnz} non-zeros, undisturbed run {want.nnz}"
        assert (got != want).nnz == 0, f"{name} differs from the undisturbed run: max |diff| {abs(got - want).max()}"


def _log_time(log_text: str, line_pattern: str) -> float | None:
    """Epoch seconds of the first log line matching ``line_pattern`` (logging's asctime format)."""
    m = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + line_pattern, log_text, re.MULTILINE)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def _kill_worker_running(monitor, prefixes: tuple, proc, log, timeout: float = 90):
    """SIGKILL the process of an ordinary worker as soon as it is assigned a task whose key starts with
    one of ``prefixes``; returns (worker name, its keys then, time of the kill)."""
    workers = worker_table(monitor)
    plain = {addr: w for addr, w in workers.items() if "bigmem" not in w["resources"]}
    assert len(plain) == 2, workers

    def assigned():
        for addr, keys in monitor.processing().items():
            mine = [str(k) for k in keys if str(k).startswith(prefixes)]
            if addr in plain and mine:
                return addr, mine
        return None

    addr, keys = wait_for(assigned, timeout, f"a task {prefixes} on an ordinary worker", interval=0.01,
                          proc=proc, log=log)
    os.kill(plain[addr]["pid"], signal.SIGKILL)
    return plain[addr]["name"], keys, time.time()


def _wait_for_workers(monitor, n: int, timeout: float = 60) -> None:
    wait_for(lambda: len(monitor.scheduler_info(n_workers=-1)["workers"]) >= n, timeout, f"{n} workers")


@pytest.mark.parametrize(("stage", "prefixes"), [
    ("gramian", ("gramian-block", "gramian-sum", "gramian-lower")),
    ("invert", ("umr-update", "umr-prune")),  # past the first waves: lineage through several updates
], ids=["gramian", "umr"])
def test_worker_killed_mid_stage_fit_completes_with_the_same_model(cluster, monitor, store, reference, workdir,
                                                                   stage, prefixes):
    _wait_for_workers(monitor, 3)
    before = set(monitor.scheduler_info(n_workers=-1)["workers"])
    log = workdir / f"fit-kill-{stage}.log"
    proc = start_cli("fit", "store", f"killed-{stage}.zarr", *MODEL_ARGS, "--scheduler", cluster.address,
                     cwd=workdir, log=log, env=CLI_ENV)
    try:
        wait_for(lambda: f"stage {stage}: started" in log.read_text(), FIT_TIMEOUT, f"stage {stage}", proc=proc,
                 log=log)
        name, keys, killed_at = _kill_worker_running(monitor, prefixes, proc, log)
        rc = wait_exit(proc, FIT_TIMEOUT, log)
    finally:
        kill_tree(proc)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    # the kill happened while the stage was running, not after it
    done_at = _log_time(text, re.escape(f"stage {stage}: done"))
    assert done_at is not None and killed_at < done_at, f"{name} killed holding {keys} after the stage ended"
    # the nanny saw its worker die and started a new one, which the scheduler took in
    wait_for(lambda: "killed by signal 9" in cluster.log(name) or "SIGKILL" in cluster.log(name), 30,
             f"the nanny of {name} to report the kill")
    _wait_for_workers(monitor, 3)
    assert set(monitor.scheduler_info(n_workers=-1)["workers"]) != before
    _assert_same_model(workdir / f"killed-{stage}.zarr", reference)


def test_client_killed_mid_fit_leaves_no_model_and_a_rerun_succeeds(cluster, monitor, store, reference, workdir):
    _wait_for_workers(monitor, 3)
    target = workdir / "interrupted.zarr"
    log = workdir / "fit-client-killed.log"
    proc = start_cli("fit", "store", target.name, *MODEL_ARGS, "--scheduler", cluster.address, cwd=workdir, log=log,
                     env=CLI_ENV)
    try:
        wait_for(lambda: "stage invert: started" in log.read_text(), FIT_TIMEOUT, "the invert stage", proc=proc,
                 log=log)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        kill_tree(proc)
    assert "model written" not in log.read_text()
    # nothing at the model path, and no temporary sibling either: the model is written only after the
    # fit, into .NAME.tmp-* renamed into place (a kill during that write could leave such a sibling)
    assert not target.exists()
    assert [p.name for p in workdir.glob(f".{target.name}*")] == []
    # the scheduler forgets the dead client's tasks: the cluster goes idle with nothing held
    n_tasks = lambda: monitor.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))  # noqa: E731
    wait_for(lambda: n_tasks() == 0 and not any(monitor.processing().values()), 60,
             "the cluster to drop the killed client's tasks", interval=0.2)
    # a rerun (same command) succeeds and gives the undisturbed model
    result = run_cli("fit", "store", target.name, *MODEL_ARGS, "--scheduler", cluster.address, cwd=workdir,
                     env=CLI_ENV, timeout=FIT_TIMEOUT)
    assert "model written" in result.stdout
    _assert_same_model(target, reference)


@pytest.fixture(scope="module", params=["assembled", "streamed"])
def too_small_fit(store, workdir, tmp_path_factory, request):
    """``dask-rec fit`` on a cluster whose bigmem worker's memory limit is below the factorization's
    estimate: (CompletedProcess, seconds it took). The assembled route (COLAMD order) needs the
    whole Gramian in one task; the streamed route (ICF, popularity order) needs the factor's
    budget, here made large with --density 0.2."""
    import scipy.sparse as sp

    from dask_rec.models.sansa.factorize import factorization_memory_estimate, streamed_factorization_bytes

    X = store.to_scipy()
    limit = 48 * 2**20
    if request.param == "assembled":
        args = [*MODEL_ARGS, "--ordering", "colamd"]
        need = factorization_memory_estimate(sp.csr_matrix(X.T @ X).nnz, X.shape[1], 2e-3)
    else:
        args = [*MODEL_ARGS, "--density", "0.2"]
        need = streamed_factorization_bytes(X.shape[1], 0.2, 0)
    assert need > 2 * limit, need
    # no memory management on this cluster: a worker process is bigger than its 48 MiB limit, and
    # the nanny must neither pause nor restart it for that
    env = {f"DASK_DISTRIBUTED__WORKER__MEMORY__{k}": "False" for k in ("TARGET", "SPILL", "PAUSE", "TERMINATE")}
    with ProcessCluster(tmp_path_factory.mktemp("small"), workers=1, bigmem_workers=1, memory_limit="2GiB",
                        bigmem_memory_limit=str(limit), env=env) as small:
        t0 = time.monotonic()
        result = run_cli("fit", "store", "small.zarr", *args, "--scheduler", small.address, cwd=workdir,
                         env=CLI_ENV, timeout=120, check=False)
        return result, time.monotonic() - t0


def test_bigmem_worker_too_small_fails_fast_naming_bigmem(too_small_fit, workdir):
    result, seconds = too_small_fit
    assert result.returncode != 0, result.stdout
    assert seconds < 60, f"took {seconds:.0f} s to fail"
    assert not (workdir / "small.zarr").exists()
    assert [p.name for p in workdir.glob(".small.zarr*")] == []
    last = result.stderr.strip().splitlines()[-1]
    assert "bigmem" in last and "memory limit" in last, result.stderr[-3000:]


def test_bigmem_worker_too_small_error_is_one_line(too_small_fit):
    result, _ = too_small_fit
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("dask-rec fit: error:") and "bigmem" in lines[0], lines
