"""Model directories: the checked readers and writers every model's ``save``/``load`` is built from.

No pickle, written atomically, checked on load. Layout of a SANSA model directory (written by
:meth:`dask_rec.SANSA.save`; the other models keep the same root attrs and their own arrays)::

    model.zarr/
      zarr.json            root attrs: format_version, kind, dask_rec_version, config (JSON), n_items, fit_report
      W1/                  anndata-compatible csr_matrix group (indptr int64, indices, data float32)
      W2/                  same
      items.parquet        item vocabulary (original IDs in index order), when trained from a store

The directory is built beside the target and renamed into place, so a crash never leaves a
partial model at ``path`` and an existing model is replaced only once the new one is complete
(and only by a model: see :func:`dask_rec.data.atomic.atomic_directory`).

Integrity
---------
Every array is written with all its chunks (``write_empty_chunks``) and the CRC-32 of its
values in its attrs (``crc32``). Loading checks, for every model kind that uses
:func:`write_array` / :func:`read_array` and :func:`read_csr_group`: the root ``zarr.json``
parses and names a dask_rec model, every chunk file is present and decodes, each array's
CRC-32 matches, and a CSR group is well formed (shape, ``indptr`` starting at 0, non-decreasing
and ending at ``nnz``, indices inside ``[0, n_columns)``, finite data). Any failure is one
:class:`~dask_rec.exceptions.ModelFileError` line naming the file. So a damaged model is refused
at load and the numba kernels never see out-of-range indices. (Arrays saved before checksums
existed load without the CRC check, but with the structural checks.)
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dask_rec.exceptions import ModelFileError
from dask_rec.jsonable import to_jsonable


__all__ = ["write_csr_group", "read_csr_group", "write_array", "read_array",
           "open_model_root", "open_member", "read_item_vocabulary", "item_vocabulary_attrs", "save_arrays", "load_arrays",
           "MODEL_FORMAT_VERSION"]

MODEL_FORMAT_VERSION = 1


def _crc32(values: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


def write_array(parent, name: str, values, *, chunk: int | None = None):
    """Write ``values`` as array ``name`` under ``parent``: every chunk stored, its CRC-32 in attrs ``crc32``."""
    values = np.ascontiguousarray(values)
    kwargs = {"chunks": (max(1, min(int(chunk), values.shape[0])),)} if chunk and values.ndim == 1 else {}
    arr = parent.create_array(name, shape=values.shape, dtype=values.dtype, config={"write_empty_chunks": True},
                              **kwargs)
    if values.size:
        arr[:] = values
    arr.attrs["crc32"] = _crc32(values)
    return arr


def _where(node) -> str:
    root = getattr(node.store, "root", None)
    return str(Path(root) / node.path) if root is not None else node.path


def read_array(parent, name: str) -> np.ndarray:
    """Array ``name`` of ``parent``, checked: present, every chunk there and decodable, CRC-32 equal."""
    where = f"{_where(parent)}/{name}".replace("//", "/")
    arr = open_member(parent, name)
    if arr.nchunks_initialized < arr.nchunks and "crc32" in arr.attrs:
        missing = _missing_chunk(arr)
        raise ModelFileError(f"{where}/{missing}: chunk file missing; the model is incomplete (save it again)")
    try:
        values = arr[...]
    except Exception as exc:  # codec errors (truncated or garbled chunk) come in many types
        raise ModelFileError(f"{where}: a chunk cannot be decoded ({_one_line(exc)}); the file is damaged") from None
    stored = arr.attrs.get("crc32")
    if stored is not None and int(stored) != _crc32(values):
        raise ModelFileError(f"{where}: checksum mismatch (CRC-32 {_crc32(values)} != {stored}); the file is damaged")
    return values


def _missing_chunk(arr) -> str:
    from itertools import product

    for coords in product(*(range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks))):
        key = arr.metadata.encode_chunk_key(coords)
        root = getattr(arr.store, "root", None)
        if root is None or not (Path(root) / arr.path / key).exists():
            return key
    return "?"  # pragma: no cover


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def write_csr_group(parent, name: str, matrix: sp.csr_matrix, *, rows_per_chunk: int | None = None) -> None:
    """Write ``matrix`` as an anndata-compatible ``csr_matrix`` group ``name`` under ``parent``."""
    matrix = sp.csr_matrix(matrix)
    group = parent.create_group(name)
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": list(matrix.shape)})
    n_rows = matrix.shape[0]
    rows = rows_per_chunk or max(1, n_rows // 64 or 1)
    index_dtype = np.int32 if matrix.shape[1] < 2**31 else np.int64
    nnz_chunk = max(1, int(np.ceil(max(matrix.nnz, 1) / max(1, int(np.ceil(n_rows / rows))))))
    write_array(group, "indptr", matrix.indptr.astype(np.int64), chunk=rows + 1)
    write_array(group, "indices", matrix.indices.astype(index_dtype), chunk=nnz_chunk)
    write_array(group, "data", matrix.data.astype(np.float32), chunk=nnz_chunk)


def read_csr_group(group) -> sp.csr_matrix:
    """Read and check a ``csr_matrix`` group written by :func:`write_csr_group` (or anndata).

    Raises :class:`~dask_rec.exceptions.ModelFileError` naming the group when it is not a CSR
    group or is malformed: see "Integrity" in the module docstring.
    """
    where = _where(group)
    attrs = dict(group.attrs)
    if attrs.get("encoding-type") != "csr_matrix":
        raise ModelFileError(f"{where}: not a csr_matrix group (encoding-type={attrs.get('encoding-type')!r})")
    shape = attrs.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ModelFileError(f"{where}/zarr.json: shape must be two non-negative integers; got {shape!r}")
    indptr, indices, data = (read_array(group, key) for key in ("indptr", "indices", "data"))
    n_rows, n_cols = shape
    if indptr.ndim != 1 or indptr.shape[0] != n_rows + 1 or indptr.dtype.kind not in "iu":
        raise ModelFileError(f"{where}/indptr: expected {n_rows + 1} integer offsets; got {indptr.shape} {indptr.dtype}")
    nnz = indices.shape[0]
    if indices.ndim != 1 or data.shape != indices.shape or indices.dtype.kind not in "iu":
        raise ModelFileError(f"{where}: indices {indices.shape} {indices.dtype} and data {data.shape} do not match")
    if indptr[0] != 0 or indptr[-1] != nnz or (n_rows and np.any(indptr[1:] < indptr[:-1])):
        raise ModelFileError(f"{where}/indptr: offsets must start at 0, never decrease and end at nnz={nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise ModelFileError(f"{where}/indices: values must lie in [0, {n_cols}); got {indices.min()}..{indices.max()}")
    if data.dtype.kind != "f" or not np.all(np.isfinite(data)):
        raise ModelFileError(f"{where}/data: values must be finite floats")
    index_dtype = np.int32 if n_cols < 2**31 else np.int64
    matrix = sp.csr_matrix((data, indices.astype(index_dtype, copy=False), indptr.astype(index_dtype, copy=False)),
                           shape=(n_rows, n_cols))
    return matrix


def open_model_root(path, kind: str | None = None):
    """``(zarr group, root attrs)`` of the model directory ``path``, with one-line errors naming the file.

    ``kind``: the root attr ``kind`` required (any ``dask_rec.`` model kind when None).
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model at {str(path)!r}")
    meta = path / "zarr.json"
    if not path.is_dir() or not meta.is_file():
        raise ModelFileError(f"{str(path)!r} is not a dask_rec model directory (no zarr.json)")
    try:
        doc = json.loads(meta.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{meta}: not valid JSON ({_one_line(exc)})") from None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    found = attrs.get("kind") if isinstance(attrs, dict) else None
    if not isinstance(found, str) or not found.startswith("dask_rec.") or found == "dask_rec.interactions":
        what = "an interaction store" if found == "dask_rec.interactions" else f"kind={found!r}"
        raise ModelFileError(f"{str(path)!r} is not a dask_rec model directory ({what}; {meta})")
    if kind is not None and found != kind:
        raise ModelFileError(f"{str(path)!r} holds a {found!r} model, not {kind!r}")
    version = attrs.get("format_version", 0)
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{meta}: model format version {version!r} is not one this dask_rec reads "
                             f"(up to {MODEL_FORMAT_VERSION}); upgrade dask_rec")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise ModelFileError(f"{meta}: not a Zarr group ({_one_line(exc)})") from None
    return root, attrs


def open_member(parent, name: str):
    """Group or array ``name`` of ``parent``; a one-line :class:`ModelFileError` when missing or unreadable."""
    try:
        return parent[name]
    except Exception as exc:  # missing, or metadata zarr cannot parse (many exception types)
        raise ModelFileError(f"{_where(parent)}/{name}: missing or unreadable ({_one_line(exc)})".replace("//", "/")) from None


def item_vocabulary_attrs(model) -> dict:
    """Root attrs to save with ``model``: whether an ``items.parquet`` belongs to it (so its loss is noticed)."""
    return {"item_vocabulary": model.item_vocabulary is not None}


def read_item_vocabulary(path, n_items: int | None = None, attrs: dict | None = None):
    """The item vocabulary ``path/items.parquet`` (None when absent), a one-line error when damaged,
    when it does not hold ``n_items`` IDs, or when root ``attrs`` say it was saved but it is gone."""
    from dask_rec.data.vocabulary import Vocabulary

    file = Path(path) / "items.parquet"
    if not file.exists():
        if (attrs or {}).get("item_vocabulary"):
            raise ModelFileError(f"{file}: missing; the model was saved with its item IDs")
        return None
    try:
        vocabulary = Vocabulary.load(file)
    except Exception as exc:
        raise ModelFileError(f"{file}: unreadable item vocabulary ({_one_line(exc)})") from None
    if n_items is not None and len(vocabulary) != n_items:
        raise ModelFileError(f"{file}: {len(vocabulary)} item IDs for a model of {n_items} items")
    return vocabulary


def config_error(path, exc: BaseException) -> ModelFileError:
    """The error for a model whose stored ``config`` does not build its config class."""
    return ModelFileError(f"{Path(path) / 'zarr.json'}: the stored config is invalid ({_one_line(exc)})")


# ---------------------------------------------------------------------------------------------
# models saved as dense arrays (the count baselines, EASE, ALS)
# ---------------------------------------------------------------------------------------------

def save_arrays(model, path, arrays: dict, *, overwrite: bool = False) -> str:
    """Write ``model``'s kind, config (a dataclass, as JSON) and dense ``arrays`` to a Zarr directory."""
    import zarr

    from dask_rec import __version__
    from dask_rec.data.atomic import atomic_directory

    if any(v is None for v in arrays.values()):
        raise ValueError(f"this {type(model).__name__} is not fitted: call fit() first")
    with atomic_directory(path, overwrite, marker="zarr.json") as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({
            "format_version": 1, "kind": model.kind, "dask_rec_version": __version__,
            "config": json.loads(json.dumps(asdict(model.config))), "n_items": int(model.n_items),
            "fit_report": to_jsonable(model.fit_report_),
            **item_vocabulary_attrs(model),
        })
        for name, values in arrays.items():
            write_array(root, name, np.asarray(values))
        if model.item_vocabulary is not None:
            model.item_vocabulary.save(tmp / "items.parquet")
    return str(path)


def load_arrays(path, kind: str, names=("item_counts",)):
    """``(root attrs, {name: array}, item vocabulary or None)`` of a directory written by :func:`save_arrays`.

    Checked as this module's docstring describes: one-line errors naming the damaged file.
    """
    root, attrs = open_model_root(path, kind)
    arrays = {name: read_array(root, name) for name in names}
    n_items = attrs.get("n_items")
    for name, values in arrays.items():
        if isinstance(n_items, int) and values.ndim == 1 and values.shape[0] != n_items:
            raise ModelFileError(f"{path}/{name}: {values.shape[0]} values for a model of {n_items} items")
    vocabulary = read_item_vocabulary(path, n_items if isinstance(n_items, int) else None, attrs)
    return attrs, arrays, vocabulary
