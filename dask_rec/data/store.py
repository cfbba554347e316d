"""The on-disk interaction store: a user × item CSR matrix in a Zarr v3 directory, read by row block.

Layout (``format_version`` 1)::

    STORE/                      Zarr v3 group; its attributes hold the metadata below
      matrix/                   anndata-compatible CSR group, attrs encoding-type "csr_matrix",
                                encoding-version "0.1.0", shape [n_users, n_items]
        indptr                  int64  [n_users + 1]   chunks of 65,536 rows
        indices                 int32  [nnz]  (int64 when n_items >= 2**31), chunks of 262,144
        data                    float32 [nnz]          chunks of 262,144
      item_counts               int64  [n_items]  interactions (stored entries) per item
      user_ids                  int64 or string [n_users]  user vocabulary, sorted: row i = user_ids[i]
      item_ids                  int64 or string [n_items]  item vocabulary, sorted: column j = item_ids[j]

Rows are users and columns items, both in the sorted order of their original IDs (see
:class:`dask_rec.data.vocabulary.Vocabulary`); within a row, column indices are sorted and unique.
The rows are cut into ``n_blocks`` contiguous row blocks, block ``i`` holding rows
``block_bounds[i]:block_bounds[i+1]``. Reading a block reads its slice of ``indptr`` and the
``indices``/``data`` chunks covering its non-zeros: its own bytes plus at most one partial
chunk (1 MiB) at each end.

Root attributes: ``format_version``, ``n_users``, ``n_items``, ``nnz``, ``n_blocks``,
``block_bounds``, ``values`` (how values were made: binarized or kept, duplicate handling),
``ingest`` (the options of the ingest that wrote the store), ``dropped`` (input rows or entries
dropped, by reason) and ``source_rows``.

This module reads stores; :mod:`dask_rec.data.store_writer` writes them (:func:`write_store` from memory,
and the layout pieces the distributed ingest writes in parallel). Stores are written atomically
(:func:`dask_rec.data.atomic.atomic_directory`): into a sibling
directory ``.{name}.tmp-{pid}-{host}-{id}`` that is renamed into place when complete. An existing
store is replaced only with ``overwrite=True``, only by a store (never a model or other files),
and only after the new one is complete (the old one is moved aside, the new one renamed in, the
old one deleted), so a failed write never loses data; the temporaries of a killed run are removed
by the next write to the same target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from dask_rec.data.atomic import local_path

__all__ = ["InteractionStore", "open_store", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: Rows per chunk of ``matrix/indptr``.
INDPTR_CHUNK = 1 << 16
#: Elements per chunk of the vocabulary and ``item_counts`` arrays.
VECTOR_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def open_store(path) -> "InteractionStore":
    """Open the interaction store at ``path`` (cheap: reads only its small metadata).

    Raises
    ------
    FileNotFoundError
        When there is no store at ``path``.
    ValueError
        When ``path`` is not a dask_rec interaction store or has an unknown format version.
    """
    return InteractionStore(path)


class InteractionStore:
    """A handle on an interaction store written by :func:`dask_rec.data.ingestion` or :func:`dask_rec.data.store_writer.write_store`.

    Construction reads only the root metadata; arrays and vocabularies are read when first used.
    Handles pickle to their path and metadata, so they can be passed to Dask tasks, which
    reopen the arrays they read.

    Parameters
    ----------
    path : str or os.PathLike
        The store directory.
    """

    def __init__(self, path) -> None:
        self._path = local_path(path)
        self._attrs = _read_root_attrs(self._path)
        self._cache: dict = {}

    def __getstate__(self):
        return {"path": self._path, "attrs": self._attrs}

    def __setstate__(self, state) -> None:
        self._path = state["path"]
        self._attrs = state["attrs"]
        self._cache = {}

    # -- metadata ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The store directory."""
        return self._path

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return int(self._attrs["n_users"]), int(self._attrs["n_items"])

    @property
    def nnz(self) -> int:
        """Number of stored (user, item) entries."""
        return int(self._attrs["nnz"])

    @property
    def n_blocks(self) -> int:
        """Number of row blocks."""
        return int(self._attrs["n_blocks"])

    @property
    def block_bounds(self) -> np.ndarray:
        """Row offsets of the blocks (``int64``, length ``n_blocks + 1``)."""
        if "block_bounds" not in self._cache:
            self._cache["block_bounds"] = np.asarray(self._attrs["block_bounds"], dtype=np.int64)
        return self._cache["block_bounds"]

    @property
    def metadata(self) -> dict:
        """All root attributes (a copy): counts, block bounds, value handling, ingest options, drops."""
        return json.loads(json.dumps(self._attrs))

    @property
    def user_vocabulary(self):
        """The :class:`~dask_rec.data.vocabulary.Vocabulary` of users (row ``i`` is ``ids[i]``)."""
        if "users" not in self._cache:
            self._cache["users"] = _read_vocabulary(self._path, "user_ids")
        return self._cache["users"]

    @property
    def item_vocabulary(self):
        """The :class:`~dask_rec.data.vocabulary.Vocabulary` of items (column ``j`` is ``ids[j]``)."""
        if "items" not in self._cache:
            self._cache["items"] = _read_vocabulary(self._path, "item_ids")
        return self._cache["items"]

    @property
    def item_counts(self) -> np.ndarray:
        """Stored entries per item (``int64``, length ``n_items``), after filtering."""
        if "item_counts" not in self._cache:
            self._cache["item_counts"] = np.asarray(self._array("item_counts")[:], dtype=np.int64)
        return self._cache["item_counts"]

    @property
    def user_counts(self) -> np.ndarray:
        """Stored entries per user (``int64``, length ``n_users``), from ``indptr``."""
        return np.diff(np.asarray(self._array("matrix/indptr")[:], dtype=np.int64))

    def __repr__(self) -> str:
        n_users, n_items = self.shape
        return (f"InteractionStore({str(self._path)!r}, users={n_users:,}, items={n_items:,}, "
                f"nnz={self.nnz:,}, blocks={self.n_blocks})")

    # -- data --------------------------------------------------------------------------------
    def _array(self, name: str):
        key = "array:" + name
        arr = self._cache.get(key)
        if arr is None:
            import zarr

            arr = zarr.open_array(self._path / name, mode="r")
            self._cache[key] = arr
        return arr

    def read_rows(self, start: int, stop: int):
        """Rows ``start:stop`` as a ``scipy.sparse.csr_matrix`` (float32, all items as columns)."""
        import scipy.sparse as sp

        n_users, n_items = self.shape
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= n_users:
            raise IndexError(f"row range {start}:{stop} is outside 0:{n_users}")
        if start == stop:
            return sp.csr_matrix((0, n_items), dtype=np.float32)
        indptr = np.asarray(self._array("matrix/indptr")[start:stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        if hi > lo:
            indices = self._array("matrix/indices")[lo:hi]
            data = np.asarray(self._array("matrix/data")[lo:hi], dtype=np.float32)
        else:
            indices = np.empty(0, dtype=np.int32)
            data = np.empty(0, dtype=np.float32)
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, n_items))

    def read_block(self, i: int):
        """Row block ``i`` (rows ``block_bounds[i]:block_bounds[i+1]``) as a float32 CSR matrix."""
        i = int(i)
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} is outside 0..{self.n_blocks - 1}")
        bounds = self.block_bounds
        return self.read_rows(bounds[i], bounds[i + 1])

    def iter_blocks(self) -> Iterator:
        """Yield the row blocks in order, one CSR matrix at a time."""
        for i in range(self.n_blocks):
            yield self.read_block(i)

    def to_scipy(self):
        """The whole matrix as one ``scipy.sparse.csr_matrix`` (float32): for small data."""
        return self.read_rows(0, self.shape[0])

    def to_dask_array(self):
        """A lazy ``dask.array.Array`` with one scipy CSR chunk per row block (``(n_users, n_items)``)."""
        import dask.array as da
        import scipy.sparse as sp
        from dask.base import tokenize

        n_users, n_items = self.shape
        name = "interaction-blocks-" + tokenize(str(self._path), self._attrs.get("nnz"),
                                                 self._attrs.get("block_bounds"), self._attrs.get("created"))
        dsk = {(name, i, 0): (_read_block, self, i) for i in range(self.n_blocks)}
        row_chunks = tuple(int(n) for n in np.diff(self.block_bounds)) or (0,)
        if not dsk:
            dsk = {(name, 0, 0): (sp.csr_matrix, (0, n_items), None, None, np.float32)}
        return da.Array(dsk, name, (row_chunks, (n_items,)), meta=sp.csr_matrix((0, 0), dtype=np.float32))


def _read_block(store: InteractionStore, i: int):
    return store.read_block(i)


def _read_root_attrs(path: Path) -> dict:
    meta = path / "zarr.json"
    if not path.exists():
        raise FileNotFoundError(f"no interaction store at {path}")
    if not meta.exists():
        raise ValueError(f"{path} is not an interaction store (no zarr.json)")
    try:
        doc = json.loads(meta.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{meta}: not a readable Zarr metadata file ({type(exc).__name__}: {exc})") from None
    attrs = (doc.get("attributes") if isinstance(doc, dict) else None) or {}
    version = attrs.get("format_version")
    if attrs.get("kind") != "dask_rec.interactions" or version is None:
        raise ValueError(f"{path} is a Zarr group but not a dask_rec interaction store")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has store format {version}; this dask_rec reads up to {FORMAT_VERSION}")
    return attrs


def _read_vocabulary(path: Path, name: str):
    import zarr

    from dask_rec.data.vocabulary import Vocabulary

    arr = zarr.open_array(path / name, mode="r")
    kind = arr.attrs.get("kind", "int")
    values = arr[:]
    if kind == "str":
        values = np.asarray(values, dtype=object)
    return Vocabulary._checked(values, kind, f"{path / name}")
