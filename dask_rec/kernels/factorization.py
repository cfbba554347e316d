"""Factorization kernels: the Gramian to ``A[p][:, p] ≈ L·diag(d)·Lᵀ`` (no Dask).

:func:`factorize_gramian` works on the assembled Gramian's column blocks (ICF column scaling when
that factorizer is used, λI, the item ordering, then the ICF or CHOLMOD); :func:`factorize_lower_gramian`
streams the ICF over the lower Gramian's column blocks (in memory or on disk), holding one block
and the factor. :func:`factor_budget` is the factor's entry budget from the target density.
:mod:`dask_rec.models.sansa.factorize` runs them as the fit's factorization task.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dask_rec.exceptions import DaskRecWarning

__all__ = ["Factor", "effective_density", "factor_budget", "factorize_gramian", "factorize_lower_gramian"]

logger = logging.getLogger(__name__)


@dataclass
class Factor:
    """``A[p][:, p] ≈ L·diag(d)·Lᵀ`` with L unit lower triangular (CSC float32)."""

    L: sp.csc_matrix
    d: np.ndarray
    p: np.ndarray
    stats: dict = field(default_factory=dict)


def effective_density(density: float, n_items: int) -> float:
    """The density actually used: at least 2/n (about one off-diagonal entry per column)."""
    floor = min(1.0, 2.0 / n_items)
    if density < floor:
        warnings.warn(
            f"weight_matrix_density={density:g} is below 2/n_items={floor:g} for {n_items} items; using {floor:g}",
            DaskRecWarning,
            stacklevel=3,
        )
        return floor
    return density


def factor_budget(density: float, n_items: int) -> int:
    """Non-zeros allowed in the factor: ceil(δ·n²), never fewer than n (the diagonal)."""
    return max(int(math.ceil(density * n_items * n_items)), n_items)


def factorize_gramian(gramian_blocks, *, l2: float, density: float, factorizer_config, item_counts=None,
                      X_blocks=None) -> Factor:
    """Kernel of the stage (no Dask): Gramian column blocks in, :class:`Factor` out.

    Parameters
    ----------
    gramian_blocks : list of csr_matrix
        Column blocks of G = XᵀX, in item order (``[G]`` for a single block).
    l2 : float
        λ added to the (scaled) Gramian's diagonal.
    density : float
        Target density δ of the factor.
    factorizer_config : CHOLMODGramianFactorizerConfig or ICFGramianFactorizerConfig
    item_counts : ndarray, optional
        Interactions per item, for the popularity ordering.
    X_blocks : list of csr_matrix, optional
        Row blocks of X, for the COLAMD ordering (which orders the columns of X).
    """
    from dask_rec.kernels.gramian import gramian_row_norms, icf_scaling, permuted_lower_triangle
    from dask_rec.kernels.ordering import item_ordering

    t0 = time.perf_counter()
    G = gramian_blocks[0] if len(gramian_blocks) == 1 else sp.hstack(gramian_blocks, format="csr")
    n = G.shape[0]
    stats = {"n_items": n, "gramian_nnz": int(G.nnz)}
    method = factorizer_config.factorization_method
    X = None
    if factorizer_config.reordering_method == "colamd" and X_blocks is not None:
        X = X_blocks[0] if len(X_blocks) == 1 else sp.vstack(X_blocks, format="csr")
    t1 = time.perf_counter()
    # AMD reads A's pattern without its diagonal: G's pattern is that of the scaled, regularised A
    p = item_ordering(factorizer_config.reordering_method, X=X, A=G, item_counts=item_counts)
    del X
    stats["ordering_seconds"] = time.perf_counter() - t1
    # the factorizers read the lower triangle of A_p = P(SGS + λI)Pᵀ only: build just that
    scaling = icf_scaling(gramian_row_norms(G)) if method == "ICF" else None
    A_p = permuted_lower_triangle(G, p, l2, scaling)
    del G
    budget = factor_budget(density, n)
    t2 = time.perf_counter()
    if method == "ICF":
        from dask_rec.kernels.icf import icf_ldlt

        L, d, fstats = icf_ldlt(A_p, budget, shift_step=factorizer_config.factorization_shift_step,
                                shift_multiplier=factorizer_config.factorization_shift_multiplier)
    else:
        from dask_rec.kernels.cholesky import cholmod_ldlt

        L, d, fstats = cholmod_ldlt(A_p, budget)
    stats["factorization_seconds"] = time.perf_counter() - t2
    stats.update({f"factor_{k}" if not k.startswith("factor") else k: v for k, v in fstats.items()})
    stats["L_nnz"] = int(L.nnz)
    stats["stage_seconds"] = time.perf_counter() - t0
    logger.info("factorized %d items with %s (%s order): nnz(L)=%d in %.1f s", n, method,
                factorizer_config.reordering_method, L.nnz, stats["stage_seconds"])
    return Factor(L=L, d=np.asarray(d, dtype=np.float64), p=np.asarray(p, dtype=np.int64), stats=stats)


def factorize_lower_gramian(lower, *, l2: float, density: float, factorizer_config) -> Factor:
    """Kernel of the streamed stage (no Dask): ICF of ``P(SGS + λI)Pᵀ`` read block by block.

    ``lower`` is a :class:`~dask_rec.stages.gramian_store.LowerGramian` whose blocks are the lower
    triangle of ``G_p = PGPᵀ`` in the fit's order. A first pass over the blocks gives G's
    diagonal and row norms (the ICF scaling ``s``); then :func:`~dask_rec.kernels.icf.icf_ldlt_streamed`
    reads the blocks again in order, each scaled as it is read (``(g·s_i)·s_j``), so one block
    and the factor are all that is held: about ``20·budget + 120·n`` bytes plus one block.
    """
    from dask_rec.kernels.gramian import icf_scaling, lower_block_sums, scale_lower_block
    from dask_rec.kernels.icf import icf_ldlt_streamed

    t0 = time.perf_counter()
    n = int(lower.n_items)
    sumsq = np.zeros(n, dtype=np.float64)
    G_diag = np.full(n, np.nan)
    for c, (j0, _) in enumerate(lower.bounds):
        lower_block_sums(lower.block(c), j0, sumsq, G_diag)
    s = icf_scaling(np.sqrt(sumsq))
    present = ~np.isnan(G_diag)
    diag = np.full(n, float(l2))
    diag[present] = (G_diag[present] * s[present]) * s[present] + l2  # as permuted_lower_triangle
    del sumsq, G_diag, present
    t1 = time.perf_counter()

    def columns():
        for c, (j0, j1) in enumerate(lower.bounds):
            block = lower.block(c)
            yield j0, j1, block.indptr, block.indices, scale_lower_block(block, j0, s)

    budget = factor_budget(density, n)
    L, d, fstats = icf_ldlt_streamed(columns, n, diag, budget, shift_step=factorizer_config.factorization_shift_step,
                                     shift_multiplier=factorizer_config.factorization_shift_multiplier,
                                     storage_hint=min(budget, 2 * lower.nnz) if lower.nnz else None)
    stats = {"n_items": n, "gramian_lower_nnz": int(lower.nnz), "gramian_nnz": int(2 * lower.nnz - np.count_nonzero(diag != l2)),
             "gramian_blocks": len(lower.bounds), "gramian_on_disk": bool(lower.on_disk),
             "ordering_seconds": 0.0, "scaling_seconds": t1 - t0,
             "factorization_seconds": time.perf_counter() - t1}
    stats.update({f"factor_{k}": v for k, v in fstats.items()})
    stats["L_nnz"] = int(L.nnz)
    stats["stage_seconds"] = time.perf_counter() - t0
    logger.info("factorized %d items with ICF from %d Gramian blocks%s: nnz(L)=%d in %.1f s", n, len(lower.bounds),
                " on disk" if lower.on_disk else "", L.nnz, stats["stage_seconds"])
    return Factor(L=L, d=np.asarray(d, dtype=np.float64), p=np.asarray(lower.order, dtype=np.int64), stats=stats)
