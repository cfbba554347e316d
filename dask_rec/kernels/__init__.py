"""Numeric kernels: NumPy/SciPy/pandas/numba/CHOLMOD functions that know nothing about Dask.

Each kernel works on one block (a partition of a log, a row block of interactions, a column
block of a factor's inverse, a user block of scores) and imports nothing of dask_rec beyond other
kernels and the package-wide modules (``config``, ``exceptions``). The layers above schedule them,
in process or as Dask tasks: ``dask_rec.data.ingestion``, ``dask_rec.stages.gramian``,
``dask_rec.models.sansa.factorize`` and ``invert``, ``dask_rec.serving.recommend`` and
``evaluation``, and the models in ``dask_rec.models``.
"""
