"""AssociationRules: item-to-item rules (support, confidence, lift), top-k per antecedent item.

Stages: row blocks → binarized (a user either has an item or not) → when X fits in one task's
memory (twice), the route from the rows of ItemKNN
(:func:`~dask_rec.models._item_item.top_k_from_rows_stage`: each antecedent's co-occurrence counts
accumulated and cut to its ``k`` best rules at once); otherwise ``reduce_gramian``: the
co-occurrence counts ``c_ij`` in column blocks, whose diagonal is the item counts ``c_i`` → one
task per column block builds the rules of its antecedent items
(:func:`dask_rec.kernels.rules.rules_block`). The rows are stacked into the sparse rule matrix R.

A user's score for item ``j`` is the sum of the metric over the rules ``i → j`` whose antecedent
``i`` the user has: ``score_j = Σ_{i ∈ user} R_ij`` (for ``confidence``, the expected number of
the user's items that "vote" for ``j``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.rules import METRICS, rules_block

from . import _item_item
from ._item_item import ItemItemModel, binary_blocks, gramian_stage, run_fit, top_k_from_rows_stage

__all__ = ["AssociationRulesConfig", "AssociationRules"]


@dataclass(frozen=True)
class AssociationRulesConfig:
    """``k`` rules per antecedent, ranked by ``metric``; rules below ``min_support`` (a share of the
    users) or ``min_confidence`` are dropped."""

    k: int = 100
    metric: str = "confidence"
    min_support: float = 0.0
    min_confidence: float = 0.0

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1; got {self.k!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {self.metric!r}")
        for name in ("min_support", "min_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {value!r}")


class AssociationRules(ItemItemModel):
    """Association rules between items, scored by summing the metric of the rules a user triggers.

    Parameters
    ----------
    config : AssociationRulesConfig, optional

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix or None
        R, row ``i`` = the top-``k`` rules ``i → j`` (value: the metric).
    """

    name = "rules"
    kind = "dask_rec.AssociationRules"
    config_class = AssociationRulesConfig

    def fit(self, data, client=None) -> "AssociationRules":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self."""
        R, source, seconds = run_fit(data, client, self._fit_stages)
        self._fitted(R, source, seconds, n_users=int(source.shape[0]))
        return self

    def _fit_stages(self, source, executor):
        c = self.config
        if _item_item.rows_route_fits(source, executor, c.k):
            return top_k_from_rows_stage(source, executor, binary_blocks(source, executor), c.k, c.metric, n_users=int(source.shape[0]),
                                         min_support=c.min_support, min_confidence=c.min_confidence)
        starts, handles, counts, blocks = gramian_stage(source, executor, binary=True)
        executor.release(*blocks)
        rows = executor.map(rules_block, handles, starts, item_counts=counts, n_users=int(source.shape[0]), k=c.k,
                            metric=c.metric, min_support=c.min_support, min_confidence=c.min_confidence,
                            key="rules-block")
        R = sp.vstack(executor.gather(rows), format="csr")
        executor.release(*rows, *handles)
        return R
