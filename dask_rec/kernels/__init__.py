"""Numeric kernels: NumPy/SciPy/numba/CHOLMOD functions that know nothing about Dask.

Each kernel works on one block (a row block of interactions, a column block of a factor's
inverse, a user block of scores). The orchestration modules one level up (``dask_rec.stages.gramian``,
``dask_rec.models.sansa.factorize``, ``dask_rec.models.sansa.invert``, ``dask_rec.serving.recommend``, ``dask_rec.serving.evaluation``)
schedule them, in process or as Dask tasks.
"""
