"""dask_rec's tunables as ``dask.config`` keys under ``dask_rec.``, with defaults from ``dask_rec.yaml``.

Importing this module registers the defaults with ``dask.config``; :func:`get` also falls back to
them directly, so a key is always found even when a ``dask.config.set`` context that began before
the registration has since removed it.
"""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

__all__ = ["get", "DEFAULTS"]

with open(Path(__file__).with_name("dask_rec.yaml")) as f:
    DEFAULTS: dict = yaml.safe_load(f)

dask.config.update_defaults(DEFAULTS)

_MISSING = object()


def _default(key: str):
    node = DEFAULTS["dask_rec"]
    for part in key.split("."):
        node = node[part]
    return node


def get(key: str, value=None):
    """``value`` if it is not None, else the config value of ``dask_rec.<key>`` (or its default)."""
    if value is not None:
        return value
    found = dask.config.get(f"dask_rec.{key}", default=_MISSING)
    return _default(key) if found is _MISSING else found
