"""The factorization stage: one task, on the big-memory worker, from Gramian to L·D·Lᵀ.

The task runs a kernel of :mod:`dask_rec.kernels.factorization`: on the assembled Gramian's
column blocks (:func:`~dask_rec.kernels.factorization.factorize_gramian`: ICF column scaling when
that factorizer is used, λI, the item ordering, then ``A[p][:, p] ≈ L·diag(d)·Lᵀ``), or streamed
over the lower Gramian's blocks (:func:`~dask_rec.kernels.factorization.factorize_lower_gramian`).
This module submits it and says up front what it needs: on a cluster the task is placed on a
worker advertising the ``bigmem`` resource, or else on the worker with the most memory (see
:func:`dask_rec.executor.bigmem_placement`), and a task that cannot fit is refused before any work
(:func:`check_factorization_memory`, :func:`streamed_factorization_bytes`).
"""

from __future__ import annotations

from dask_rec.kernels.factorization import factor_budget, factorize_gramian, factorize_lower_gramian

__all__ = ["factorization_memory_estimate", "check_factorization_memory", "submit_factorization",
           "streamed_factorization_bytes", "submit_lower_factorization"]


def factorization_memory_estimate(gramian_nnz: int, n_items: int, density: float) -> int:
    """Bytes the factorization task needs at its peak, roughly (for a clear error up front).

    The Gramian (CSR, 12 bytes an entry) and the lower triangle of the permuted matrix (half as
    many entries) are alive together, then the factor's budget twice (working arrays and result).
    """
    return int(1.5 * 12 * gramian_nnz + 2 * 16 * factor_budget(density, n_items) + 64 * n_items)


def check_factorization_memory(limits, gramian_nnz: int, n_items: int, density: float, *, estimated: bool = False) -> None:
    """Fail fast, naming the ``bigmem`` resource, when the assembled route's one factorization
    task cannot fit the big-memory worker (cluster runs with memory limits only).

    ``estimated``: ``gramian_nnz`` is an estimate made before the Gramian is reduced.
    """
    from dask_rec.memory_plan import require

    if limits.in_process:
        return
    need = factorization_memory_estimate(gramian_nnz, n_items, density)
    about = "about " if estimated else ""
    require("factorize", need, limits.bigmem,
            f"the factorization of {n_items:,} items (the whole Gramian, {about}{gramian_nnz:,} non-zeros, in one task)",
            "use the ICF with the popularity or natural order (streamed over Gramian blocks: --factorizer icf "
            "--ordering popularity), or run a worker with more memory and the 'bigmem' resource "
            "(dask worker --resources bigmem=1 --memory-limit ...)", limits.bigmem)


def submit_factorization(executor, gramian_handles: list, *, l2, density, factorizer_config, item_counts_handle=None,
                         X_handles=None):
    """Run :func:`~dask_rec.kernels.factorization.factorize_gramian` as one task on the big-memory worker; returns its handle."""
    return executor.submit(
        _factorize_from_handles, gramian_handles, item_counts_handle, X_handles,
        l2=l2, density=density, factorizer_config=factorizer_config, key="factorize", bigmem=True,
    )


def _factorize_from_handles(gramian_blocks, item_counts, X_blocks, **kwargs):
    return factorize_gramian(gramian_blocks, item_counts=item_counts, X_blocks=X_blocks, **kwargs)


def streamed_factorization_bytes(n_items: int, density: float, largest_block_entries: int) -> int:
    """Peak bytes of :func:`~dask_rec.kernels.factorization.factorize_lower_gramian`, roughly: the factor while it is built
    (int32 + float64 an entry, grown by doubling up to the budget) and assembled (float32 +
    int32), ~15 work arrays of length n, and one block read and scaled (20 bytes an entry)."""
    return int(20 * factor_budget(density, n_items) + 120 * n_items + 20 * largest_block_entries)


def submit_lower_factorization(executor, lower, block_handles: list, *, l2, density, factorizer_config):
    """Run :func:`~dask_rec.kernels.factorization.factorize_lower_gramian` as one task on the big-memory worker."""
    return executor.submit(_factorize_lower_from_handles, lower, block_handles, l2=l2, density=density,
                           factorizer_config=factorizer_config, key="factorize", bigmem=True)


def _factorize_lower_from_handles(lower, block_values, **kwargs):
    import dataclasses

    if lower.path is None:  # the blocks arrived as this task's arguments
        lower = dataclasses.replace(lower, handles=list(block_values))
    return factorize_lower_gramian(lower, **kwargs)
