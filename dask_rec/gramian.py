"""The Gramian XᵀX, reduced across row blocks (and optionally split along the item axis).

One task per row block computes XbᵀXb (or its item column blocks); a tree reduction with bounded
fan-in sums them. The result stays where it was computed (on the cluster) as one handle per item
column block: no task needs the whole Gramian before the factorization gathers it.
"""

from __future__ import annotations

import numpy as np

from . import settings
from .kernels.gramian import block_gramian, item_counts, sum_gramians

__all__ = ["reduce_gramian", "reduce_item_counts", "item_column_blocks", "reduce_lower_gramian", "reduce_row_work",
           "plan_lower_blocks", "lower_column_bound"]


def item_column_blocks(n_items: int, item_block_size: int | None = None) -> list[tuple[int, int]]:
    """Item column ranges of the Gramian (``dask_rec.gramian.item-block-size``, default: one block)."""
    size = settings.get("gramian.item-block-size", item_block_size) or n_items
    size = max(1, int(size))
    return [(a, min(a + size, n_items)) for a in range(0, n_items, size)]


def _sum_counts(parts):
    return np.sum(parts, axis=0)


def reduce_gramian(executor, block_handles: list, n_items: int, *, item_block_size: int | None = None,
                   fan_in: int | None = None) -> list[tuple[int, int, object]]:
    """Sum the row blocks' Gramians: ``[(col_start, col_stop, handle of csr n_items x width)]``.

    The last sum of each column block runs on the big-memory worker, where the factorization
    will read it, so the Gramian does not travel between workers.
    """
    fan_in = int(settings.get("gramian.fan-in", fan_in))
    out = []
    for start, stop in item_column_blocks(n_items, item_block_size):
        cols = {} if (start == 0 and stop == n_items) else {"col_start": start, "col_stop": stop}
        if len(block_handles) == 1:  # nothing to sum: compute it where the factorization will run
            total = executor.submit(block_gramian, block_handles[0], **cols, key=f"gramian-block-{start}", bigmem=True)
        else:
            parts = executor.map(block_gramian, block_handles, **cols, key=f"gramian-block-{start}")
            total = executor.tree_reduce(sum_gramians, parts, fan_in=fan_in, key=f"gramian-sum-{start}", bigmem=True)
        out.append((start, stop, total))
    return out


def reduce_item_counts(executor, block_handles: list, fan_in: int = 8):
    """Handle of the interactions per item (int64), summed over row blocks."""
    parts = executor.map(item_counts, block_handles, key="item-counts")
    return executor.tree_reduce(_sum_counts, parts, fan_in=fan_in, key="item-counts-sum")


# --------------------------------------------------------------------------------------------
# the lower triangle in planned column blocks (the ICF path with a data-independent order)
# --------------------------------------------------------------------------------------------

#: Bytes per stored Gramian entry in a task (float64 value and int32 index).
ENTRY_BYTES = 12


def lower_column_bound(row_work: np.ndarray) -> np.ndarray:
    """Per column ``j`` of the lower triangle: at most ``min(n - j, products)`` entries."""
    n = row_work.shape[0]
    return np.minimum(np.asarray(row_work, dtype=np.int64), n - np.arange(n, dtype=np.int64))


def plan_lower_blocks(column_bound: np.ndarray, task_bytes: int, *, fan_in: int | None = None,
                      x_block_bytes: int = 0, item_block_size: int | None = None) -> list[tuple[int, int]]:
    """Column blocks of the lower Gramian whose tasks fit in ``task_bytes`` each.

    A summing task holds up to ``fan_in`` partial blocks and their sum, each at most the
    block's bound on entries, plus a few arrays of length n: so a block may hold about
    ``(task_bytes - 16·n - x_block_bytes) / ((fan_in + 2)·12)`` entries. With
    ``dask_rec.gramian.item-block-size`` set, blocks of that many items instead (no planning).

    Raises
    ------
    InsufficientMemoryError
        When a single item's column does not fit (``task_bytes`` known and too small).
    """
    from .memory_plan import require

    n = column_bound.shape[0]
    fixed = settings.get("gramian.item-block-size", item_block_size)
    if fixed:
        size = max(1, int(fixed))
        return [(a, min(a + size, n)) for a in range(0, n, size)]
    fan_in = int(settings.get("gramian.fan-in", fan_in))
    per_entry = (fan_in + 2) * ENTRY_BYTES
    overhead = 16 * n + int(x_block_bytes)
    widest = int(column_bound.max(initial=0))
    require("gramian", overhead + per_entry * widest, task_bytes,
            f"one column of the Gramian (up to {widest:,} entries, summed {fan_in} partial blocks at a time)",
            "give the workers more memory per thread (fewer threads, or a larger --memory-limit)")
    if not task_bytes:
        return [(0, n)] if n else []
    room = max(1, (task_bytes - overhead) // per_entry)
    bounds, start, filled = [], 0, 0
    for j, size in enumerate(column_bound.tolist()):
        if filled + size > room and j > start:
            bounds.append((start, j))
            start, filled = j, 0
        filled += size
    if start < n:
        bounds.append((start, n))
    return bounds


def reduce_lower_gramian(executor, block_handles: list, n_items: int, bounds, *, path: str | None = None,
                         fan_in: int | None = None) -> list:
    """Sum the row blocks' lower-triangle column blocks (the row blocks already in the fit's order).

    Returns one handle per column block: of the block itself (CSR ``w × n``, in memory, summed
    last on the big-memory worker that will factorize) or, with ``path``, of its number of
    non-zeros once the task that summed it has written it there (see :mod:`dask_rec.gramian_store`).
    """
    from .gramian_store import write_block
    from .kernels.gramian import upper_gramian_rows

    fan_in = int(settings.get("gramian.fan-in", fan_in))
    out = []
    for c, (start, stop) in enumerate(bounds):
        parts = executor.map(upper_gramian_rows, block_handles, row_start=start, row_stop=stop,
                             key=f"gramian-lower-{start}")
        if len(parts) == 1:
            total = parts[0]
        else:
            total = executor.tree_reduce(sum_gramians, parts, fan_in=fan_in, key=f"gramian-lower-sum-{start}",
                                         bigmem=path is None)
        if path is not None:
            written = executor.submit(write_block, path, c, total, key=f"gramian-write-{start}")
            executor.release(total, *parts)
            total = written
        out.append(total)
    return out


def reduce_row_work(executor, block_handles: list, fan_in: int = 8):
    """Handle of the per-item bound on the upper triangle's row entries (int64), over row blocks."""
    from .kernels.gramian import upper_row_work

    parts = executor.map(upper_row_work, block_handles, key="gramian-row-work")
    return executor.tree_reduce(_sum_counts, parts, fan_in=fan_in, key="gramian-row-work-sum")
