"""SLIM: sparse linear item-item weights, one non-negative elastic net per item on the Gramian.

Stages: row blocks → ``reduce_gramian`` (column blocks, summed on the big-memory worker) → one
task there joins them into the whole sparse Gramian (each SLIM column reads the Gramian columns
of its candidate items, which may be anywhere) → one task per range of
:attr:`SLIMConfig.columns_per_task` item columns solves them by coordinate descent
(:func:`dask_rec.kernels.slim.slim_columns`) → the weight columns are joined into W. Scores are
``x · W``; W has a zero diagonal, non-negative entries and at most ``topk`` entries per column.

Memory: every worker that runs column tasks holds one copy of the sparse Gramian (12 bytes per
stored entry; gowalla: 61M entries, about 0.7 GiB), plus per task a few item-length arrays and
an 8 MiB dense buffer for the active set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.neighbors import gramian_columns
from dask_rec.kernels.slim import slim_columns
from dask_rec.validation import check_int

from ._item_item import ItemItemModel, gramian_stage, run_fit

__all__ = ["SLIMConfig", "SLIM"]


@dataclass(frozen=True)
class SLIMConfig:
    """Penalties of ``½‖x_j − Xw‖² + l1·Σw + ½·l2·‖w‖²`` (w ≥ 0, w_j = 0) and the solver's settings.

    ``l1``: the L1 penalty (also prunes: an item co-occurring with ``j`` in at most ``l1`` users
    gets no weight); ``l2``: the L2 penalty; ``tol``/``max_iter``: stop when a full sweep moves no
    weight by more than ``tol · max(w)``; ``topk``: weights kept per item column (0: all);
    ``columns_per_task``: item columns per task. scikit-learn's ``ElasticNet(alpha, l1_ratio)``
    on N users is ``l1 = N·alpha·l1_ratio``, ``l2 = N·alpha·(1 − l1_ratio)``.
    """

    l1: float = 2.0
    l2: float = 50.0
    tol: float = 1e-4
    max_iter: int = 100
    topk: int = 0
    columns_per_task: int = 2048

    def __post_init__(self):
        for name in ("l1", "l2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        if self.l1 + self.l2 <= 0:
            raise ValueError(f"l1 + l2 must be > 0 (the elastic net needs a penalty); got l1={self.l1}, l2={self.l2}")
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a number > 0; got {self.tol!r}")
        for name, low in (("max_iter", 1), ("topk", 0), ("columns_per_task", 1)):
            check_int(getattr(self, name), name, low)


def _join_columns(blocks, starts) -> sp.csc_matrix:
    if len(blocks) == 1:
        return gramian_columns(blocks[0], starts[0])
    return sp.hstack([gramian_columns(b, a) for b, a in zip(blocks, starts)], format="csc")


class SLIM(ItemItemModel):
    """Sparse LInear Methods (Ning & Karypis, 2011) by coordinate descent on the Gramian.

    Parameters
    ----------
    config : SLIMConfig, optional

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix or None
        W (``n_items × n_items``): column ``j`` = the weights that predict item ``j``.
    """

    name = "slim"
    kind = "dask_rec.SLIM"
    config_class = SLIMConfig

    def fit(self, data, client=None) -> "SLIM":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self.

        The interactions are non-negative (the input validation rejects negative values), which
        the exact pruning of each column's candidates relies on.
        """
        W, source, seconds = run_fit(data, client, self._fit_stages)
        self._fitted(W.tocsr(), source, seconds)
        return self

    def _fit_stages(self, source, executor) -> sp.csc_matrix:
        c = self.config
        n = int(source.shape[1])
        starts, handles, _, blocks = gramian_stage(source, executor)
        executor.release(*blocks)
        gramian = executor.submit(_join_columns, handles, starts, key="slim-gramian", bigmem=True)
        executor.release(*handles)
        ranges = [(a, min(a + c.columns_per_task, n)) for a in range(0, n, c.columns_per_task)]
        parts = executor.map(slim_columns, [gramian] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges],
                             l1=c.l1, l2=c.l2, tol=c.tol, max_iter=c.max_iter, topk=c.topk, key="slim-columns")
        W = (sp.hstack(executor.gather(parts), format="csc") if parts else sp.csc_matrix((n, n), dtype=np.float32))
        executor.release(gramian, *parts)
        return W
