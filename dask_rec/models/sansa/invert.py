"""Approximate inverse ``M ≈ L⁻¹`` of the unit lower triangular factor, in column blocks.

One algorithm, run in this process or on a Dask cluster through :mod:`dask_rec.executor`; the
result depends on the data, the configuration and the *block and wave partition* only, never on
the executor or the number of workers.

Partition
---------
Columns are cut into blocks of ``block_columns`` (one task each) and consecutive blocks into
waves of ``wave_blocks`` blocks. After each wave, ``M`` is pruned globally to ``target_nnz``
entries (the unit diagonal always kept): the exact magnitude threshold comes from two rounds of
per-block histograms (:mod:`dask_rec.kernels.pruning`), summed by a tree reduction; only
histograms and a few scalars ever reach the client, never ``M``. The first round also counts,
inside the coarse bin of the previous threshold, the second round's histogram: when the new
threshold stays in that bin (a 1/128 relative range of magnitudes, as it mostly does from one
finetune step to the next) the second round is not needed.

Defaults (``dask.config`` keys, resolved when the argument is ``None``; the measurements behind
them are in the README, "UMR partition defaults"):

* ``dask_rec.umr.block-columns`` = ``"auto"``: 4096 columns a block up to 262,144 items, then 64
  blocks, halved while a task would not fit the memory plan. Memory per task: ``O(n)`` dense
  accumulators (34 bytes × n) plus the block, bounded by the cap.
* ``dask_rec.umr.wave-blocks`` = ``"auto"``: the fewest blocks per wave that keep a scan to at
  most ``dask_rec.umr.waves-per-pass`` (default 16) waves, i.e. at most 16 global prunes per scan
  (one per finetune step), where the reference prunes after every ``ceil(n·δ)`` columns.
* ``dask_rec.umr.block-cap-factor`` = 8. Before the global prune, an updated block keeps at most
  ``factor × (its share of the off-diagonal target)`` off-diagonal entries, those of largest
  magnitude in the block; the share is proportional to the block's number of columns. The cap is
  a no-op whenever the global prune keeps no more than the cap from that block (the prune keeps
  the entries ``>=`` one threshold, so capped-away entries below it change nothing). When it
  binds, results depend on ``block_columns``; ``None``/``0`` disables it.

Scans skip columns by :func:`scan_skip_threshold`, which reads the scan number 1-based as the
reference does.

Residual summaries (:mod:`dask_rec.kernels.residual_summary`: the max and mean residual norm
logged per pass, and the worst columns that finetune steps update) are incremental: each block
keeps its column norms from the last summary, and the next summary recomputes only the columns
whose entries changed since (updated, or touched by a prune). A scan whose skip threshold lies
above the largest residual norm of the current ``M`` would skip every column, so it is not run at
all. Neither changes a number of the result (a column's norm depends only on that column and
``L``, computed by the same kernel).

Invariance contract
-------------------
* Same inputs, same ``block_columns`` and ``wave_blocks``: bit-identical blocks in process and on
  a cluster with any number of workers (same functions, same blocks, same reduction order;
  thresholds are exact integer-histogram computations).
* Same wave partition in *columns* (``block_columns × wave_blocks`` fixed) and a cap that does
  not bind: bit-identical ``M`` for any ``block_columns`` — columns are updated independently
  and the prune is a global, entry-wise threshold. The report's float sums may differ in the
  last bits (different reduction trees).

The exact inverter solves ``L M_b = I_b`` per block and prunes with the same waves; since its
columns do not depend on ``M``, pruning after every wave keeps exactly the global top
``target_nnz`` (a streaming top-k), as one final prune would, with bounded memory.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from dask_rec import settings
from dask_rec.config import ExactUnitLowerTriangleInverterConfig, UMRUnitLowerTriangleInverterConfig
from dask_rec.executor import InProcessExecutor, identity
from dask_rec.kernels.pruning import (NO_BINS, coarse_histogram, counts_part, dense_histogram, fine_histogram,
                                      merge_histogram_parts, prune_by_key, sparse_histogram, threshold_key)
from dask_rec.kernels.residual_summary import merge_residual_summaries, residual_summary

__all__ = ["invert_unit_lower", "assemble_blocks", "resolve_partition", "scan_skip_threshold", "task_memory_bytes",
           "auto_block_columns"]

_log = logging.getLogger(__name__)

FAN_IN = 8


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


#: Columns per block of the ``auto`` partition: at least this many...
MIN_AUTO_BLOCK_COLUMNS = 4096
#: ...and at most this many blocks (so the rounds over all blocks stay few tasks at a million items).
AUTO_MAX_BLOCKS = 64


def auto_block_columns(n: int, target_nnz: int | None = None, task_bytes: int = 0) -> int:
    """Columns per block for ``dask_rec.umr.block-columns: auto``.

    ``max(4096, ceil(n / 64))`` (4096 up to 262,144 items, then 64 blocks), halved (down to 256)
    while one task would need more than ``task_bytes`` (see :func:`task_memory_bytes`).
    """
    size = max(MIN_AUTO_BLOCK_COLUMNS, math.ceil(max(n, 1) / AUTO_MAX_BLOCKS))
    if target_nnz is not None and task_bytes:
        while size > 256 and task_memory_bytes(n, target_nnz, size) > task_bytes:
            size //= 2
    return size


def resolve_partition(n: int, block_columns=None, wave_blocks=None) -> tuple[int, int]:
    """``(block_columns, wave_blocks)`` from the arguments or the ``dask.config`` defaults."""
    block_columns = settings.get("umr.block-columns", block_columns)
    if isinstance(block_columns, str):
        if block_columns != "auto":
            raise ValueError(f"block_columns must be an integer or 'auto'; got {block_columns!r}")
        block_columns = auto_block_columns(n)
    block_columns = int(block_columns)
    if block_columns < 1:
        raise ValueError(f"block_columns must be >= 1; got {block_columns}")
    wave_blocks = settings.get("umr.wave-blocks", wave_blocks)
    if isinstance(wave_blocks, str):
        if wave_blocks != "auto":
            raise ValueError(f"wave_blocks must be an integer or 'auto'; got {wave_blocks!r}")
        waves = int(settings.get("umr.waves-per-pass"))
        n_blocks = max(1, math.ceil(n / block_columns))
        wave_blocks = math.ceil(n_blocks / max(1, waves))
    wave_blocks = int(wave_blocks)
    if wave_blocks < 1:
        raise ValueError(f"wave_blocks must be >= 1; got {wave_blocks}")
    return block_columns, wave_blocks


def scan_skip_threshold(scan: int, log_norm_threshold: float, n: int) -> float:
    """Residual norm below which scan ``scan`` (0-based) leaves a column alone.

    A column is skipped when ``‖r_j‖ / sqrt(n) < 10**max(-k - 1, log_norm_threshold)`` with
    ``k = scan + 1`` the *1-based* scan number: the first scan uses ``1e-2``, the second ``1e-3``.
    This is what the reference ``sansa`` 1.1.0 does (black-box check: with its pruning schedule
    we reproduce its ``M`` entry for entry on ml-100k); reading the exponent with a 0-based scan
    index (``1e-1`` first) skips every column of typical factors in the first three scans.
    """
    return 10.0 ** max(-(scan + 1) - 1, log_norm_threshold) * math.sqrt(n)


def task_memory_bytes(n: int, target_nnz: int, block_columns: int) -> int:
    """Peak bytes of one UMR task, roughly: the factor L it reads (float32 and int32 an entry,
    at most ``target_nnz`` of them), its dense accumulators (34 bytes × n) and its block before
    and after the update (12 bytes an entry, at most the cap: ``block-cap-factor`` × the
    block's share of the target, or ``min(n, 64)`` entries a column without a cap)."""
    factor = _cap_factor() or 0.0
    share = target_nnz * min(block_columns, max(n, 1)) / max(n, 1)
    cap = factor * share if factor else min(n, 64) * min(block_columns, n)
    return int(8 * target_nnz + 34 * n + 2 * 12 * (cap + share))


def _cap_factor() -> float | None:
    factor = settings.get("umr.block-cap-factor")
    if factor is None or float(factor) <= 0 or math.isinf(float(factor)):
        return None
    return float(factor)


def _block_caps(bounds, n: int, keep_offdiag: int, factor: float | None) -> list:
    """Per-block off-diagonal caps: ``factor × keep_offdiag × width / n``; ``None`` = no cap
    (also when the cap exceeds what the block's triangle can hold)."""
    caps = []
    for start, stop in bounds:
        if factor is None:
            caps.append(None)
            continue
        room = (stop - start) * (n - 1) - (stop - start) * (start + stop - 1) // 2  # Σ (n−1−j)
        cap = math.ceil(factor * keep_offdiag * (stop - start) / n)
        caps.append(None if cap >= room else cap)
    return caps


# ---------------------------------------------------------------------------------------------
# tasks (plain functions; the executor runs them here or on workers)
# ---------------------------------------------------------------------------------------------


def _validate_task(L, n):
    """Raise ``ValueError`` unless ``L`` is an n × n CSC lower triangular matrix whose columns
    start with a stored non-zero diagonal entry (sorted indices). O(nnz(L)), run once."""
    if not sp.issparse(L) or L.format != "csc":
        raise TypeError(f"L must be a scipy.sparse CSC matrix; got {type(L).__name__}")
    if L.shape != (n, n):
        raise ValueError(f"L has shape {L.shape}, expected ({n}, {n})")
    counts = np.diff(L.indptr)
    cols = np.repeat(np.arange(n), counts)
    if np.any(L.indices < cols):
        raise ValueError("L has entries above the diagonal; a lower triangular factor is required")
    first = L.indptr[:-1][counts > 0]
    has_diag = np.zeros(n, dtype=bool)
    has_diag[counts > 0] = L.indices[first] == np.flatnonzero(counts > 0)
    if not has_diag.all() or np.any(L.data[first] == 0):
        raise ValueError("every column of L must store its non-zero (unit) diagonal entry first "
                         "(sorted indices)")
    if not L.has_sorted_indices and np.any(np.diff(L.indices)[np.diff(cols) == 0] <= 0):
        raise ValueError("L must have sorted indices")
    return True


def _initial_task(L, start, stop):
    from dask_rec.kernels.umr import initial_block

    return initial_block(L, start, stop)


def _umr_task(L, M, start, columns, skip_below, cap):
    from dask_rec.kernels.umr import umr_update_block

    block, _, n_updated = umr_update_block(L, M, start, columns, skip_below, cap)
    return block, n_updated


def _exact_task(L, start, stop, cap):
    from dask_rec.kernels.exact_inverse import exact_inverse_block

    return exact_inverse_block(L, start, stop, cap)


def _coarse_task(M, start, guess):
    """Round one of a block; with a ``guess`` of the threshold's coarse bin (the last prune's),
    the block's round-two histogram of that bin too, so a threshold that stays in its bin costs
    no second round."""
    fine = NO_BINS if guess is None else sparse_histogram(fine_histogram(M, guess, True, start))
    return sparse_histogram(coarse_histogram(M, True, start)), fine, 0


def _fine_task(M, coarse_bin, start):
    return NO_BINS, sparse_histogram(fine_histogram(M, coarse_bin, True, start)), 0


def _prune_task(M, key, start):
    return prune_by_key(M, key, True, start)


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


class _Run:
    """State shared by the UMR and exact drivers: partition, executor, L, report."""

    def __init__(self, L_handle, n, target_nnz, executor, block_columns, wave_blocks, logger, name):
        self.ex = executor if executor is not None else InProcessExecutor()
        self.log = logger if logger is not None else _log
        self.n = int(n)
        if self.n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        if sp.issparse(L_handle) and L_handle.shape != (self.n, self.n):
            raise ValueError(f"L has shape {L_handle.shape}, expected ({self.n}, {self.n})")
        if isinstance(target_nnz, bool) or int(target_nnz) != target_nnz or target_nnz < 0:
            raise ValueError(f"target_nnz must be an integer >= 0; got {target_nnz!r}")
        self.target = int(target_nnz)
        self.keep = max(self.target - self.n, 0)  # off-diagonal entries kept by each prune
        bc, wb = resolve_partition(self.n, block_columns, wave_blocks)
        self.bounds = [(s, min(s + bc, self.n)) for s in range(0, self.n, bc)]
        self.waves = [list(range(i, min(i + wb, len(self.bounds)))) for i in range(0, len(self.bounds), wb)]
        self.caps = _block_caps(self.bounds, self.n, self.keep, _cap_factor())
        self.name = name
        self.report: list[dict] = []
        # the last residual summary, per block, and the blocks it was computed on (kept alive so
        # the next summary recomputes only the columns that changed since)
        self.summary_parts: list | None = None
        self.summary_blocks: list | None = None
        self.last_bin: int | None = None  # coarse bin of the last threshold: the next one's likely bin
        if sp.issparse(L_handle) and self.ex.client is not None:
            # a matrix given directly: make it one task's result so tasks share it by key
            L_handle = self.ex.submit(identity, L_handle, key=f"{name}-L")
        self.L = L_handle
        self.ex.gather(self.ex.submit(_validate_task, self.L, self.n, key=f"{name}-validate"))
        self.log.info(
            "%s: n=%d, target_nnz=%d, %d blocks of %d columns, %d waves of %d blocks",
            name, self.n, self.target, len(self.bounds), bc, len(self.waves), wb,
        )

    def starts(self, idx):
        return [self.bounds[b][0] for b in idx]

    def prune(self, handles: list, idx: list, counts: list | None = None) -> tuple[bool, int]:
        """Prune the blocks ``idx`` (with handles ``handles[b]``) globally to the target.

        ``counts`` (handles of the columns each preceding update changed) travel with the first
        histogram round, so the decision to skip an unchanged wave costs no extra round trip.
        Returns whether entries were pruned and the number of changed columns.
        """
        ex, starts = self.ex, self.starts(idx)
        hs = [handles[b] for b in idx]
        guess = self.last_bin
        coarse_parts = ex.map(_coarse_task, hs, starts, [guess] * len(hs), key=f"{self.name}-coarse")
        if counts is not None:
            coarse_parts = coarse_parts + [ex.submit(counts_part, counts, key=f"{self.name}-counted")]
        coarse, guessed, changed = ex.gather(
            ex.tree_reduce(merge_histogram_parts, coarse_parts, FAN_IN, key=f"{self.name}-coarse-sum")
        )
        if counts is not None and changed == 0:  # nothing moved since the last prune
            return False, 0

        def fine_for_bin(b):
            self.last_bin = int(b)
            if b == guess:
                return dense_histogram(guessed)
            parts = ex.map(_fine_task, hs, [int(b)] * len(hs), starts, key=f"{self.name}-fine")
            return dense_histogram(ex.gather(ex.tree_reduce(merge_histogram_parts, parts, FAN_IN, key=f"{self.name}-fine-sum"))[1])

        key = threshold_key(dense_histogram(coarse), fine_for_bin, self.keep)
        if key is None:
            return False, changed
        new = ex.map(_prune_task, hs, [int(key)] * len(hs), starts, key=f"{self.name}-prune")
        for b, h in zip(idx, new):
            handles[b] = h
        self.release(*hs)
        return True, changed

    def release(self, *handles) -> None:
        """Release block handles, except those the residual summary still refers to."""
        pinned = {id(h) for h in self.summary_blocks or ()}
        self.ex.release(*[h for h in handles if id(h) not in pinned])

    def summarise(self, handles: list, k: int) -> dict:
        """Residual statistics of the current ``M``: blocks unchanged since the last summary
        reuse it, changed blocks recompute only their changed columns."""
        n_blocks = len(self.bounds)
        parts = list(self.summary_parts) if self.summary_parts is not None else [None] * n_blocks
        prev_blocks = self.summary_blocks or [None] * n_blocks
        todo = [b for b in range(n_blocks) if parts[b] is None or handles[b] is not prev_blocks[b]]
        new = self.ex.map(
            residual_summary, [self.L] * len(todo), [handles[b] for b in todo], self.starts(todo),
            [k] * len(todo), [prev_blocks[b] for b in todo], [parts[b] for b in todo],
            key=f"{self.name}-residual",
        )
        stale = [parts[b] for b in todo if parts[b] is not None]
        current = {id(h) for h in handles}
        stale += [h for h in prev_blocks if h is not None and id(h) not in current]
        for b, h in zip(todo, new):
            parts[b] = h
        self.summary_parts, self.summary_blocks = parts, list(handles)
        self.ex.release(*stale)
        return self.ex.gather(self.ex.tree_reduce(merge_residual_summaries, parts, FAN_IN, key=f"{self.name}-residual-sum"))

    def record(self, name: str, t0: float, summary: dict, **extra) -> None:
        entry = {
            "pass": name,
            "seconds": time.perf_counter() - t0,
            "max_residual_norm": summary["max"],
            "mean_squared_residual_norm": summary["sumsq"] / max(self.n, 1),
            "nnz": summary["nnz"],
            **extra,
        }
        self.report.append(entry)
        self.log.info(
            "%s %s: %.2f s, max ||r_j|| %.4g, mean ||r_j||^2 %.4g, nnz %d%s",
            self.name, name, entry["seconds"], entry["max_residual_norm"],
            entry["mean_squared_residual_norm"], entry["nnz"],
            "".join(f", {k} {v}" for k, v in extra.items()),
        )

    def blocks(self, handles: list) -> list:
        return [(s, e, h) for (s, e), h in zip(self.bounds, handles)]


def _update(run: _Run, handles: list, idx: list, columns: list, skip_below: float):
    """Submit UMR updates of blocks ``idx``; returns the handles of their column counts."""
    ex = run.ex
    results = ex.map(
        _umr_task, [run.L] * len(idx), [handles[b] for b in idx], run.starts(idx), columns,
        [skip_below] * len(idx), [run.caps[b] for b in idx], key=f"{run.name}-update",
    )
    old = [handles[b] for b in idx]
    for b, h in zip(idx, ex.map(operator.getitem, results, [0] * len(idx), key=f"{run.name}-block")):
        handles[b] = h
    counts = ex.map(operator.getitem, results, [1] * len(idx), key=f"{run.name}-count")
    run.release(*old)
    ex.release(*results)
    return counts


def _skip_scan(summary: dict, skip_below: float) -> bool:
    """Whether a scan would leave every column alone: ``summary`` describes the current ``M``
    and the kernels skip a column exactly when its residual norm (the same number) is below."""
    return summary["max"] < skip_below


def _umr(run: _Run, config: UMRUnitLowerTriangleInverterConfig):
    n, ex = run.n, run.ex
    all_idx = list(range(len(run.bounds)))
    ncols = max(1, -(-run.target // max(n, 1)))  # ceil(n·δ) with δ = target / n²
    t0 = time.perf_counter()
    handles = ex.map(
        _initial_task, [run.L] * len(all_idx), run.starts(all_idx), [e for _, e in run.bounds],
        key=f"{run.name}-initial",
    )
    pruned, _ = run.prune(handles, all_idx)
    summary = run.summarise(handles, ncols)
    run.record("initial", t0, summary, columns_updated=0, prunes=int(pruned))

    for s in range(config.scans):
        t0 = time.perf_counter()
        skip_below = scan_skip_threshold(s, config.log_norm_threshold, n)
        updated, prunes = 0, 0
        if _skip_scan(summary, skip_below):
            run.record(f"scan {s}", t0, summary, columns_updated=0, prunes=0)
            continue
        for wave in run.waves:
            # an unchanged wave leaves M as the last prune left it: prune() then stops after one round
            pruned, changed = run.prune(handles, all_idx, counts=_update(run, handles, wave, [None] * len(wave), skip_below))
            updated += changed
            prunes += pruned
        if updated:
            summary = run.summarise(handles, ncols)
        run.record(f"scan {s}", t0, summary, columns_updated=updated, prunes=prunes)

    for step in range(config.finetune_steps):
        t0 = time.perf_counter()
        chosen = np.sort(summary["cols"][:ncols])
        starts = np.array([b[0] for b in run.bounds])
        owner = np.searchsorted(starts, chosen, side="right") - 1
        idx = [int(b) for b in np.unique(owner)]
        columns = [chosen[owner == b] - run.bounds[b][0] for b in idx]
        pruned, updated = run.prune(handles, all_idx, counts=_update(run, handles, idx, columns, -1.0))
        prunes = int(pruned)
        if updated:
            summary = run.summarise(handles, ncols)
        run.record(f"finetune {step}", t0, summary, columns_updated=updated, prunes=prunes)
    return run.blocks(handles), run.report


def _exact(run: _Run):
    ex = run.ex
    t0 = time.perf_counter()
    handles: list[Any] = [None] * len(run.bounds)
    prunes = 0
    done: list[int] = []
    for wave in run.waves:
        new = ex.map(
            _exact_task, [run.L] * len(wave), run.starts(wave), [run.bounds[b][1] for b in wave],
            [run.caps[b] for b in wave], key=f"{run.name}-solve",
        )
        for b, h in zip(wave, new):
            handles[b] = h
        done += wave
        prunes += run.prune(handles, done)[0]
    summary = run.summarise(handles, 1)
    run.record("exact", t0, summary, columns_updated=run.n, prunes=prunes)
    return run.blocks(handles), run.report


def invert_unit_lower(L_handle, n: int, config, *, target_nnz: int, executor=None,
                      block_columns: int | None = None, wave_blocks: int | str | None = None,
                      logger: logging.Logger | None = None):
    """Sparse ``M ≈ L⁻¹`` as column blocks, pruned to about ``target_nnz`` non-zeros.

    Parameters
    ----------
    L_handle : csc_matrix or Future
        Unit lower triangular ``L`` (n × n, float32, unit diagonal stored, sorted indices), or a
        future of it. Tasks take it as an argument, so a cluster ships it once per worker and can
        recompute it from lineage.
    n : int
        Order of ``L``.
    config : UMRUnitLowerTriangleInverterConfig or ExactUnitLowerTriangleInverterConfig
        Which inverter, with its settings.
    target_nnz : int
        Non-zeros to keep in ``M``, diagonal included (the diagonal is always kept; ties at the
        threshold are kept too, so a few more may remain).
    executor : InProcessExecutor or DaskExecutor, optional
        Where tasks run; in process by default.
    block_columns, wave_blocks : int, optional
        Columns per block (one task) and blocks per wave (one global prune). Default: the
        ``dask.config`` keys ``dask_rec.umr.block-columns`` / ``dask_rec.umr.wave-blocks``
        (see the module docstring for the defaults and why).
    logger : logging.Logger, optional
        Where per-pass statistics are logged (INFO).

    Returns
    -------
    blocks : list of (int, int, handle)
        ``(col_start, col_stop, block)`` where ``block`` is (a future of) the CSC float32 block
        ``M[:, col_start:col_stop]``, n × width.
    report : list of dict
        One entry per pass (``initial``, ``scan s``, ``finetune t``; ``exact`` for the exact
        inverter): ``pass``, ``seconds``, ``max_residual_norm`` (max ‖r_j‖₂),
        ``mean_squared_residual_norm`` (‖I − LM‖_F² / n), ``nnz``, ``columns_updated``,
        ``prunes`` (global prunes that removed entries).
    """
    if isinstance(config, UMRUnitLowerTriangleInverterConfig):
        run = _Run(L_handle, n, target_nnz, executor, block_columns, wave_blocks, logger, "umr")
        if run.n == 0:
            return [], []
        return _umr(run, config)
    if isinstance(config, ExactUnitLowerTriangleInverterConfig):
        run = _Run(L_handle, n, target_nnz, executor, block_columns, wave_blocks, logger, "exact-inverse")
        if run.n == 0:
            return [], []
        return _exact(run)
    raise TypeError(
        "config must be a UMRUnitLowerTriangleInverterConfig or an "
        f"ExactUnitLowerTriangleInverterConfig; got {type(config).__name__}"
    )


def assemble_blocks(blocks) -> sp.csc_matrix:
    """Stack ``(col_start, col_stop, block)`` column blocks into one CSC matrix (small data only).

    Futures are resolved with ``.result()``; blocks must tile ``0..n`` in order.
    """
    mats = []
    expected = 0
    for start, stop, handle in blocks:
        if start != expected:
            raise ValueError(f"blocks do not tile the columns: expected a block at {expected}, got {start}")
        mat = handle.result() if hasattr(handle, "result") else handle
        if mat.shape[1] != stop - start:
            raise ValueError(f"block {start}:{stop} has {mat.shape[1]} columns")
        mats.append(mat)
        expected = stop
    if not mats:
        return sp.csc_matrix((0, 0), dtype=np.float32)
    out = sp.hstack(mats, format="csc")
    out.sort_indices()
    return out.astype(np.float32, copy=False)
