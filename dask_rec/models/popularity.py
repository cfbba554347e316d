"""Models from item counts: :class:`PopRec`, :class:`RandomRec`, :class:`Wilson`, :class:`UserPopRec`.

The counts are the entries per item of the training data (a store's ``item_counts``, or the
column counts of a matrix's sparsity pattern). Scores are the counts; an item with count 0 is
never recommended (it has no score), so a user may get fewer than ``k`` items (padded with −1 /
−inf per the recommend contract).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dask_rec.stages.item_counts import item_counts_of
from dask_rec.models.persistence import load_arrays, save_arrays
from dask_rec.kernels.gramian import sum_arrays
from dask_rec.kernels.scoring import popularity_order, popularity_topk_block

from .base import Recommender

__all__ = ["PopRecConfig", "PopRec", "RandomRecConfig", "RandomRec", "WilsonConfig", "Wilson",
           "UserPopRecConfig", "UserPopRec"]


@dataclass(frozen=True)
class PopRecConfig:
    """:class:`PopRec` has no hyper-parameters; the config exists for the uniform contract."""


class PopRec(Recommender):
    """Recommend the most popular items the user has not seen (ties by the lower item index).

    Parameters
    ----------
    config : PopRecConfig, optional
    """

    name = "pop"
    kind = "dask_rec.PopRec"
    config_class = PopRecConfig
    #: Whether the model recommends the user's own items (then evaluated with exclude_seen=False).
    recommends_seen = False

    def __init__(self, config: PopRecConfig | None = None) -> None:
        self.config = config if config is not None else PopRecConfig()
        if not isinstance(self.config, PopRecConfig):
            raise TypeError(f"config must be a PopRecConfig; got {type(config).__name__}")
        self.item_counts = None
        self._order = None
        self.fit_report_: dict = {}

    def fit(self, data, client=None) -> "PopRec":
        """Count each item's interactions in ``data`` (a matrix, a store or a store path).

        ``client`` is accepted for the uniform contract; counting runs in this process (a
        store already holds its counts).
        """
        import time

        t0 = time.perf_counter()
        counts, vocabulary = item_counts_of(data)
        self._set_counts(counts)
        self.item_vocabulary = vocabulary
        self.fit_report_ = {"n_items": int(counts.shape[0]), "total_seconds": round(time.perf_counter() - t0, 3)}
        return self

    def _set_counts(self, counts) -> None:
        self.item_counts = np.asarray(counts, dtype=np.int64)
        self._order = popularity_order(self.item_counts)

    @property
    def n_items(self) -> int:
        if self.item_counts is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")
        return int(self.item_counts.shape[0])

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` per user; see the contract in :mod:`dask_rec.models.base` (``n_threads`` unused)."""
        order = self._order if allowed is None else popularity_order(self.item_counts, allowed=allowed)
        return popularity_topk_block(X_block, self.item_counts, k, exclude_seen=exclude_seen, order=order)

    # ---------------------------------------------------------------- persistence
    def save(self, path, *, overwrite: bool = False) -> str:
        """Write the model to a Zarr directory (atomically): root attrs ``kind``, ``config``; ``item_counts``."""
        return save_arrays(self, path, {"item_counts": self.item_counts}, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "PopRec":
        """Load a model written by :meth:`save` (no pickle involved)."""
        from dask_rec.models.persistence import config_error

        attrs, arrays, vocabulary = load_arrays(path, cls.kind)
        try:
            model = cls(cls.config_class(**attrs["config"]))
        except Exception as exc:
            raise config_error(path, exc) from None
        counts = arrays["item_counts"]
        if counts.ndim != 1 or counts.dtype.kind not in "iuf" or (counts.size and not (counts >= 0).all()):
            from dask_rec.exceptions import ModelFileError

            raise ModelFileError(f"{path}/item_counts: expected non-negative counts; got {counts.dtype} {counts.shape}")
        model._set_counts(counts)
        model.item_vocabulary = vocabulary
        model.fit_report_ = attrs.get("fit_report", {})
        return model


@dataclass(frozen=True)
class RandomRecConfig:
    """``distribution``: ``"uniform"`` or ``"popularity"`` (probability ∝ count ** ``alpha``); ``seed``."""

    distribution: str = "uniform"
    alpha: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.distribution not in ("uniform", "popularity"):
            raise ValueError(f"distribution must be 'uniform' or 'popularity'; got {self.distribution!r}")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0; got {self.alpha!r}")


class RandomRec(PopRec):
    """Random items the user has not seen, uniform or popularity-weighted, seeded.

    Only items seen in training (count > 0) are drawn. Each user's draw is seeded by the config's
    ``seed`` and the user's history (see :func:`dask_rec.kernels.item_scores.random_topk_block`),
    so a user gets the same list in any block, on any worker.
    """

    name = "random"
    kind = "dask_rec.RandomRec"
    config_class = RandomRecConfig

    def __init__(self, config: RandomRecConfig | None = None) -> None:
        self.config = config if config is not None else RandomRecConfig()
        if not isinstance(self.config, RandomRecConfig):
            raise TypeError(f"config must be a RandomRecConfig; got {type(config).__name__}")
        self.item_counts = None
        self.fit_report_ = {}

    def _set_counts(self, counts) -> None:
        self.item_counts = np.asarray(counts, dtype=np.int64)

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        from dask_rec.kernels.item_scores import random_topk_block

        counts = self.item_counts.astype(np.float64)
        weights = (counts > 0).astype(np.float64) if self.config.distribution == "uniform" else \
            np.where(counts > 0, counts ** self.config.alpha, 0.0)
        return random_topk_block(X_block, k, weights, self.config.seed, exclude_seen=exclude_seen, allowed=allowed)



@dataclass(frozen=True)
class WilsonConfig:
    """Positives are the stored entries with value >= ``threshold``; ``confidence`` of the interval.

    A binarized store (every value 1) makes every interaction positive; with ``--keep-values``
    (ratings, say) ``threshold=4`` counts ratings of 4 and up as positive.
    """

    threshold: float = 1.0
    confidence: float = 0.95

    def __post_init__(self):
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite; got {self.threshold!r}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1); got {self.confidence!r}")


class Wilson(PopRec):
    """Items ranked by the lower bound of the Wilson interval of their share of positive interactions.

    For item ``i`` with ``n_i`` interactions of which ``p_i`` are positive (value >= threshold),
    the score is :func:`dask_rec.kernels.item_scores.wilson_lower_bound` ``(p_i, n_i)``; items
    with score 0 (no positive) are never recommended. ``item_counts`` holds the scores' ranking
    input (the bounds), ``positives`` and ``totals`` the counts.
    """

    name = "wilson"
    kind = "dask_rec.Wilson"
    config_class = WilsonConfig

    def __init__(self, config: WilsonConfig | None = None) -> None:
        self.config = config if config is not None else WilsonConfig()
        if not isinstance(self.config, WilsonConfig):
            raise TypeError(f"config must be a WilsonConfig; got {type(config).__name__}")
        self.item_counts = None
        self._order = None
        self.fit_report_ = {}

    def fit(self, data, client=None) -> "Wilson":
        """Count totals and positives per item as row-block tasks (client rules of ``SANSA.fit``)."""
        import time

        from dask_rec.kernels.item_scores import positive_counts_block, wilson_lower_bound

        t0 = time.perf_counter()
        counts = run_on_row_blocks(data, client, positive_counts_block, threshold=self.config.threshold)
        self.item_vocabulary = counts.pop("vocabulary")
        totals, positives = counts["sum"]
        self._set_counts(wilson_lower_bound(positives, totals, self.config.confidence))
        self.fit_report_ = {"n_items": int(totals.shape[0]), "total_seconds": round(time.perf_counter() - t0, 3)}
        return self

    def _set_counts(self, bounds) -> None:
        self.item_counts = np.asarray(bounds, dtype=np.float64)
        self._order = popularity_order(self.item_counts)


@dataclass(frozen=True)
class UserPopRecConfig:
    """:class:`UserPopRec` has no hyper-parameters."""


class UserPopRec(PopRec):
    """A user's own most repeated items (its row's values, largest first; needs values = counts).

    It only ever recommends seen items, so with ``exclude_seen=True`` (the contract) every list is
    empty: evaluate it with ``exclude_seen=False`` (``dask-rec evaluate`` does, see
    :attr:`recommends_seen`). Fitting only records the number of items.
    """

    name = "userpop"
    kind = "dask_rec.UserPopRec"
    config_class = UserPopRecConfig
    recommends_seen = True

    def __init__(self, config: UserPopRecConfig | None = None) -> None:
        self.config = config if config is not None else UserPopRecConfig()
        self.item_counts = None
        self._order = None
        self.fit_report_ = {}

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        from dask_rec.kernels.item_scores import own_items_topk_block

        return own_items_topk_block(X_block, k, exclude_seen=exclude_seen, allowed=allowed)


def run_on_row_blocks(data, client, fn, **kwargs) -> dict:
    """Sum ``fn(block, **kwargs)`` over the row blocks of ``data``, with ``SANSA.fit``'s client rules.

    A Client runs one task per block on its cluster; ``"local"`` starts a LocalCluster; ``None``
    uses the current client, else a LocalCluster for a store, else this process.
    """
    from ._item_item import run_fit

    def run(source, executor):
        parts = executor.map(fn, source.block_handles(executor), key="item-scores", **kwargs)
        return executor.gather(executor.tree_reduce(sum_arrays, parts, key="item-scores-sum"))

    total, source, _ = run_fit(data, client, run)
    return {"sum": total, "vocabulary": source.item_vocabulary}
