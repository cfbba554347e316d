"""Saving and loading models as Zarr directories: no pickle, written atomically.

Layout of a model directory::

    model.zarr/
      zarr.json            root attrs: format_version, dask_rec_version, config (JSON), n_items, fit_report
      W1/                  anndata-compatible csr_matrix group (indptr int64, indices, data float32)
      W2/                  same
      items.parquet        item vocabulary (original IDs in index order), when trained from a store

The directory is built beside the target and renamed into place, so a crash never leaves a
partial model at ``path`` and an existing model is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["save_model", "load_model", "write_csr_group", "read_csr_group", "MODEL_FORMAT_VERSION"]

MODEL_FORMAT_VERSION = 1


def write_csr_group(parent, name: str, matrix: sp.csr_matrix, *, rows_per_chunk: int | None = None) -> None:
    """Write ``matrix`` as an anndata-compatible ``csr_matrix`` group ``name`` under ``parent``."""
    matrix = sp.csr_matrix(matrix)
    group = parent.create_group(name)
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": list(matrix.shape)})
    n_rows = matrix.shape[0]
    rows = rows_per_chunk or max(1, n_rows // 64 or 1)
    indptr = matrix.indptr.astype(np.int64)
    index_dtype = np.int32 if matrix.shape[1] < 2**31 else np.int64
    nnz_chunk = max(1, int(np.ceil(max(matrix.nnz, 1) / max(1, int(np.ceil(n_rows / rows))))))
    for key, values, chunk in (
        ("indptr", indptr, max(1, min(len(indptr), rows + 1))),
        ("indices", matrix.indices.astype(index_dtype), nnz_chunk),
        ("data", matrix.data.astype(np.float32), nnz_chunk),
    ):
        arr = group.create_array(key, shape=values.shape, dtype=values.dtype, chunks=(chunk,))
        if values.size:
            arr[:] = values


def read_csr_group(group) -> sp.csr_matrix:
    """Read a ``csr_matrix`` group written by :func:`write_csr_group` (or anndata)."""
    attrs = dict(group.attrs)
    if attrs.get("encoding-type") != "csr_matrix":
        raise ValueError(f"{group.path!r} is not a csr_matrix group (encoding-type={attrs.get('encoding-type')!r})")
    shape = tuple(attrs["shape"])
    return sp.csr_matrix((group["data"][:], group["indices"][:], group["indptr"][:]), shape=shape)


def save_model(model, path, *, overwrite: bool = False) -> str:
    """Write ``model`` (a fitted :class:`~dask_rec.SANSA`) to the Zarr directory ``path``."""
    import zarr

    from . import __version__
    from .config import config_to_dict

    on_cluster = model._weights[0] is None and model._weights_handle is not None
    if not on_cluster:
        model._require_weights()
    from .store import atomic_directory

    with atomic_directory(path, overwrite, marker="zarr.json") as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({
            "format_version": MODEL_FORMAT_VERSION,
            "kind": "dask_rec.SANSA",
            "dask_rec_version": __version__,
            "config": config_to_dict(model.config),
            "n_items": int(model.n_items),
            "fit_report": json.loads(json.dumps(model.fit_report_, default=_jsonable)),
        })
        if on_cluster:  # the workers write the weights; they never travel through this process
            model._client.submit(_write_weights, model._weights_handle, str(tmp), pure=False).result()
        else:
            _write_weights(model.weights, str(tmp))
        if model.item_vocabulary is not None:
            model.item_vocabulary.save(tmp / "items.parquet")
    return str(path)


def _write_weights(weights, path: str) -> None:
    import zarr

    root = zarr.open_group(path, mode="a", zarr_format=3)
    for name, matrix in zip(("W1", "W2"), weights):
        write_csr_group(root, name, matrix)


def load_model(path):
    """Load a model written by :func:`save_model`."""
    import zarr

    from .config import config_from_dict
    from .model import SANSA

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model at {str(path)!r}")
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if attrs.get("kind") != "dask_rec.SANSA":
        raise ValueError(f"{str(path)!r} is not a dask_rec model directory")
    if attrs.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"model format version {attrs['format_version']} is newer than this dask_rec understands "
            f"({MODEL_FORMAT_VERSION}); upgrade dask_rec"
        )
    model = SANSA(config_from_dict(attrs["config"]))
    model.load_weights((read_csr_group(root["W1"]), read_csr_group(root["W2"])))
    model.fit_report_ = attrs.get("fit_report", {})
    if (path / "items.parquet").exists():
        from .vocabulary import Vocabulary

        model.item_vocabulary = Vocabulary.load(path / "items.parquet")
    return model


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
