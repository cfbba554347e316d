"""Models from item counts: the most popular items (:class:`PopRec`).

The counts are the entries per item of the training data (a store's ``item_counts``, or the
column counts of a matrix's sparsity pattern). Scores are the counts; an item with count 0 is
never recommended (it has no score), so a user may get fewer than ``k`` items (padded with −1 /
−inf per the recommend contract).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.scoring import popularity_order, popularity_topk_block

from .base import Recommender

__all__ = ["PopRecConfig", "PopRec", "item_counts_of"]


def item_counts_of(data) -> tuple[np.ndarray, object]:
    """``(counts int64 per item, item vocabulary or None)`` of a matrix, a store or a store path."""
    import os

    if isinstance(data, (str, os.PathLike)):
        from dask_rec.store import open_store

        data = open_store(data)
    if hasattr(data, "read_block") and hasattr(data, "item_counts"):
        return np.asarray(data.item_counts, dtype=np.int64), data.item_vocabulary
    from dask_rec.validation import check_interactions

    X = sp.csr_matrix(check_interactions(data, "data"))
    X.eliminate_zeros()
    return np.bincount(X.indices, minlength=X.shape[1]).astype(np.int64), None


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
        attrs, arrays, vocabulary = load_arrays(path, cls.kind)
        model = cls(PopRecConfig(**attrs["config"]))
        model._set_counts(arrays["item_counts"])
        model.item_vocabulary = vocabulary
        model.fit_report_ = attrs.get("fit_report", {})
        return model


def save_arrays(model, path, arrays: dict, *, overwrite: bool = False) -> str:
    """Write ``model``'s kind, config (a dataclass, as JSON) and dense ``arrays`` to a Zarr directory."""
    import zarr

    from dask_rec import __version__
    from dask_rec.store import atomic_directory

    if any(v is None for v in arrays.values()):
        raise ValueError(f"this {type(model).__name__} is not fitted: call fit() first")
    with atomic_directory(path, overwrite, marker="zarr.json") as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({
            "format_version": 1, "kind": model.kind, "dask_rec_version": __version__,
            "config": json.loads(json.dumps(asdict(model.config))), "n_items": int(model.n_items),
            "fit_report": json.loads(json.dumps(model.fit_report_, default=str)),
        })
        for name, values in arrays.items():
            values = np.asarray(values)
            arr = root.create_array(name, shape=values.shape, dtype=values.dtype)
            if values.size:
                arr[:] = values
        if model.item_vocabulary is not None:
            model.item_vocabulary.save(tmp / "items.parquet")
    return str(path)


def load_arrays(path, kind: str):
    """``(root attrs, {name: array}, item vocabulary or None)`` of a directory written by :func:`save_arrays`."""
    from pathlib import Path

    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model at {str(path)!r}")
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("kind") != kind:
        raise ValueError(f"{str(path)!r} holds a {attrs.get('kind')!r} model, not {kind!r}")
    arrays = {name: arr[:] for name, arr in root.arrays()}
    vocabulary = None
    if (path / "items.parquet").exists():
        from dask_rec.vocabulary import Vocabulary

        vocabulary = Vocabulary.load(path / "items.parquet")
    return attrs, arrays, vocabulary
