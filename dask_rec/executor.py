"""Where stage tasks run: in this process, or as tasks on a ``distributed`` cluster.

Every training and serving stage is written once, against the small interface below, and runs
either way: :class:`InProcessExecutor` calls the kernels directly (the path for small data and
for ``sansa`` drop-in use), :class:`DaskExecutor` submits them as tasks to a
``distributed.Client``. The two give the same numbers because they run the same functions on the
same blocks in the same order of reduction.

Handles returned by ``submit``/``map`` are opaque: values in process, futures on a cluster. They
can be passed as arguments to later ``submit``/``map`` calls (the cluster then moves data between
workers, never through the client) and are turned into values only by ``gather``, which stages
call for small results (norms, histograms, counts) only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

__all__ = ["InProcessExecutor", "DaskExecutor", "executor_for", "identity", "is_future", "BIGMEM_RESOURCE"]

logger = logging.getLogger(__name__)

#: Worker resource that marks the big-memory worker for the factorization
#: (``dask worker --resources bigmem=1``).
BIGMEM_RESOURCE = "bigmem"


def identity(value):
    """Return ``value``: as a task (``executor.submit(identity, value)``) it places ``value`` on
    the cluster once, so that later tasks take the future instead of re-sending the value."""
    return value


def is_future(obj) -> bool:
    """Whether ``obj`` is a ``distributed`` future (e.g. weights that a fit left on the cluster)."""
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "key") and hasattr(obj, "result")


class InProcessExecutor:
    """Run every task immediately in this process."""

    client = None

    def submit(self, fn: Callable, *args, key: str | None = None, bigmem: bool = False, **kwargs) -> Any:
        return fn(*args, **kwargs)

    def map(self, fn: Callable, *iterables: Iterable, key: str | None = None, **kwargs) -> list:
        return [fn(*args, **kwargs) for args in zip(*iterables)]

    def gather(self, handles):
        return handles

    def release(self, *handles) -> None:
        pass

    def cancel(self, handles) -> None:
        pass

    def wait(self, handles) -> None:
        pass

    @property
    def n_workers(self) -> int:
        return 1

    def scatter(self, value):
        return value

    def persist(self, collection):
        return collection

    def map_partitions(self, fn: Callable, partitions: Sequence, *iterables: Iterable, **kwargs) -> list:
        """``fn(partition, *items, **kwargs)`` for each ``dask.delayed`` partition of a collection
        (``collection.to_delayed()``), with the items of ``iterables`` beside it."""
        import dask

        tasks = [dask.delayed(fn)(p, *items, **kwargs) for p, *items in zip(partitions, *iterables)]
        return list(dask.compute(*tasks, scheduler="sync"))

    def tree_reduce(self, fn: Callable, handles: Sequence, fan_in: int = 8, key: str | None = None,
                    bigmem: bool = False):
        """Reduce ``handles`` in groups of ``fan_in`` with ``fn(list) -> value`` until one is left.

        With ``bigmem`` the last task runs on the big-memory worker, so that a large result is
        produced where the next stage (the factorization) needs it.
        """
        return _tree_reduce(self, fn, list(handles), fan_in, key, bigmem)


class DaskExecutor:
    """Submit tasks to a ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client
        The cluster to run on.
    """

    def __init__(self, client) -> None:
        self.client = client

    def submit(self, fn: Callable, *args, key: str | None = None, bigmem: bool = False, **kwargs):
        opts = {"pure": False}
        if key is not None:
            import uuid

            opts["key"] = f"{key}-{uuid.uuid4().hex[:12]}"
        if bigmem:
            opts.update(bigmem_placement(self.client))
        return self.client.submit(fn, *args, **kwargs, **opts)

    def map(self, fn: Callable, *iterables: Iterable, key: str | None = None, **kwargs) -> list:
        iterables = [list(it) for it in iterables]
        if not iterables or not iterables[0]:
            return []
        opts = {"pure": False}
        if key is not None:
            import uuid

            n = len(iterables[0])
            token = uuid.uuid4().hex[:12]
            opts["key"] = [f"{key}-{token}-{i}" for i in range(n)]
        return self.client.map(fn, *iterables, **kwargs, **opts)

    def gather(self, handles):
        return self.client.gather(handles)

    def release(self, *handles) -> None:
        for h in handles:
            if isinstance(h, (list, tuple)):
                self.release(*h)
            elif hasattr(h, "release"):
                h.release()

    def cancel(self, handles) -> None:
        """Cancel the tasks of ``handles`` still pending (a failed stage's siblings)."""
        self.client.cancel(list(handles))

    @property
    def n_workers(self) -> int:
        return len(self.client.nthreads())

    def scatter(self, value):
        """A future of ``value`` sent to every worker once (a small array or vocabulary many tasks read)."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def persist(self, collection):
        """A Dask collection computed and kept on the cluster (an in-memory input read many times)."""
        return self.client.persist(collection)

    def map_partitions(self, fn: Callable, partitions: Sequence, *iterables: Iterable, **kwargs) -> list:
        """One task ``fn(partition, *items, **kwargs)`` per ``dask.delayed`` partition of a collection
        (``collection.to_delayed()``): the partition is read by the task that uses it."""
        import dask

        return self.client.compute([dask.delayed(fn)(p, *items, **kwargs) for p, *items in zip(partitions, *iterables)])

    def wait(self, handles) -> None:
        """Wait for ``handles``; raise the exception of the first one that failed.

        (A ``KilledWorker`` when a task kept killing the workers that ran it.)
        """
        # distributed.wait() would look up the *default* client; wait through ours instead
        from distributed.client import _wait

        handles = list(handles)
        self.client.sync(_wait, handles)
        for h in handles:
            if getattr(h, "status", None) in ("error", "cancelled"):
                h.result()  # raises the task's exception (CancelledError when cancelled)

    def tree_reduce(self, fn: Callable, handles: Sequence, fan_in: int = 8, key: str | None = None,
                    bigmem: bool = False):
        return _tree_reduce(self, fn, list(handles), fan_in, key, bigmem)


def _tree_reduce(executor, fn, handles: list, fan_in: int, key: str | None, bigmem: bool = False):
    if fan_in < 2:
        raise ValueError(f"fan_in must be >= 2; got {fan_in}")
    if not handles:
        raise ValueError("nothing to reduce")
    level = 0
    while len(handles) > 1:
        groups = [handles[i : i + fan_in] for i in range(0, len(handles), fan_in)]
        last = len(groups) == 1
        handles = [
            executor.submit(_apply_to_list, fn, *group, key=f"{key}-level{level}" if key else None,
                            bigmem=bigmem and last)
            for group in groups
        ]
        level += 1
    return handles[0]


def _apply_to_list(fn, *values):
    return fn(list(values))


def bigmem_placement(client) -> dict:
    """``submit`` options that place a task on the big-memory worker.

    A worker advertising the ``bigmem`` resource is required when one exists; otherwise the
    workers with the largest memory limit are preferred, all of them when several tie (so that
    concurrent one-task stages, e.g. the trials of ``dask_rec.tune``, spread over a uniform
    cluster), with ``allow_other_workers`` so that losing them does not stall the job.
    """
    info = client.scheduler_info()
    workers = info.get("workers", {})
    if any(BIGMEM_RESOURCE in (w.get("resources") or {}) for w in workers.values()):
        return {"resources": {BIGMEM_RESOURCE: 1}}
    if not workers:
        return {}
    largest = max(workers[addr].get("memory_limit") or 0 for addr in workers)
    biggest = sorted(addr for addr in workers if (workers[addr].get("memory_limit") or 0) == largest)
    return {"workers": biggest, "allow_other_workers": True}


def executor_for(client) -> InProcessExecutor | DaskExecutor:
    """The executor for ``client``: a ``DaskExecutor`` for a Client, in-process for ``None``."""
    if client is None:
        return InProcessExecutor()
    return DaskExecutor(client)
