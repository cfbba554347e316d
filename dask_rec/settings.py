"""dask_rec's tunables as ``dask.config`` keys under ``dask_rec.``, with defaults from ``dask_rec.yaml``.

Importing this module registers the defaults; call sites resolve a parameter left as ``None``
with ``dask.config.get("dask_rec....")``.
"""

from __future__ import annotations

from pathlib import Path

import dask.config
import yaml

__all__ = ["get"]

_DEFAULTS = Path(__file__).with_name("dask_rec.yaml")

with open(_DEFAULTS) as f:
    dask.config.update_defaults(yaml.safe_load(f))


def get(key: str, value=None):
    """``value`` if it is not None, else the config value of ``dask_rec.<key>``."""
    return value if value is not None else dask.config.get(f"dask_rec.{key}")
