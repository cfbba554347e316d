"""The training pipeline, written once: row blocks → Gramian → factor → inverse → weights.

:func:`fit_weights` runs the stages through an executor (:mod:`dask_rec.executor`): in this
process, or as tasks on a ``distributed`` cluster, with the same kernels in the same order of
reduction. On a cluster every intermediate (blocks, Gramian, factor, inverse, weights) stays on
the workers as futures computed from their lineage; the client receives only small summaries
(counts, residual norms, timings).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import sys
import time
from dataclasses import dataclass, field

from .factorize import check_factorization_memory, effective_density, factor_budget, submit_factorization
from .gramian import reduce_gramian, reduce_item_counts
from .invert import invert_unit_lower

__all__ = ["FitResult", "fit_weights"]

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Handles of the trained weights and what the fit measured."""

    weights: object  # handle of (W1, W2)
    n_items: int
    report: dict = field(default_factory=dict)


class _Stages:
    """Times stages; on a cluster waits for each stage's tasks (with a progress bar in a terminal)."""

    def __init__(self, executor, progress: bool | None):
        self.executor = executor
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        logger.info("stage %s: started", name)
        t0 = time.perf_counter()
        handles: list = []
        yield handles
        if self.executor.client is not None and handles:
            if self.progress:
                from distributed import progress

                print(f"[dask_rec] {name}", file=sys.stderr)
                progress(handles)
            self.executor.wait(handles)
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        logger.info("stage %s: done in %.2f s", name, self.seconds[name])


def fit_weights(source, config, executor, *, compute_gramian: bool = True, progress: bool | None = None) -> FitResult:
    """Train SANSA weights from a :class:`~dask_rec.blocks.RowBlockSource`.

    ``compute_gramian=False`` treats the data as a precomputed item-item matrix (in memory).
    """
    from .kernels.weights import weights_from_inverse

    n_items = int(source.shape[1])
    if not compute_gramian and source.shape[0] != source.shape[1]:
        raise ValueError(
            f"with compute_gramian=False the data must be a square item-item matrix; got shape {source.shape}"
        )
    density = effective_density(config.weight_matrix_density, n_items)
    fconf = config.gramian_factorizer_config
    stages = _Stages(executor, progress)
    t0 = time.perf_counter()

    with stages.stage("read") as wait_for:
        blocks = source.block_handles(executor)
        wait_for.extend(blocks)

    with stages.stage("gramian") as wait_for:
        if compute_gramian:
            counts = reduce_item_counts(executor, blocks)
            gramian = reduce_gramian(executor, blocks, n_items)
        else:  # the data is the item-item matrix itself; popularity is its diagonal
            given = executor.submit(_stack_rows, blocks, key="gramian-given")
            counts = executor.submit(_diagonal, given, key="gramian-diagonal")
            gramian = [(0, n_items, given)]
        gramian_handles = [h for _, _, h in gramian]
        wait_for.extend(gramian_handles + [counts])

    gramian_nnz = sum(executor.gather(executor.map(_nnz, gramian_handles, key="gramian-nnz")))
    check_factorization_memory(executor, gramian_nnz, n_items, density)
    with stages.stage("factorize") as wait_for:
        needs_x = compute_gramian and fconf.reordering_method == "colamd"
        factor = submit_factorization(
            executor, gramian_handles, l2=config.l2, density=density, factorizer_config=fconf,
            item_counts_handle=counts, X_handles=blocks if needs_x else None,
        )
        wait_for.append(factor)
    _raise_if_killed(executor, factor, gramian_nnz, n_items, density)
    executor.release(*gramian_handles, *blocks)
    del gramian_handles, blocks, gramian

    L = executor.submit(operator.attrgetter("L"), factor, key="factor-L")
    d = executor.submit(operator.attrgetter("d"), factor, key="factor-d")
    p = executor.submit(operator.attrgetter("p"), factor, key="factor-p")
    factor_stats = executor.gather(executor.submit(operator.attrgetter("stats"), factor, key="factor-stats"))

    with stages.stage("invert") as wait_for:
        inverse_blocks, inverse_report = invert_unit_lower(
            L, n_items, config.lower_triangle_inverter_config, target_nnz=factor_budget(density, n_items),
            executor=executor, logger=logger,
        )
        wait_for.extend(h for _, _, h in inverse_blocks)

    with stages.stage("weights") as wait_for:
        weights = executor.submit(
            weights_from_inverse, [h for _, _, h in inverse_blocks], d, p, key="weights", bigmem=True
        )
        wait_for.append(weights)
    executor.release(factor, L, d, p, *[h for _, _, h in inverse_blocks])

    report = {
        "n_users": int(source.shape[0]),
        "n_items": n_items,
        "nnz": int(source.nnz),
        "density": density,
        "stage_seconds": stages.seconds,
        "total_seconds": round(time.perf_counter() - t0, 3),
        "factor": factor_stats,
        "inverse": inverse_report,
    }
    return FitResult(weights=weights, n_items=n_items, report=report)


def _stack_rows(blocks):
    import scipy.sparse as sp

    return sp.vstack(blocks, format="csr").astype("float64")


def _raise_if_killed(executor, factor, gramian_nnz, n_items, density) -> None:
    """Turn a factorization task that kept killing its workers into a clear memory error."""
    if executor.client is None:
        return
    from distributed import KilledWorker

    from .exceptions import InsufficientMemoryError
    from .executor import BIGMEM_RESOURCE
    from .factorize import factorization_memory_estimate

    try:
        executor.wait([factor])
        if factor.status == "error":
            factor.result()
    except KilledWorker as exc:
        need = factorization_memory_estimate(gramian_nnz, n_items, density)
        raise InsufficientMemoryError(
            f"the factorization task killed its worker(s) ({exc}); it needs about {need / 2**30:.2f} GiB. "
            f"Run one worker with enough memory and the '{BIGMEM_RESOURCE}' resource "
            f"(dask worker --resources {BIGMEM_RESOURCE}=1 --memory-limit ...)."
        ) from exc


def _nnz(matrix) -> int:
    return int(matrix.nnz)


def _diagonal(matrix):
    return matrix.diagonal()
