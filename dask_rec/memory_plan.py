"""What each stage's tasks may hold, planned from the workers' memory limits before work starts.

Every stage of a fit asks two questions before it submits anything: how much memory does one of
its tasks get (a worker's memory limit shared by its threads, or this machine's available memory
in process), and how much does its largest task need (from sizes known up front: item counts,
user activity, the factor's budget). When the need exceeds what any eligible worker has, the
fit stops with one line that names the stage, both figures and the knob that helps, before the
expensive stages run (:func:`require`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryLimits", "memory_limits", "require", "gib", "size_text", "task_budget", "bigmem_budget"]


@dataclass(frozen=True)
class MemoryLimits:
    """Bytes a task may use.

    Attributes
    ----------
    per_task : int
        The smallest memory limit per thread over the workers (what one task of a stage that
        runs on every worker may use); 0 when unknown (no limit set).
    bigmem : int
        The memory limit of the worker that runs the one-task stages (the ``bigmem`` worker, or
        the one with the most memory); 0 when unknown.
    n_workers : int
    in_process : bool
    """

    per_task: int
    bigmem: int
    n_workers: int
    in_process: bool


def memory_limits(executor) -> MemoryLimits:
    """The :class:`MemoryLimits` of ``executor``'s cluster (this machine's, in process)."""
    from dask_rec.executor import BIGMEM_RESOURCE

    client = executor.client
    if client is None:
        import psutil

        available = int(psutil.virtual_memory().available)
        return MemoryLimits(per_task=available, bigmem=available, n_workers=1, in_process=True)
    workers = list(client.scheduler_info().get("workers", {}).values())
    if not workers:
        return MemoryLimits(0, 0, 0, False)
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    per_thread = [lim // max(1, int(w.get("nthreads") or 1)) for lim, w in zip(limits, workers)]
    per_task = 0 if any(lim == 0 for lim in limits) else min(per_thread)
    big = [lim for lim, w in zip(limits, workers) if BIGMEM_RESOURCE in (w.get("resources") or {})] or limits
    bigmem = 0 if any(lim == 0 for lim in big) else max(big)
    return MemoryLimits(per_task=per_task, bigmem=bigmem, n_workers=len(workers), in_process=False)


def gib(n_bytes: float) -> str:
    """``n_bytes`` as a short GiB figure for messages."""
    return f"{n_bytes / 2**30:.2f} GiB"


def size_text(n_bytes: float) -> str:
    """``n_bytes`` in GiB, MiB or KiB, whichever reads best (``12.35 GiB``, ``48.0 MiB``)."""
    if n_bytes >= 2**30:
        return gib(n_bytes)
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.1f} MiB"
    return f"{n_bytes / 2**10:.1f} KiB"


def require(stage: str, need: int, have: int, what: str, knob: str, limit: int | None = None) -> None:
    """Raise :class:`~dask_rec.exceptions.InsufficientMemoryError` when ``need > have > 0``.

    The message is one line: the stage, what needs the memory, both figures (and the memory
    limit ``have`` is planned from, when given) and the knob.
    """
    from dask_rec.exceptions import InsufficientMemoryError

    if have and need > have:
        of = f" of a {size_text(limit)} memory limit" if limit else ""
        raise InsufficientMemoryError(
            f"stage {stage}: {what} needs about {size_text(need)}, more than the {size_text(have)}{of} it may use; "
            f"{knob}"
        )


def task_budget(limits: MemoryLimits) -> int:
    """Bytes a stage may plan for one of its many tasks: ``dask_rec.memory.task-fraction`` of
    the per-thread limit (the rest is for data the workers hold meanwhile); 0 when unknown."""
    from dask_rec import settings

    return int(limits.per_task * float(settings.get("memory.task-fraction")))


def bigmem_budget(limits: MemoryLimits) -> int:
    """Bytes a one-task stage (factorization, weights) may plan for on the big-memory worker:
    ``dask_rec.memory.bigmem-fraction`` of its limit; 0 when unknown."""
    from dask_rec import settings

    return int(limits.bigmem * float(settings.get("memory.bigmem-fraction")))
