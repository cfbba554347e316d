"""ALS: matrix factorization for implicit feedback (Hu, Koren & Volinsky 2008), fitted on Dask.

Training alternates one task per user block and one per item block (see
:mod:`dask_rec.models.als_fit`); the kernels are in :mod:`dask_rec.kernels.als`. Scoring folds
users in: a block task solves each user's factors from its history against the trained item
factors (the exact least-squares solve, so a user's list depends only on its history, as in
strong-generalization evaluation), then ranks ``x_u · Y^T``.

Confidence is ``1 + alpha * value`` for every stored value ``> 0``. implicit's ALS (0.7) takes the
confidence as ``alpha * value``: on binary data, our ``alpha`` equals implicit's minus one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.als import fold_in, fold_in_operator
from dask_rec.kernels.factors import factor_gramian, score_topk

from .base import Recommender

__all__ = ["ALSConfig", "ALS", "ALSScorer"]

SOLVERS = ("cg", "cholesky")
#: An in-memory matrix is split into at least this many user blocks (a store keeps its own blocks).
MIN_BLOCKS = 8


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class ALSConfig:
    """Hyper-parameters of :class:`ALS`.

    Attributes
    ----------
    factors : int
        Latent dimension ``k``.
    regularization : float
        ``lam`` of the L2 penalty on both factor matrices (not scaled by activity), > 0.
    alpha : float
        Confidence ``1 + alpha * value`` of a stored value (>= 0).
    iterations : int
        Alternations (users then items), >= 0.
    seed : int
        Seed of the initial factors (uniform in [0, 0.01)).
    solver : {"cg", "cholesky"}
        ``cg_steps`` conjugate-gradient steps per row warm-started from the previous iteration,
        or the exact Cholesky solve.
    cg_steps : int
        CG steps per row and half-iteration (>= 1).
    """

    factors: int = 64
    regularization: float = 1.0
    alpha: float = 10.0
    iterations: int = 15
    seed: int = 0
    solver: str = "cg"
    cg_steps: int = 3

    def __post_init__(self):
        if not _is_int(self.factors) or self.factors < 1:
            raise ValueError(f"factors must be an integer >= 1; got {self.factors!r}")
        if not _is_int(self.iterations) or self.iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0; got {self.iterations!r}")
        if not _is_int(self.cg_steps) or self.cg_steps < 1:
            raise ValueError(f"cg_steps must be an integer >= 1; got {self.cg_steps!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed!r}")
        if not np.isfinite(self.regularization) or self.regularization <= 0:
            raise ValueError(f"regularization must be a finite number > 0; got {self.regularization!r}")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0; got {self.alpha!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {self.solver!r}")


class ALSScorer:
    """What the scoring tasks receive: the item factors, their Gramian and the config (no user factors).

    The fold-in operator ``W = Y (Y^T Y + lam I)^-1`` is computed where it is first used (on the
    worker), never pickled.
    """

    def __init__(self, item_factors, config: ALSConfig) -> None:
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.config = config
        self.gramian = factor_gramian(self.item_factors)
        self._operator = None

    def __getstate__(self):
        return {**self.__dict__, "_operator": None}

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    def fold_in(self, X_block) -> np.ndarray:
        """Users' factors solved exactly from their histories against the item factors."""
        c = self.config
        if self._operator is None:
            self._operator = fold_in_operator(self.item_factors, self.gramian, c.regularization)
        return fold_in(X_block, self.item_factors, self.gramian, c.regularization, c.alpha, W=self._operator)

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of ``fold_in(x) · Y^T``; see the contract in :mod:`dask_rec.models.base`.

        A user without a stored value > 0 has no candidates (padding only).
        """
        from dask_rec.kernels.scoring import run_chunks

        X = sp.csr_matrix(X_block)
        b = X.shape[0]
        ids = np.full((b, k), -1, np.int64)
        top = np.full((b, k), -np.inf, np.float32)
        if not (b and k):
            return ids, top

        def run(a: int, z: int) -> None:
            rows = X[a:z]
            U = self.fold_in(rows)
            empty = np.diff(sp.csr_matrix(rows > 0).indptr) == 0
            ids[a:z], top[a:z] = score_topk(U, self.item_factors, k, exclude=rows if exclude_seen else None,
                                            allowed=allowed, empty=empty)

        run_chunks(run, b, n_threads)
        return ids, top


class ALS(Recommender):
    """Implicit-feedback matrix factorization by alternating least squares.

    Parameters
    ----------
    config : ALSConfig, optional

    Attributes
    ----------
    item_factors_ : numpy.ndarray of float32, shape (n_items, factors)
    user_factors_ : numpy.ndarray of float32, shape (n_users, factors), or None
        The training users' factors, kept when fitted with ``keep_user_factors=True`` (scoring
        folds users in from their histories instead).
    fit_report_ : dict
        ``objective`` after each iteration, block counts and seconds.
    """

    name = "als"
    kind = "dask_rec.ALS"

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config if config is not None else ALSConfig()
        if not isinstance(self.config, ALSConfig):
            raise TypeError(f"config must be an ALSConfig; got {type(config).__name__}")
        self.item_factors_ = None
        self.user_factors_ = None
        self._scorer = None
        self.fit_report_: dict = {}

    def fit(self, data, client=None, *, keep_user_factors: bool = False) -> "ALS":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self.

        The item factors are gathered into the model at the end; the training users' factors only
        with ``keep_user_factors`` (scoring never needs them: it folds users in).

        A matrix is split into row blocks of about ``dask_rec.blocks.target-nnz`` interactions,
        and at least :data:`MIN_BLOCKS` of them; item blocks are as many, balanced on the item
        counts. The blocks do not depend on the workers, so neither do the factors.
        """
        from dask_rec.data.blocks import as_row_block_source, default_rows_per_block
        from dask_rec.cluster import fit_executor
        from dask_rec.stages.item_counts import item_counts_of

        from .als_fit import run_als

        source = as_row_block_source(data)
        if source.store is None:  # at least MIN_BLOCKS tasks per half-iteration, whatever the workers
            rows = min(default_rows_per_block(*source.shape[:1], source.nnz), -(-source.shape[0] // MIN_BLOCKS))
            source = as_row_block_source(source.matrix, rows_per_block=max(1, rows))
        counts, _ = item_counts_of(source.store if source.store is not None else source.matrix)
        t0 = time.perf_counter()
        with fit_executor(client, source) as executor:
            result = run_als(source, executor, self.config, counts, keep_user_factors)
        self._set_factors(result["item_factors"], result["user_factors"])
        self.item_vocabulary = source.item_vocabulary
        self.fit_report_ = {"n_items": int(source.shape[1]), "n_users": int(source.shape[0]),
                            "objective": result["objective"], "n_user_blocks": result["n_user_blocks"],
                            "n_item_blocks": result["n_item_blocks"],
                            "total_seconds": round(time.perf_counter() - t0, 3)}
        return self

    def _set_factors(self, item_factors, user_factors=None) -> None:
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.user_factors_ = None if user_factors is None else np.ascontiguousarray(user_factors, dtype=np.float32)
        self._scorer = ALSScorer(self.item_factors_, self.config)

    @property
    def n_items(self) -> int:
        if self.item_factors_ is None:
            raise RuntimeError("ALS is not fitted: call fit() first")
        return int(self.item_factors_.shape[0])

    def scorer(self) -> ALSScorer:
        if self._scorer is None:
            raise RuntimeError("ALS is not fitted: call fit() first")
        return self._scorer

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` per user, folded in from ``X_block``; see :meth:`ALSScorer.topk_block`."""
        return self.scorer().topk_block(X_block, k, exclude_seen=exclude_seen, allowed=allowed, n_threads=n_threads)

    def similar_items(self, items, k: int = 10):
        """Top ``k`` items by cosine of the item factors (the item itself excluded)."""
        single = np.ndim(items) == 0
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        n = self.n_items
        if items.size and (items.min() < 0 or items.max() >= n):
            raise ValueError(f"items must be in [0, {n}); got {items.min()}..{items.max()}")
        Y = self.item_factors_
        norms = np.linalg.norm(Y, axis=1)
        unit = Y / np.where(norms > 0, norms, 1.0)[:, None]
        own = sp.csr_matrix((np.ones(items.size, np.float32), (np.arange(items.size), items)), shape=(items.size, n))
        ids, scores = score_topk(unit[items], unit, k, exclude=own, empty=norms[items] == 0)
        return (ids[0], scores[0]) if single else (ids, scores)

    def save(self, path, *, overwrite: bool = False) -> str:
        """Zarr directory (atomic): root attrs kind, config, fit report; arrays ``item_factors``, ``user_factors``."""
        from dask_rec.models.persistence import save_arrays

        arrays = {"item_factors": self.item_factors_}
        if self.user_factors_ is not None:
            arrays["user_factors"] = self.user_factors_
        return save_arrays(self, path, arrays, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "ALS":
        """Load a model written by :meth:`save` (no pickle involved)."""
        from pathlib import Path

        from dask_rec.models.persistence import load_arrays

        has_users = (Path(path) / "user_factors").exists()
        names = ("item_factors", "user_factors") if has_users else ("item_factors",)
        attrs, arrays, vocabulary = load_arrays(path, cls.kind, names=names)
        model = cls(ALSConfig(**attrs["config"]))
        model._set_factors(arrays["item_factors"], arrays.get("user_factors"))
        model.item_vocabulary = vocabulary
        model.fit_report_ = attrs.get("fit_report", {})
        return model
