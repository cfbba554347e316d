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

__all__ = ["MemoryLimits", "memory_limits", "require", "gib"]


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
    from .executor import BIGMEM_RESOURCE

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


def require(stage: str, need: int, have: int, what: str, knob: str) -> None:
    """Raise :class:`~dask_rec.exceptions.InsufficientMemoryError` when ``need > have > 0``.

    The message is one line: the stage, what needs the memory, both figures and the knob.
    """
    from .exceptions import InsufficientMemoryError

    if have and need > have:
        raise InsufficientMemoryError(
            f"stage {stage}: {what} needs about {gib(need)}, more than the {gib(have)} it would have; {knob}"
        )
