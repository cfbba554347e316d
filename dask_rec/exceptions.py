"""Warnings and errors dask_rec raises on purpose."""

import numpy as np

__all__ = ["DaskRecWarning", "InsufficientMemoryError", "ModelFileError", "NotPositiveDefiniteError"]


class DaskRecWarning(UserWarning):
    """A warning about a dask_rec input or setting (turned into an error in our test suite)."""


class InsufficientMemoryError(MemoryError):
    """The factorization needs more memory than the worker it would run on has.

    The message names the ``bigmem`` worker resource: start one worker with enough memory as
    ``dask worker --resources bigmem=1 --memory-limit ...``.
    """


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The matrix to factor is not (numerically) positive definite (raise ``l2``)."""


class ModelFileError(ValueError):
    """A saved model (or one of its files) is missing, damaged or not ours; the message names the file."""
