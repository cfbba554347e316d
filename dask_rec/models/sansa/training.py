"""The training pipeline, written once: row blocks → Gramian → factor → inverse → weights.

:func:`fit_weights` runs the stages through an executor (:mod:`dask_rec.executor`): in this
process, or as tasks on a ``distributed`` cluster, with the same kernels in the same order of
reduction. On a cluster every intermediate (blocks, Gramian, factor, inverse, weights) stays on
the workers as futures computed from their lineage; the client receives only small summaries
(counts, residual norms, timings).

Two routes lead to the factor:

* **streamed** (ICF with the popularity or natural order, the default): the order is known from
  item counts before the Gramian, so only the lower triangle of the ordered Gramian is computed,
  in column blocks planned from the workers' memory, kept on the big-memory worker when small or
  written to disk when not (:mod:`dask_rec.stages.gramian_store`); the factorization streams over those
  blocks, holding about the factor plus one block (:func:`~dask_rec.kernels.factorization.factorize_lower_gramian`).
* **assembled** (CHOLMOD, or the COLAMD/AMD orderings, which read the whole matrix): the Gramian
  in planned column blocks, gathered by one task on the big-memory worker.

Before any expensive stage runs, the memory each stage's tasks will need is checked against the
workers' limits (:mod:`dask_rec.memory_plan`); a stage that cannot fit stops the fit with one line
naming the stage, the figures and the knob.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import operator
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dask_rec import settings
from dask_rec.kernels.factorization import effective_density, factor_budget
from dask_rec.models.sansa.factorize import (
    check_factorization_memory,
    streamed_factorization_bytes,
    submit_factorization,
    submit_lower_factorization,
)
from dask_rec.stages.gramian import (
    ENTRY_BYTES,
    gramian_column_bound,
    lower_column_bound,
    lower_gramian_stage,
    ordered_row_blocks,
    plan_column_blocks,
    plan_lower_blocks,
    reduce_column_work,
    reduce_gramian,
    reduce_item_counts,
    reduce_row_work,
)
from dask_rec.models.sansa.invert import invert_unit_lower, resolve_partition, task_memory_bytes
from dask_rec.memory_plan import bigmem_budget, gib, memory_limits, require, task_budget

__all__ = ["FitResult", "fit_weights", "uses_streamed_gramian", "weights_memory_bytes", "compute_lower_gramian",
           "fit_weights_from_lower_gramian", "release_lower_gramian"]

logger = logging.getLogger(__name__)

_BIGMEM_KNOB = ("run a worker with more memory and the 'bigmem' resource "
                "(dask worker --resources bigmem=1 --memory-limit ...)")


@dataclass
class FitResult:
    """Handles of the trained weights and what the fit measured."""

    weights: object  # handle of (W1, W2)
    n_items: int
    report: dict = field(default_factory=dict)


class _Stages:
    """Times stages; on a cluster waits for each stage's tasks (with a progress bar in a terminal).

    A stage whose tasks failed raises (a task that kept killing its workers becomes an
    :class:`~dask_rec.exceptions.InsufficientMemoryError` naming the stage) and is logged as
    failed, never as done.
    """

    def __init__(self, executor, progress: bool | None, limits):
        self.executor = executor
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.limits = limits
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        logger.info("stage %s: started", name)
        t0 = time.perf_counter()
        handles: list = []
        try:
            yield handles
            if self.executor.client is not None and handles:
                if self.progress:
                    from distributed import progress

                    print(f"[dask_rec] {name}", file=sys.stderr)
                    progress(handles)
                self.executor.wait(handles)
        except BaseException as exc:
            from dask_rec.exceptions import InsufficientMemoryError

            if isinstance(exc, InsufficientMemoryError):  # a refusal from the memory plan: the error says it all
                logger.info("stage %s: stopped after %.2f s (not enough memory)", name, time.perf_counter() - t0)
                raise
            logger.error("stage %s: failed after %.2f s", name, time.perf_counter() - t0)
            _raise_memory_error_if_killed(name, exc, self.limits)
            raise
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        logger.info("stage %s: done in %.2f s", name, self.seconds[name])


def _raise_memory_error_if_killed(stage: str, exc: BaseException, limits) -> None:
    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover
        return
    if not isinstance(exc, KilledWorker):
        return
    from dask_rec.exceptions import InsufficientMemoryError

    where = (f"workers with {gib(limits.per_task)} per thread and {gib(limits.bigmem)} on the bigmem worker"
             if limits.per_task else "workers without memory limits")
    knob = (_BIGMEM_KNOB if stage in ("factorize", "weights")
            else "give the workers more memory per thread (fewer threads, or a larger --memory-limit), "
                 "or lower dask_rec.memory.task-fraction")
    raise InsufficientMemoryError(
        f"stage {stage}: a task kept killing the workers that ran it (most likely out of memory, on {where}); "
        f"{knob}"
    ) from exc


def uses_streamed_gramian(config, compute_gramian: bool = True) -> bool:
    """Whether a fit takes the streamed route (ICF with an order known before the Gramian)."""
    fconf = config.gramian_factorizer_config
    return (compute_gramian and fconf.factorization_method == "ICF"
            and fconf.reordering_method in ("popularity", "natural"))


def _check_model_memory(limits, n_items: int, density: float, config) -> int:
    """Refuse up front what the factor's budget alone makes impossible: the factorization and
    the weights on the big-memory worker, the inverse's tasks on every worker. Returns the
    inverse's columns per block."""
    budget = factor_budget(density, n_items)
    knob = "lower the budget (--nnz-per-item or --density)"
    if config.gramian_factorizer_config.factorization_method == "ICF":
        require("factorize", streamed_factorization_bytes(n_items, density, 0), bigmem_budget(limits),
                f"the ICF of {n_items:,} items (budget {budget:,} entries)", f"{knob}, or {_BIGMEM_KNOB}",
                limits.bigmem)
    require("weights", weights_memory_bytes(n_items, budget), bigmem_budget(limits),
            f"assembling the weights ({budget:,} entries each)", f"{knob}, or {_BIGMEM_KNOB}", limits.bigmem)
    block_columns = umr_block_columns(n_items, budget, limits)
    if config.lower_triangle_inverter_config.approximate_inverse_method == "UMR":
        require("invert", task_memory_bytes(n_items, budget, block_columns), task_budget(limits),
                f"a UMR task ({n_items:,} items, budget {budget:,} entries, {block_columns} columns per block)",
                f"{knob}, lower dask_rec.umr.block-columns, or give the workers more memory per thread",
                limits.per_task)
    return block_columns


def umr_block_columns(n_items: int, budget: int, limits) -> int:
    """Columns per block of the inverse: ``dask_rec.umr.block-columns``, or with ``auto`` sized
    from the item count and the task memory (:func:`~dask_rec.models.sansa.invert.auto_block_columns`)."""
    from dask_rec.models.sansa.invert import auto_block_columns

    configured = settings.get("umr.block-columns")
    if isinstance(configured, str) and configured == "auto":
        return auto_block_columns(n_items, budget, task_budget(limits))
    return resolve_partition(n_items)[0]


def weights_memory_bytes(n_items: int, budget: int) -> int:
    """Peak bytes of :func:`~dask_rec.kernels.weights.weights_from_inverse`, roughly: the
    inverse's blocks, their concatenation and the permuted, transposed and scaled copies."""
    return int(64 * budget + 64 * n_items)


def _scratch_dir(source, executor=None, estimate_bytes: int = 0) -> Path:
    """Where on-disk Gramian blocks go: ``dask_rec.gramian.scratch-dir``, else beside the store
    (which every worker reads), else the system's temporary directory when every worker runs on
    this machine's host; workers on several hosts need a configured directory they all see."""
    configured = settings.get("gramian.scratch-dir")
    if configured:
        return Path(configured)
    if source.store is not None:
        return Path(source.store.path).parent
    client = getattr(executor, "client", None)
    if client is not None:
        from urllib.parse import urlparse

        hosts = {urlparse(addr).hostname for addr in client.scheduler_info().get("workers", {})}
        if len(hosts) > 1:
            raise ValueError(
                f"the Gramian's blocks (up to {gib(estimate_bytes)}) go to disk, and the workers run on "
                f"{len(hosts)} hosts: set dask_rec.gramian.scratch-dir to a directory they all see "
                "(or fit from a store, whose directory is used)")
    return Path(tempfile.gettempdir())


def _lower_gramian_on_disk(estimate_bytes: int, limits) -> bool:
    storage = str(settings.get("gramian.storage")).lower()
    if storage not in ("auto", "memory", "disk"):
        raise ValueError(f"dask_rec.gramian.storage must be auto, memory or disk; got {storage!r}")
    if storage != "auto":
        return storage == "disk"
    if settings.get("gramian.keep"):
        return True
    room = limits.bigmem * float(settings.get("gramian.in-memory-fraction"))
    return bool(room) and estimate_bytes > room


def fit_weights(source, config, executor, *, compute_gramian: bool = True, progress: bool | None = None) -> FitResult:
    """Train SANSA weights from a :class:`~dask_rec.data.blocks.RowBlockSource`.

    ``compute_gramian=False`` treats the data as a precomputed item-item matrix (in memory).
    """
    n_items = int(source.shape[1])
    if not compute_gramian and source.shape[0] != source.shape[1]:
        raise ValueError(
            f"with compute_gramian=False the data must be a square item-item matrix; got shape {source.shape}"
        )
    density = effective_density(config.density_for(n_items), n_items)
    limits = memory_limits(executor)
    block_columns = _check_model_memory(limits, n_items, density, config)
    if not limits.in_process and not limits.per_task:
        logger.warning("the workers have no memory limit: nothing is planned or checked, and the Gramian is one "
                       "block (start them with --memory-limit)")
    stages = _Stages(executor, progress, limits)
    t0 = time.perf_counter()

    with stages.stage("read") as wait_for:
        blocks = source.block_handles(executor)
        wait_for.extend(blocks)

    if uses_streamed_gramian(config, compute_gramian):
        ordering = config.gramian_factorizer_config.reordering_method
        lower, gramian_info = _lower_gramian(executor, stages, source, blocks, ordering, limits, density=density)
        try:
            factor = _factor_from_lower(executor, stages, lower, density, config, limits)
        finally:
            gramian_info.update(_dispose_lower_gramian(executor, lower))
    else:
        factor, gramian_info = _assembled_factor(executor, stages, blocks, n_items, density, config, limits,
                                                 compute_gramian)
    weights, report = _inverse_and_weights(executor, stages, factor, n_items, density, config, block_columns)
    report.update({"n_users": int(source.shape[0]), "nnz": int(source.nnz), "gramian": gramian_info,
                   "stage_seconds": stages.seconds, "total_seconds": round(time.perf_counter() - t0, 3)})
    return FitResult(weights=weights, n_items=n_items, report=report)


def compute_lower_gramian(source, executor, *, ordering: str = "popularity", progress: bool | None = None):
    """The read and Gramian stages of the streamed route alone, for fits that share one Gramian.

    Returns the :class:`~dask_rec.stages.gramian_store.LowerGramian` of ``source`` in ``ordering``
    (``"popularity"`` or ``"natural"``): its blocks stay on the cluster (or on disk, see
    ``dask_rec.gramian.storage``) until :func:`release_lower_gramian`. Its scaling and order do
    not depend on λ or the budget, so any number of :func:`fit_weights_from_lower_gramian` calls
    (with different configs, even concurrently from threads) can read it.
    """
    if ordering not in ("popularity", "natural"):
        raise ValueError(f"a shared Gramian needs an order known before it: popularity or natural; got {ordering!r}")
    limits = memory_limits(executor)
    stages = _Stages(executor, progress, limits)
    with stages.stage("read") as wait_for:
        blocks = source.block_handles(executor)
        wait_for.extend(blocks)
    lower, info = _lower_gramian(executor, stages, source, blocks, ordering, limits)
    lower.info = {**info, "stage_seconds": dict(stages.seconds)}
    return lower


def release_lower_gramian(executor, lower) -> dict:
    """Release a :func:`compute_lower_gramian` result: its blocks, or its directory (unless kept)."""
    return _dispose_lower_gramian(executor, lower)


def fit_weights_from_lower_gramian(lower, config, executor, *, progress: bool | None = None) -> FitResult:
    """Factorize, invert and assemble the weights of ``config`` from a computed lower Gramian.

    ``config`` must use the ICF with the Gramian's order. Same weights as :func:`fit_weights` on
    the data the Gramian came from.
    """
    fconf = config.gramian_factorizer_config
    if not uses_streamed_gramian(config) or fconf.reordering_method != lower.ordering:
        raise ValueError(f"this Gramian is in {lower.ordering!r} order: the config must use the ICF with "
                         f"reordering_method={lower.ordering!r}; got {fconf.factorization_method} with "
                         f"{fconf.reordering_method!r}")
    n_items = int(lower.n_items)
    density = effective_density(config.density_for(n_items), n_items)
    limits = memory_limits(executor)
    block_columns = _check_model_memory(limits, n_items, density, config)
    stages = _Stages(executor, progress, limits)
    t0 = time.perf_counter()
    factor = _factor_from_lower(executor, stages, lower, density, config, limits)
    weights, report = _inverse_and_weights(executor, stages, factor, n_items, density, config, block_columns)
    report.update({"stage_seconds": stages.seconds, "total_seconds": round(time.perf_counter() - t0, 3),
                   "gramian": dict(getattr(lower, "info", None) or {})})
    return FitResult(weights=weights, n_items=n_items, report=report)


def _inverse_and_weights(executor, stages, factor, n_items, density, config, block_columns):
    """The invert and weights stages from a factor's handle; returns (weights handle, report)."""
    from dask_rec.kernels.weights import weights_from_inverse

    L = executor.submit(operator.attrgetter("L"), factor, key="factor-L")
    d = executor.submit(operator.attrgetter("d"), factor, key="factor-d")
    p = executor.submit(operator.attrgetter("p"), factor, key="factor-p")
    factor_stats = executor.gather(executor.submit(operator.attrgetter("stats"), factor, key="factor-stats"))

    with stages.stage("invert") as wait_for:
        inverse_blocks, inverse_report = invert_unit_lower(
            L, n_items, config.lower_triangle_inverter_config, target_nnz=factor_budget(density, n_items),
            executor=executor, logger=logger, block_columns=block_columns,
        )
        wait_for.extend(h for _, _, h in inverse_blocks)

    with stages.stage("weights") as wait_for:
        weights = executor.submit(
            weights_from_inverse, [h for _, _, h in inverse_blocks], d, p, key="weights", bigmem=True
        )
        wait_for.append(weights)
    executor.release(factor, L, d, p, *[h for _, _, h in inverse_blocks])
    return weights, {"n_items": n_items, "density": density, "factor": factor_stats, "inverse": inverse_report}


def _lower_gramian(executor, stages, source, blocks, ordering, limits, density=None):
    """The Gramian stage of the streamed route: item order from counts, lower triangle of the
    ordered Gramian in planned column blocks. With ``density``, the factorization's memory is
    checked against the planned blocks before the Gramian is computed."""
    from dask_rec.kernels.ordering import item_ordering

    n_items = int(source.shape[1])
    natural = ordering == "natural"
    with stages.stage("gramian") as wait_for:
        counts = executor.gather(reduce_item_counts(executor, blocks))
        order = item_ordering(ordering, item_counts=counts)
        ordered = ordered_row_blocks(executor, blocks, order, natural)
        executor.release(*blocks)  # the ordered copies (and their lineage) are what the stage reads
        bound = lower_column_bound(executor.gather(reduce_row_work(executor, ordered)))
        bounds = plan_lower_blocks(bound, task_budget(limits), n_row_blocks=len(ordered), limit=limits.per_task)
        if density is not None:
            largest = max((int(bound[a:b].sum()) for a, b in bounds), default=0)
            _require_factorization(n_items, density, largest, limits)
        estimate = ENTRY_BYTES * int(bound.sum())
        on_disk = _lower_gramian_on_disk(estimate, limits)
        scratch = _scratch_dir(source, executor, estimate) if on_disk else None
        logger.info("gramian: lower triangle of %d items in %d column blocks (at most %s), %s", n_items, len(bounds),
                    gib(estimate), f"written under {scratch}" if on_disk else "kept in memory")
        lower = lower_gramian_stage(executor, ordered, n_items, order, bounds, scratch_dir=scratch, ordering=ordering)
        wait_for.extend(lower.handles)
    executor.release(*ordered)
    return lower, {"route": "streamed", "blocks": len(bounds), "lower_nnz": lower.nnz, "lower_bound": int(bound.sum()),
                   "on_disk": lower.on_disk}


def _require_factorization(n_items, density, largest_block, limits) -> None:
    require("factorize", streamed_factorization_bytes(n_items, density, largest_block), bigmem_budget(limits),
            f"the ICF of {n_items:,} items (budget {factor_budget(density, n_items):,} entries, "
            f"Gramian blocks of up to {largest_block:,} entries)",
            f"lower the budget (--nnz-per-item or --density), or {_BIGMEM_KNOB}", limits.bigmem)


def _factor_from_lower(executor, stages, lower, density, config, limits):
    """The factorize stage of the streamed route: one task on the bigmem worker."""
    _require_factorization(lower.n_items, density, max(lower.block_nnz, default=0), limits)
    with stages.stage("factorize") as wait_for:
        factor = submit_lower_factorization(executor, dataclasses.replace(lower, handles=[]), lower.handles,
                                            l2=config.l2, density=density,
                                            factorizer_config=config.gramian_factorizer_config)
        wait_for.append(factor)
    return factor


def _dispose_lower_gramian(executor, lower) -> dict:
    """Release the blocks, or remove (or, with ``dask_rec.gramian.keep``, keep) their directory."""
    from dask_rec.stages.gramian_store import finish_lower_gramian, remove_lower_gramian

    executor.release(*lower.handles)
    if not lower.on_disk:
        return {}
    keep = settings.get("gramian.keep")
    kept = finish_lower_gramian(lower.path, lower.nnz, keep) if keep else None
    if kept:
        logger.info("gramian: kept at %s", kept)
        return {"kept": kept}
    remove_lower_gramian(lower.path)
    return {}


def _assembled_factor(executor, stages, blocks, n_items, density, config, limits, compute_gramian):
    """The whole Gramian in planned column blocks, factorized by one task."""
    fconf = config.gramian_factorizer_config
    with stages.stage("gramian") as wait_for:
        if compute_gramian:
            counts = reduce_item_counts(executor, blocks)
            bound = gramian_column_bound(executor.gather(reduce_column_work(executor, blocks)))
            bounds = plan_column_blocks(bound, task_budget(limits), n_row_blocks=len(blocks), limit=limits.per_task)
            # the bound exceeded the true non-zeros 1.3-1.9x on the datasets measured: half of it
            # refuses only what cannot fit; the exact check follows the reduction
            check_factorization_memory(limits, int(bound.sum()) // 2, n_items, density, estimated=True)
            gramian = reduce_gramian(executor, blocks, n_items, bounds=bounds)
        else:  # the data is the item-item matrix itself; popularity is its diagonal
            given = executor.submit(_stack_rows, blocks, key="gramian-given")
            counts = executor.submit(_diagonal, given, key="gramian-diagonal")
            gramian = [(0, n_items, given)]
        gramian_handles = [h for _, _, h in gramian]
        wait_for.extend(gramian_handles + [counts])

    gramian_nnz = sum(executor.gather(executor.map(_nnz, gramian_handles, key="gramian-nnz")))
    check_factorization_memory(limits, gramian_nnz, n_items, density)
    with stages.stage("factorize") as wait_for:
        needs_x = compute_gramian and fconf.reordering_method == "colamd"
        factor = submit_factorization(
            executor, gramian_handles, l2=config.l2, density=density, factorizer_config=fconf,
            item_counts_handle=counts, X_handles=blocks if needs_x else None,
        )
        wait_for.append(factor)
    executor.release(*gramian_handles, *blocks)
    return factor, {"route": "assembled", "blocks": len(gramian_handles), "nnz": int(gramian_nnz)}


def _stack_rows(blocks):
    import scipy.sparse as sp

    return sp.vstack(blocks, format="csr").astype("float64")


def _nnz(matrix) -> int:
    return int(matrix.nnz)


def _diagonal(matrix):
    return matrix.diagonal()

