"""The Gramian XᵀX, reduced across row blocks (and optionally split along the item axis).

One task per row block computes XbᵀXb (or its item column blocks); a tree reduction with bounded
fan-in sums them. The result stays where it was computed (on the cluster) as one handle per item
column block: no task needs the whole Gramian before the factorization gathers it.
"""

from __future__ import annotations

import numpy as np

from . import settings
from .kernels.gramian import block_gramian, item_counts, sum_gramians

__all__ = ["reduce_gramian", "reduce_item_counts", "item_column_blocks"]


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
