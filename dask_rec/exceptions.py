"""Warnings and errors dask_rec raises on purpose."""

__all__ = ["DaskRecWarning"]


class DaskRecWarning(UserWarning):
    """A warning about a dask_rec input or setting (turned into an error in our test suite)."""
