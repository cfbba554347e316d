"""What ``slurm.py`` and ``pbs.py`` share: options, the cluster and its bigmem job, the fit.

A dask-jobqueue cluster submits identical worker jobs; dask_rec also needs one worker with much
more memory that advertises the ``bigmem`` resource (the factorization runs there). That worker is
one more job of the same kind, built with the cluster's own job class (``cluster.job_cls``) and
``--resources bigmem=1``, submitted next to the ordinary ones, and cancelled at the end.

Run on a login node (or in a job) of the HPC system, in an environment with dask_rec and
dask-jobqueue installed on a file system the compute nodes see, so that the workers find the
same Python (``sys.executable``) and the same paths (the store and the model must be on a shared
file system).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger("dask_rec.jobqueue")

INSTALL_HINT = (
    "dask-jobqueue is not installed; install it in the environment that has dask_rec "
    "(pip install dask-jobqueue) and run this script again"
)


def import_jobqueue():
    """``dask_jobqueue``, imported on first use; a clear exit when it is absent."""
    try:
        import dask_jobqueue
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(f"{Path(sys.argv[0]).name}: error: {INSTALL_HINT} ({exc})") from None
    return dask_jobqueue


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("store", help="store written by 'dask-rec ingest' (on a shared file system)")
    p.add_argument("model", help="model directory to write (on a shared file system)")
    p.add_argument("--jobs", type=int, default=4, help="ordinary worker jobs")
    p.add_argument("--cores", type=int, default=1, help="cores (= worker threads) per ordinary job")
    p.add_argument("--memory", default="8GiB", help="memory per ordinary job")
    p.add_argument("--bigmem-cores", type=int, default=2, help="cores of the bigmem job")
    p.add_argument("--bigmem-memory", default="64GiB", help="memory of the bigmem job")
    p.add_argument("--walltime", default="02:00:00", help="wall time of every job")
    p.add_argument("--queue", default=None, help="queue (partition) of the ordinary jobs")
    p.add_argument("--bigmem-queue", default=None, help="queue (partition) of the bigmem job (default: --queue)")
    p.add_argument("--account", default=None, help="account/project to charge")
    p.add_argument("--interface", default=None, help="network interface of the compute nodes, e.g. ib0")
    p.add_argument("--scheduler-host", default=None,
                   help="address the scheduler (in this process) listens on; default: that of --interface")
    p.add_argument("--local-directory", default=None,
                   help="node-local scratch for the workers (e.g. $TMPDIR); default: the job's working directory")
    p.add_argument("--log-directory", default="dask-jobqueue-logs", help="where the jobs' stdout/stderr go")
    p.add_argument("--tls-dir", default=None,
                   help="TLS with the certificates of cluster/tls/make-certs.sh in this (shared) directory")
    p.add_argument("--wait", type=float, default=1800, help="seconds to wait for the workers to start")
    p.add_argument("--l2", type=float, default=20.0, help="L2 regularisation")
    p.add_argument("--density", type=float, default=5e-3, help="weight matrix density")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model")
    p.add_argument("--dry-run", action="store_true",
                   help="print the two job scripts and exit without submitting anything")
    return p


def security_for(tls_dir):
    """A ``distributed.security.Security`` for the scheduler, workers and client, or None."""
    if tls_dir is None:
        return None
    from distributed.security import Security

    d = Path(tls_dir).resolve()
    return Security(
        tls_ca_file=str(d / "ca.pem"),
        tls_scheduler_cert=str(d / "scheduler.pem"), tls_scheduler_key=str(d / "scheduler-key.pem"),
        tls_worker_cert=str(d / "worker.pem"), tls_worker_key=str(d / "worker-key.pem"),
        tls_client_cert=str(d / "client.pem"), tls_client_key=str(d / "client-key.pem"),
        require_encryption=True,
    )


def job_kwargs(args) -> dict:
    """Options of every worker job (the ordinary ones; the bigmem job overrides a few)."""
    kwargs = dict(
        cores=args.cores,
        processes=1,  # one worker process per job: dask_rec's tasks are single-threaded numba/scipy kernels
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
        local_directory=args.local_directory,
        log_directory=args.log_directory,
        python=sys.executable,  # the compute nodes must see this environment (a shared file system)
        job_name="dask-rec",
    )
    security = security_for(args.tls_dir)
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    return {k: v for k, v in kwargs.items() if v is not None}


def cluster_kwargs(args, **extra) -> dict:
    """Options of the cluster object: the jobs' options, the scheduler's, and ``extra``."""
    scheduler_options = {"dashboard_address": ":8787"}
    if args.scheduler_host:
        scheduler_options.update(host=args.scheduler_host, dashboard_address=f"{args.scheduler_host}:8787")
    return {**job_kwargs(args), "scheduler_options": scheduler_options, **extra}


def bigmem_job(cluster, args, **extra):
    """The (not yet submitted) job of the big-memory worker, connecting to ``cluster``'s scheduler.

    ``extra`` are the scheduler-specific options (e.g. ``job_extra_directives``).
    """
    kwargs = job_kwargs(args)
    kwargs.update(
        name="dask-rec-bigmem",
        job_name="dask-rec-bigmem",
        cores=args.bigmem_cores,
        memory=args.bigmem_memory,
        worker_extra_args=["--resources", "bigmem=1"],
    )
    if args.bigmem_queue:
        kwargs["queue"] = args.bigmem_queue
    kwargs.update(extra)
    return cluster.job_cls(scheduler=cluster.scheduler_address, **kwargs)


def fit(cluster, bigmem, args) -> int:
    """Submit the jobs, wait for the workers, fit and save the model, cancel the bigmem job."""
    from distributed import Client

    from dask_rec import ICFGramianFactorizerConfig, SANSA, SANSAConfig, UMRUnitLowerTriangleInverterConfig
    from dask_rec.data.store import open_store

    if Path(args.model).exists() and not args.overwrite:
        raise SystemExit(f"error: model {args.model!r} exists; pass --overwrite to replace it")
    store = open_store(args.store)
    config = SANSAConfig(l2=args.l2, weight_matrix_density=args.density,
                         gramian_factorizer_config=ICFGramianFactorizerConfig(),
                         lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig())
    cluster.scale(jobs=args.jobs)
    cluster.sync(bigmem.start)
    logger.info("submitted %d worker jobs and bigmem job %s; dashboard: %s", args.jobs, bigmem.job_id,
                cluster.dashboard_link)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(args.jobs + 1, timeout=args.wait)
            t0 = time.perf_counter()
            model = SANSA(config).fit(store, client=client)
            model.save(args.model, overwrite=args.overwrite)
            logger.info("model written to %s in %.0f s: %s", args.model, time.perf_counter() - t0,
                        model.fit_report_["stage_seconds"])
    finally:
        cluster.sync(bigmem.close)
    return 0


def main(make_cluster, job_kwargs_for_bigmem, description: str, argv=None) -> int:
    """``make_cluster(args) -> cluster``; ``job_kwargs_for_bigmem(args) -> dict`` of the bigmem job's extras."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = base_parser(description).parse_args(argv)
    cluster = make_cluster(args)
    try:
        bigmem = bigmem_job(cluster, args, **job_kwargs_for_bigmem(args))
        if args.dry_run:
            print("# ---- ordinary worker job\n" + cluster.job_script())
            print("# ---- bigmem worker job\n" + bigmem.job_script())
            return 0
        return fit(cluster, bigmem, args)
    finally:
        cluster.close()
