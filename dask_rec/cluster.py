"""Finding or starting the Dask cluster a job runs on."""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = ["client_context", "current_client", "fit_executor", "check_workers", "unguarded_main_call"]

logger = logging.getLogger(__name__)


def current_client():
    """The active ``distributed.Client``, or ``None`` when there is none (or distributed is absent)."""
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover - distributed is a core dependency
        return None
    try:
        return get_client()
    except ValueError:
        return None


def check_workers(n_workers, *, cores: int | None = None, memory: int | None = None) -> int | None:
    """``n_workers`` for a LocalCluster on this machine, or a one-line ``ValueError``.

    Refuses values below 1 and values far above the machine: more than
    ``dask_rec.cluster.workers-per-core`` (4) per core, or fewer than
    ``dask_rec.cluster.worker-memory-min`` bytes (512 MiB) of memory each. ``None`` passes
    (one worker per core).
    """
    import numbers

    from dask_rec import settings

    if n_workers is None:
        return None
    if isinstance(n_workers, bool) or not isinstance(n_workers, numbers.Integral) or n_workers < 1:
        raise ValueError(f"the number of workers (--workers) must be an integer >= 1; got {n_workers!r}")
    cores = cores or os.cpu_count() or 1
    if memory is None:
        import psutil

        memory = psutil.virtual_memory().total
    per_core = int(settings.get("cluster.workers-per-core"))
    min_memory = int(settings.get("cluster.worker-memory-min"))
    limit = max(1, min(per_core * cores, memory // max(min_memory, 1)))
    if n_workers > limit:
        raise ValueError(
            f"--workers {n_workers} is far above this machine ({cores} cores, {memory / 2**30:.0f} GiB): at most "
            f"{limit} local workers ({per_core} per core, >= {min_memory / 2**20:.0f} MiB each; "
            f"dask_rec.cluster.workers-per-core / worker-memory-min); use --scheduler for a bigger cluster")
    return int(n_workers)


def _is_main_guard(node) -> bool:
    """Whether an AST ``If`` node tests ``__name__ == "__main__"`` (either way round)."""
    import ast

    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    values = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


def unguarded_main_call():
    """``(file, line)`` of the top-level statement of the ``__main__`` script that led here when it is
    not under ``if __name__ == "__main__":``, else None.

    Worker processes of a LocalCluster are spawned: each re-imports the main script, so a script
    that starts one from its top-level code would start it again in every worker.
    """
    import ast
    import sys

    import dask

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):
        return None  # an interactive session, python -c, a notebook: nothing is re-imported
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if spec_name.endswith(".__main__") or dask.config.get("distributed.worker.multiprocessing-method") == "fork":
        return None  # multiprocessing does not re-import a package's __main__ (python -m pkg), nor fork
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__" \
                and os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            break
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_guard(node) and node.lineno <= line <= (node.end_lineno or line):
            return None
    return path, line


@contextlib.contextmanager
def client_context(client=None, scheduler: str | None = None, *, n_workers: int | None = None,
                   threads_per_worker: int | None = None, memory_limit="auto", security=None,
                   dashboard: bool = True, silence_logs: int = logging.WARNING):
    """Yield a ``distributed.Client`` to run a job on, closing only what was started here.

    Parameters
    ----------
    client : distributed.Client, optional
        Use this client as it is.
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``) to connect to.
    n_workers, threads_per_worker, memory_limit
        Shape of the LocalCluster started when neither ``client``, ``scheduler`` nor a current
        client exists. By default one single-threaded worker process per core.
    security : distributed.security.Security, optional
        TLS settings for connecting to ``scheduler``.
    dashboard : bool
        Serve (and log the link of) the dashboard of a started LocalCluster.
    silence_logs : int
        Level below which a started LocalCluster's scheduler and workers log nothing.

    A LocalCluster started (through any caller) from the top-level code of a script that lacks
    ``if __name__ == "__main__":`` runs its workers on threads in this process, with a
    ``DaskRecWarning`` pointing at that line (:func:`unguarded_main_call`): spawned worker
    processes would re-import the script and start the job again in every worker.
    """
    if client is not None:
        yield client
        return
    n_workers = check_workers(n_workers)
    from distributed import Client, LocalCluster

    if scheduler is not None:
        c = Client(scheduler, security=security)
        try:
            yield c
        finally:
            c.close()
        return
    existing = current_client()
    if existing is not None:
        yield existing
        return
    cores = os.cpu_count() or 1
    processes = True
    unguarded = unguarded_main_call()
    if unguarded is not None:  # worker processes would re-run the script: run on threads instead
        import warnings

        from dask_rec.exceptions import DaskRecWarning

        processes = False
        warnings.warn_explicit(
            "this top-level call starts a LocalCluster, whose worker processes re-import the script: put it under "
            "'if __name__ == \"__main__\":' to use worker processes; running on threads in this process instead",
            DaskRecWarning, unguarded[0], unguarded[1])
    cluster = LocalCluster(
        n_workers=n_workers or cores,
        threads_per_worker=threads_per_worker or 1,
        memory_limit=memory_limit,
        processes=processes,
        dashboard_address=":0" if dashboard else None,
        silence_logs=silence_logs,
    )
    c = Client(cluster)
    if dashboard and cluster.dashboard_link:
        logger.info("Started a LocalCluster with %d workers; dashboard: %s", len(cluster.workers), cluster.dashboard_link)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@contextlib.contextmanager
def fit_executor(client, source):
    """The executor a model's fit runs on, with the client rules of ``SANSA.fit``.

    ``client``: a ``distributed.Client`` (used as it is), ``"local"`` (a LocalCluster sized to
    this machine, closed afterwards) or ``None``: the current client if there is one, else a
    LocalCluster for a store (out-of-core data) and this process for an in-memory matrix
    (``source`` is a :class:`~dask_rec.data.blocks.RowBlockSource`).
    """
    from dask_rec.executor import executor_for

    if client is None:
        client = current_client()
        if client is None and source.store is not None:
            client = "local"
    if isinstance(client, str) and client != "local":
        raise ValueError(f"client must be a distributed.Client, 'local' or None; got {client!r}")
    if client is None:
        yield executor_for(None)
        return
    with client_context(None if client == "local" else client) as c:
        yield executor_for(c)
