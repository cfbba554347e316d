"""The Gramian XᵀX, reduced across row blocks in item column blocks planned from memory limits.

Before anything large is computed, a cheap pass over the row blocks bounds every column of the
Gramian (the products that column sums: item counts and user activity); the column blocks are
then sized so that each task of the reduction fits in the memory a task gets (see
:mod:`dask_rec.memory_plan`). No task ever holds a partial sum that spans all items unless it
fits. Two layouts:

* the whole Gramian, column block by column block (:func:`reduce_gramian`), for the CHOLMOD
  factorizer and the COLAMD/AMD orderings, which need the matrix in one process anyway;
* only its lower triangle, in the fit's item order (:func:`lower_gramian_stage`), for the ICF
  with an order known before the Gramian (popularity, natural): the factorization streams over
  those column blocks, kept on the workers or written to disk (:mod:`dask_rec.stages.gramian_store`).

Each column block is reduced in groups: a first-level task computes the partial Gramians of up
to ``fan_in`` row blocks and sums them at once, so only ``ceil(row blocks / fan_in)`` partials
of a column block are alive at a time; a tree reduction with the same fan-in sums those.
"""

from __future__ import annotations

import math

import numpy as np

from dask_rec import settings
from dask_rec.executor import identity
from dask_rec.kernels.gramian import block_gramian, item_counts, sum_arrays, sum_gramians

__all__ = ["reduce_gramian", "reduce_item_counts", "item_column_blocks", "reduce_lower_gramian", "reduce_row_work",
           "reduce_column_work", "plan_column_blocks", "plan_lower_blocks", "lower_column_bound",
           "gramian_column_bound", "lower_gramian_stage", "ENTRY_BYTES"]

#: Bytes per stored Gramian entry in a task (float64 value and int32 index).
ENTRY_BYTES = 12


def item_column_blocks(n_items: int, item_block_size: int | None = None) -> list[tuple[int, int]]:
    """Item column ranges of ``item_block_size`` items (``dask_rec.gramian.item-block-size``;
    ``None``: one block)."""
    size = settings.get("gramian.item-block-size", item_block_size) or n_items
    size = max(1, int(size))
    return [(a, min(a + size, n_items)) for a in range(0, n_items, size)]


def _fan_in(fan_in) -> int:
    value = int(settings.get("gramian.fan-in", fan_in))
    if value < 2:
        raise ValueError(f"dask_rec.gramian.fan-in must be >= 2; got {value}")
    return value


def _grouped_gramians(kernel, start, stop, *blocks):
    """First level of a column block's reduction: ``kernel`` on each row block, summed."""
    parts = [kernel(b, start, stop) for b in blocks]
    return parts[0] if len(parts) == 1 else sum_gramians(parts)


def _upper_rows(rows_and_columns, start, stop):
    """Lower-triangle columns of one ordered row block, given as ``(csr, csc)``."""
    from dask_rec.kernels.gramian import upper_gramian_rows

    rows, columns = rows_and_columns
    return upper_gramian_rows(rows, start, stop, X_columns=columns)


def _reduce_blocks(executor, kernel, block_handles: list, start: int, stop: int, fan_in: int, key: str,
                   bigmem: bool):
    """Handle of ``Σ_b kernel(X_b, start, stop)`` over the row blocks, reduced in groups."""
    groups = [block_handles[i:i + fan_in] for i in range(0, len(block_handles), fan_in)]
    if len(groups) == 1:
        return executor.submit(_grouped_gramians, kernel, start, stop, *groups[0], key=key, bigmem=bigmem)
    partials = [executor.submit(_grouped_gramians, kernel, start, stop, *g, key=key) for g in groups]
    return executor.tree_reduce(sum_gramians, partials, fan_in=fan_in, key=f"{key}-sum", bigmem=bigmem)


def reduce_gramian(executor, block_handles: list, n_items: int, *, bounds=None, item_block_size: int | None = None,
                   fan_in: int | None = None) -> list[tuple[int, int, object]]:
    """Sum the row blocks' Gramians: ``[(col_start, col_stop, handle of csr n_items x width)]``.

    ``bounds``: the column blocks (e.g. from :func:`plan_column_blocks`); default
    :func:`item_column_blocks`. The last sum of each column block runs on the big-memory
    worker, where the factorization will read it, so the Gramian does not travel between workers.
    """
    fan_in = _fan_in(fan_in)
    if bounds is None:
        bounds = item_column_blocks(n_items, item_block_size)
    return [(start, stop, _reduce_blocks(executor, block_gramian, block_handles, start, stop, fan_in,
                                         f"gramian-block-{start}", True))
            for start, stop in bounds]


def reduce_item_counts(executor, block_handles: list, fan_in: int = 8):
    """Handle of the interactions per item (int64), summed over row blocks."""
    parts = executor.map(item_counts, block_handles, key="item-counts")
    return executor.tree_reduce(sum_arrays, parts, fan_in=fan_in, key="item-counts-sum")


# --------------------------------------------------------------------------------------------
# bounds and plans, before the Gramian is computed
# --------------------------------------------------------------------------------------------


def lower_column_bound(row_work: np.ndarray) -> np.ndarray:
    """Per column ``j`` of the lower triangle: at most ``min(n - j, products)`` entries."""
    n = row_work.shape[0]
    return np.minimum(np.asarray(row_work, dtype=np.int64), n - np.arange(n, dtype=np.int64))


def gramian_column_bound(column_work: np.ndarray) -> np.ndarray:
    """Per column of the whole Gramian: at most ``min(n, products)`` entries."""
    return np.minimum(np.asarray(column_work, dtype=np.int64), column_work.shape[0])


def plan_column_blocks(column_bound: np.ndarray, task_bytes: int, *, fan_in: int | None = None,
                       n_row_blocks: int = 1, x_block_bytes: int = 0, item_block_size: int | None = None,
                       what: str = "one column of the Gramian", limit: int | None = None) -> list[tuple[int, int]]:
    """Column blocks of the Gramian whose reduction fits in ``task_bytes`` per task.

    A task holds up to ``fan_in`` partial blocks and their sum, each at most the block's bound
    on entries; the ``ceil(n_row_blocks / fan_in)`` first-level partials of a block wait for
    their sum on the workers meanwhile; and a few arrays of length n. So a block may hold about
    ``(task_bytes - 16·n - x_block_bytes) / ((fan_in + 2 + ceil(n_row_blocks / fan_in))·12)``
    entries. With ``dask_rec.gramian.item-block-size`` set, blocks of that many items instead
    (no planning). ``task_bytes`` 0 (unknown): one block.

    Raises
    ------
    InsufficientMemoryError
        When a single item's column does not fit (``task_bytes`` known and too small).
    """
    from dask_rec.memory_plan import require

    n = column_bound.shape[0]
    fixed = settings.get("gramian.item-block-size", item_block_size)
    if fixed:
        size = max(1, int(fixed))
        return [(a, min(a + size, n)) for a in range(0, n, size)]
    fan_in = _fan_in(fan_in)
    per_entry = (fan_in + 2 + math.ceil(max(1, n_row_blocks) / fan_in)) * ENTRY_BYTES
    overhead = 16 * n + int(x_block_bytes)
    widest = int(column_bound.max(initial=0))
    require("gramian", overhead + per_entry * widest, task_bytes,
            f"{what} (up to {widest:,} entries, summed {fan_in} partial blocks at a time)",
            "give the workers more memory per thread (fewer threads, or a larger --memory-limit)", limit)
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


def plan_lower_blocks(column_bound: np.ndarray, task_bytes: int, **kwargs) -> list[tuple[int, int]]:
    """:func:`plan_column_blocks` for the lower triangle (bounds from :func:`lower_column_bound`)."""
    kwargs.setdefault("what", "one column of the Gramian's lower triangle")
    return plan_column_blocks(column_bound, task_bytes, **kwargs)


# --------------------------------------------------------------------------------------------
# the lower triangle in planned column blocks (the ICF path with a data-independent order)
# --------------------------------------------------------------------------------------------


def reduce_lower_gramian(executor, block_handles: list, n_items: int, bounds, *, path: str | None = None,
                         fan_in: int | None = None) -> list:
    """Sum the row blocks' lower-triangle column blocks (``block_handles`` from
    :func:`ordered_row_blocks`: in the fit's order, as ``(csr, csc)``).

    Returns one handle per column block: of the block itself (CSR ``w × n``, in memory, summed
    last on the big-memory worker that will factorize) or, with ``path``, of its number of
    non-zeros once the task that summed it has written it there (see :mod:`dask_rec.stages.gramian_store`).
    """
    from dask_rec.stages.gramian_store import write_block

    fan_in = _fan_in(fan_in)
    out = []
    for c, (start, stop) in enumerate(bounds):
        total = _reduce_blocks(executor, _upper_rows, block_handles, start, stop, fan_in,
                               f"gramian-lower-{start}", path is None)
        if path is not None:
            written = executor.submit(write_block, path, c, total, key=f"gramian-write-{start}")
            executor.release(total)
            total = written
        out.append(total)
    return out


def reduce_row_work(executor, ordered_handles: list, fan_in: int = 8):
    """Handle of the per-item bound on the upper triangle's row entries (int64), over the
    ordered row blocks of :func:`ordered_row_blocks`."""
    parts = executor.map(_row_work, ordered_handles, key="gramian-row-work")
    return executor.tree_reduce(sum_arrays, parts, fan_in=fan_in, key="gramian-row-work-sum")


def reduce_column_work(executor, block_handles: list, fan_in: int = 8):
    """Handle of the per-item bound on the whole Gramian's column entries (int64)."""
    from dask_rec.kernels.gramian import gramian_column_work

    parts = executor.map(gramian_column_work, block_handles, key="gramian-column-work")
    return executor.tree_reduce(sum_arrays, parts, fan_in=fan_in, key="gramian-column-work-sum")


def _ordered(X_block, inverse_order=None):
    """A row block in the fit's order as ``(csr, csc)`` (canonical float64), so the many column
    blocks that read it convert it once."""
    from dask_rec.kernels.gramian import canonical_rows, permute_items

    rows = canonical_rows(X_block) if inverse_order is None else permute_items(X_block, inverse_order)
    return rows, rows.tocsc()


def _row_work(rows_and_columns):
    from dask_rec.kernels.gramian import upper_row_work

    return upper_row_work(rows_and_columns[0])


def _nnz(matrix) -> int:
    return int(matrix.nnz)


def ordered_row_blocks(executor, block_handles: list, order: np.ndarray, natural: bool) -> list:
    """Handles of the row blocks with their items renumbered into ``order``, each as
    ``(csr, csc)`` (what :func:`reduce_lower_gramian` and :func:`reduce_row_work` read)."""
    if natural:
        return executor.map(_ordered, block_handles, key="row-block-ordered")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=order.dtype)
    inverse_handle = executor.submit(identity, inverse, key="item-inverse-order")
    return executor.map(_ordered, block_handles, [inverse_handle] * len(block_handles), key="row-block-ordered")


def lower_gramian_stage(executor, ordered_blocks: list, n_items: int, order: np.ndarray, bounds, *,
                        scratch_dir=None, ordering: str = "popularity"):
    """Compute the lower triangle of the ordered Gramian in ``bounds`` column blocks.

    With ``scratch_dir`` the blocks are written there (a new working directory, see
    :func:`dask_rec.stages.gramian_store.create_lower_gramian`) by the tasks that sum them; otherwise
    they stay on the big-memory worker. Returns the
    :class:`~dask_rec.stages.gramian_store.LowerGramian` (its ``nnz`` filled in) once the blocks exist.
    """
    from dask_rec.stages.gramian_store import LowerGramian, create_lower_gramian

    from dask_rec.stages.gramian_store import remove_lower_gramian

    path = None
    if scratch_dir is not None:
        path = create_lower_gramian(scratch_dir, n_items, bounds, order, ordering)
    try:
        handles = reduce_lower_gramian(executor, ordered_blocks, n_items, bounds, path=path)
        counts = handles if path is not None else executor.map(_nnz, handles, key="gramian-lower-nnz")
        block_nnz = [int(c) for c in executor.gather(counts)]
    except BaseException:
        if path is not None:  # nothing half-written is left behind
            remove_lower_gramian(path)
        raise
    if path is not None:
        executor.release(*handles)
        handles = []
    return LowerGramian(n_items=int(n_items), bounds=list(bounds), order=np.asarray(order, dtype=np.int64),
                        path=path, handles=handles, nnz=sum(block_nnz), block_nnz=block_nnz, ordering=ordering)
