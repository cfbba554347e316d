"""Recommender models of dask_rec beyond SANSA, all implementing :class:`~dask_rec.models.base.Recommender`.

Each model family lives in its own module here; its numeric kernels live in
:mod:`dask_rec.kernels` (no Dask), and its stages use the shared ones (item counts, the Gramian,
user-block scoring in :mod:`dask_rec.serving.recommend` and :mod:`dask_rec.serving.evaluation`).
"""

from .base import Recommender

__all__ = ["Recommender"]
