"""EASE: the exact, dense closed form ``B = I − P · diag(1/diag(P))``, ``P = (G + λI)⁻¹``.

Stages: row blocks → ``reduce_gramian`` (the same sparse Gramian stage as SANSA's, in column
blocks, summed on the big-memory worker) → one task on the big-memory worker assembles the dense
``G + λI`` and solves it in place (:func:`dask_rec.kernels.ease.ease_weights`) → ``B`` comes back
to the model. Before any of it runs, the fit checks that the dense ``n × n`` array fits in the
big-memory worker's memory limit (this machine's available memory in process) and otherwise
stops with one line naming what it would need (the sparse Gramian blocks, alive during the solve,
come on top; on a cluster the client then holds ``B`` too). Scores are ``x · B``, computed for
chunks of users of each block (:data:`SCORE_ROWS` rows at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dask_rec.kernels.ease import dense_bytes, ease_scores, ease_weights, solve_bytes
from dask_rec.kernels.topk import top_k_of_scores

from ._item_item import gramian_stage, run_fit
from .base import Recommender
from dask_rec.models.persistence import load_arrays, save_arrays

__all__ = ["EASEConfig", "EASE", "SCORE_ROWS"]

#: Users scored at a time inside a block (a dense SCORE_ROWS × n_items float32 buffer).
SCORE_ROWS = 256


@dataclass(frozen=True)
class EASEConfig:
    """``l2``: λ > 0 added to the Gramian's diagonal; ``dtype``: precision of the dense solve and of ``B``."""

    l2: float = 200.0
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or not np.isfinite(self.l2) \
                or self.l2 <= 0:
            raise ValueError(f"l2 must be a finite number > 0; got {self.l2!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019), dense and exact.

    Parameters
    ----------
    config : EASEConfig, optional

    Attributes
    ----------
    weights_ : numpy.ndarray or None
        ``B``, ``n_items × n_items``, zero diagonal.
    """

    name = "ease"
    kind = "dask_rec.EASE"

    def __init__(self, config: EASEConfig | None = None) -> None:
        self.config = config if config is not None else EASEConfig()
        if not isinstance(self.config, EASEConfig):
            raise TypeError(f"config must be an EASEConfig; got {type(config).__name__}")
        self.weights_ = None
        self.fit_report_: dict = {}

    def fit(self, data, client=None) -> "EASE":
        """Train on a matrix, a store or a store path (client rules of ``SANSA.fit``); returns self.

        Raises
        ------
        InsufficientMemoryError
            Before any work, when the dense solve does not fit in the big-memory worker.
        """
        B, source, seconds = run_fit(data, client, self._fit_stages)
        self.weights_ = B
        self.item_vocabulary = source.item_vocabulary
        self.fit_report_ = {"n_items": int(B.shape[0]), "dtype": str(B.dtype), "total_seconds": seconds}
        return self

    def _fit_stages(self, source, executor) -> np.ndarray:
        from dask_rec.memory_plan import gib, memory_limits, require

        n = int(source.shape[1])
        dtype = self.config.dtype
        need = solve_bytes(n, dtype)
        knob = ("use a big-memory worker with more memory, dtype float32" if dtype == "float64" else
                "use a big-memory worker with more memory") + ", or SANSA / SLIM (sparse) for this catalog"
        require("ease", need, memory_limits(executor).bigmem,
                f"the dense {n:,} x {n:,} {dtype} solve ({gib(dense_bytes(n, dtype))} for B)", knob)
        starts, handles, _, blocks = gramian_stage(source, executor)
        executor.release(*blocks)
        solved = executor.submit(ease_weights, handles, starts, n, float(self.config.l2), dtype, key="ease-solve",
                                 bigmem=True)
        B = executor.gather(solved)
        executor.release(solved, *handles)
        return B

    @property
    def n_items(self) -> int:
        if self.weights_ is None:
            raise RuntimeError("EASE is not fitted: call fit() first")
        return int(self.weights_.shape[0])

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of ``x · B`` per user, :data:`SCORE_ROWS` users at a time; see :mod:`dask_rec.models.base`.

        Every finite score is a candidate (B is dense, so every unseen item has a score).
        """
        import scipy.sparse as sp

        X = sp.csr_matrix(X_block)
        parts = []
        for a in range(0, X.shape[0], SCORE_ROWS):
            rows = X[a:a + SCORE_ROWS]
            parts.append(top_k_of_scores(ease_scores(rows, self.weights_), k, exclude=rows if exclude_seen else None,
                                    allowed=allowed))
        if not parts:
            return top_k_of_scores(np.zeros((0, self.n_items), np.float32), k)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def similar_items(self, items, k: int = 10):
        """Top ``k`` of the rows of B for ``items`` (how much each item predicts the others; itself excluded)."""
        single = np.ndim(items) == 0
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"items must be in [0, {self.n_items}); got {items.min()}..{items.max()}")
        import scipy.sparse as sp

        itself = sp.csr_matrix((np.ones(items.size), (np.arange(items.size), items)), shape=(items.size, self.n_items))
        ids, scores = top_k_of_scores(self.weights_[items], k, exclude=itself)
        return (ids[0], scores[0]) if single else (ids, scores)

    def save(self, path, *, overwrite: bool = False) -> str:
        """Zarr directory (written atomically): root attrs kind, config; the dense array ``B``."""
        return save_arrays(self, path, {"B": self.weights_}, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "EASE":
        """Load a model written by :meth:`save` (no pickle involved)."""
        attrs, arrays, vocabulary = load_arrays(path, cls.kind, names=("B",))
        n = attrs.get("n_items")
        if arrays["B"].ndim != 2 or arrays["B"].shape[0] != arrays["B"].shape[1] or (
                isinstance(n, int) and arrays["B"].shape[0] != n):
            from dask_rec.exceptions import ModelFileError

            raise ModelFileError(f"{path}/B: shape {arrays['B'].shape} is not that of a model of {n} items")
        model = cls(EASEConfig(**attrs["config"]))
        model.weights_ = np.ascontiguousarray(arrays["B"])
        model.item_vocabulary = vocabulary
        model.fit_report_ = attrs.get("fit_report", {})
        return model
