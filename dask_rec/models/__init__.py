"""The recommender models: SANSA (:mod:`dask_rec.models.sansa`) and the models compared with it,
all on one contract (:class:`~dask_rec.models.base.Recommender`; SANSA has the same methods and
passes the same conformance tests).

Each model family lives in its own module or subpackage here; its numeric kernels live in
:mod:`dask_rec.kernels` (no Dask), and its stages use the shared ones (:mod:`dask_rec.stages`:
item counts, the Gramian, user blocks; user-block scoring in :mod:`dask_rec.serving.recommend`
and :mod:`dask_rec.serving.evaluation`). :mod:`dask_rec.models.registry` names them for the CLI
and :mod:`dask_rec.models.persistence` holds the checked readers and writers of their files.
"""

from .base import Recommender

__all__ = ["Recommender"]
