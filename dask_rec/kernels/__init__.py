"""Numeric kernels: NumPy/SciPy/numba/CHOLMOD functions that know nothing about Dask.

Each kernel works on one block (a row block of interactions, a column block of a factor's
inverse, a user block of scores). The orchestration modules one level up (``dask_rec.gramian``,
``dask_rec.factorize``, ``dask_rec.invert``, ``dask_rec.recommend``, ``dask_rec.evaluation``)
schedule them, in process or as Dask tasks.
"""
