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
:class:`dask_rec.vocabulary.Vocabulary`); within a row, column indices are sorted and unique.
The rows are cut into ``n_blocks`` contiguous row blocks, block ``i`` holding rows
``block_bounds[i]:block_bounds[i+1]``. Reading a block reads its slice of ``indptr`` and the
``indices``/``data`` chunks covering its non-zeros: its own bytes plus at most one partial
chunk (1 MiB) at each end.

Root attributes: ``format_version``, ``n_users``, ``n_items``, ``nnz``, ``n_blocks``,
``block_bounds``, ``values`` (how values were made: binarized or kept, duplicate handling),
``ingest`` (the options of the ingest that wrote the store), ``dropped`` (input rows or entries
dropped, by reason) and ``source_rows``.

Stores are written atomically (:func:`dask_rec.atomic.atomic_directory`): into a sibling
directory ``.{name}.tmp-{pid}-{host}-{id}`` that is renamed into place when complete. An existing
store is replaced only with ``overwrite=True``, only by a store (never a model or other files),
and only after the new one is complete (the old one is moved aside, the new one renamed in, the
old one deleted), so a failed write never loses data; the temporaries of a killed run are removed
by the next write to the same target.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .atomic import local_path
from .blocks import uniform_bounds
from .jsonable import to_jsonable
from . import settings

__all__ = [
    "InteractionStore",
    "open_store",
    "write_store",
    "FORMAT_VERSION",
    "block_bounds_for",
]

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
    """A handle on an interaction store written by :func:`dask_rec.ingestion` or :func:`write_store`.

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
        """The :class:`~dask_rec.vocabulary.Vocabulary` of users (row ``i`` is ``ids[i]``)."""
        if "users" not in self._cache:
            self._cache["users"] = _read_vocabulary(self._path, "user_ids")
        return self._cache["users"]

    @property
    def item_vocabulary(self):
        """The :class:`~dask_rec.vocabulary.Vocabulary` of items (column ``j`` is ``ids[j]``)."""
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

    from dask_rec.vocabulary import Vocabulary

    arr = zarr.open_array(path / name, mode="r")
    kind = arr.attrs.get("kind", "int")
    values = arr[:]
    if kind == "str":
        values = np.asarray(values, dtype=object)
    return Vocabulary._checked(values, kind, f"{path / name}")


# --------------------------------------------------------------------------------------------
# writing: layout pieces shared by write_store and the distributed ingest
# --------------------------------------------------------------------------------------------

def index_dtype(n_items: int):
    """dtype of ``matrix/indices``: int32 unless ``n_items`` needs int64."""
    return np.dtype(np.int32) if n_items < 2**31 else np.dtype(np.int64)


def create_layout(root: Path, n_users: int, n_items: int, nnz: int) -> None:
    """Create the (empty) arrays of a store with these sizes under ``root``."""
    import zarr

    group = zarr.open_group(root, mode="a")
    matrix = group.create_group("matrix")
    matrix.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                         "shape": [int(n_users), int(n_items)]})
    matrix.create_array("indptr", shape=(n_users + 1,), chunks=(INDPTR_CHUNK,), dtype="int64", fill_value=0)
    chunk = max(1, min(nnz_chunk(), max(nnz, 1)))
    matrix.create_array("indices", shape=(nnz,), chunks=(chunk,), dtype=index_dtype(n_items), fill_value=0)
    matrix.create_array("data", shape=(nnz,), chunks=(chunk,), dtype="float32", fill_value=0)
    group.create_array("item_counts", shape=(n_items,), chunks=(max(1, min(VECTOR_CHUNK, n_items)),),
                       dtype="int64", fill_value=0)


def nnz_chunk() -> int:
    """Chunk length of ``indices`` and ``data`` (``dask_rec.store.nnz-chunk``)."""
    return int(settings.get("store.nnz-chunk"))


def write_vocabulary(root: Path, name: str, vocabulary) -> None:
    """Store ``vocabulary`` as the 1-D Zarr array ``root/name`` (int64 or string)."""
    import zarr

    n = len(vocabulary)
    dtype = "int64" if vocabulary.kind == "int" else str
    arr = zarr.create_array(root / name, shape=(n,), chunks=(max(1, min(VECTOR_CHUNK, n)),), dtype=dtype,
                            overwrite=True)
    arr.attrs["kind"] = vocabulary.kind
    if n:
        arr[:] = vocabulary.ids if vocabulary.kind == "int" else np.asarray(vocabulary.ids, dtype=object)


def write_root(root: Path, attrs: dict) -> None:
    """Set the root attributes of the store under construction at ``root``."""
    import zarr

    group = zarr.open_group(root, mode="r+")
    group.attrs.update(to_jsonable(attrs))


def chunk_pieces(start: int, stop: int, total: int, chunk: int):
    """Split the element range ``[start, stop)`` of an array of ``total`` elements in chunks of ``chunk``.

    Returns
    -------
    owned : tuple of int
        ``(lo, hi)``: the sub-range made of whole chunks that lie inside ``[start, stop)``
        (``lo == hi`` when there is none). Only this range's writer touches those chunks.
    partial : list of (int, int, int)
        ``(chunk_index, lo, hi)`` for the (at most two) chunks the range covers only in part;
        other ranges write the rest of those chunks.
    """
    if stop <= start:
        return (start, start), []
    k0, k1 = start // chunk, (stop - 1) // chunk
    partial = []
    lo, hi = k0 * chunk, min((k1 + 1) * chunk, total)
    if start != lo or (k0 == k1 and stop != hi):
        partial.append((k0, start, min(stop, (k0 + 1) * chunk)))
        lo = (k0 + 1) * chunk
    if k1 > k0 and stop != hi:
        partial.append((k1, k1 * chunk, stop))
        hi = k1 * chunk
    if hi <= lo:
        lo = hi = start
    return (lo, hi), partial


def shared_chunks(offsets: np.ndarray, total: int, chunk: int) -> np.ndarray:
    """Indices of the chunks that more than one of the ranges ``offsets[i]:offsets[i+1]`` touch."""
    inner = np.asarray(offsets[1:-1], dtype=np.int64)
    inner = inner[(inner % chunk != 0) & (inner > 0) & (inner < total)]
    return np.unique(inner // chunk)


def write_nnz_range(root: Path, start: int, indices: np.ndarray, data: np.ndarray, total: int,
                    scratch: Path) -> None:
    """Write entries ``start : start+len(indices)`` of ``matrix/indices`` and ``matrix/data``.

    Whole chunks are written in place; the parts of chunks shared with a neighbouring range are
    saved to ``scratch`` and written by :func:`assemble_chunk` once every range is done (so no
    two tasks ever write one chunk).
    """
    import zarr

    stop = start + len(indices)
    arr_i = zarr.open_array(root / "matrix" / "indices", mode="r+")
    arr_d = zarr.open_array(root / "matrix" / "data", mode="r+")
    chunk = int(arr_i.chunks[0])  # as created, whatever this process's configuration says
    (lo, hi), partial = chunk_pieces(start, stop, total, chunk)
    if hi > lo:
        arr_i[lo:hi] = indices[lo - start:hi - start]
        arr_d[lo:hi] = data[lo - start:hi - start]
    for k, a, b in partial:
        stem = scratch / f"piece-{k:012d}-{a:016d}"
        np.save(f"{stem}.indices.npy", np.ascontiguousarray(indices[a - start:b - start]))
        np.save(f"{stem}.data.npy", np.ascontiguousarray(data[a - start:b - start]))


def assemble_chunk(root: Path, k: int, total: int, scratch: Path) -> None:
    """Write chunk ``k`` of ``indices``/``data`` from the pieces :func:`write_nnz_range` saved."""
    import zarr

    arr_i = zarr.open_array(root / "matrix" / "indices", mode="r+")
    arr_d = zarr.open_array(root / "matrix" / "data", mode="r+")
    chunk = int(arr_i.chunks[0])
    stems = sorted(glob.glob(str(scratch / f"piece-{k:012d}-*.indices.npy")))
    indices = np.concatenate([np.load(s) for s in stems]) if stems else np.empty(0)
    data = np.concatenate([np.load(s.replace(".indices.npy", ".data.npy")) for s in stems]) if stems else np.empty(0)
    lo, hi = k * chunk, min((k + 1) * chunk, total)
    if len(indices) != hi - lo:
        raise RuntimeError(f"chunk {k}: pieces cover {len(indices)} of {hi - lo} entries")  # pragma: no cover
    arr_i[lo:hi] = indices
    arr_d[lo:hi] = data


def block_bounds_for(row_nnz: np.ndarray, *, rows_per_block: int | None = None,
                     block_nnz: int | None = None) -> np.ndarray:
    """Row offsets of the blocks for rows with ``row_nnz`` entries each.

    Parameters
    ----------
    row_nnz : numpy.ndarray
        Entries per row.
    rows_per_block : int, optional
        Fixed number of rows per block (the last one may be smaller).
    block_nnz : int, optional
        Otherwise, cut blocks of about this many entries (a row is never split; default
        ``dask_rec.store.block-nnz``, 1,000,000).

    Returns
    -------
    numpy.ndarray of int64
        ``[0, ..., n_rows]``, strictly increasing (just ``[0]`` when there are no rows).
    """
    n = len(row_nnz)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    if rows_per_block is not None:
        if isinstance(rows_per_block, bool) or int(rows_per_block) != rows_per_block or rows_per_block < 1:
            raise ValueError(f"rows_per_block must be a positive integer; got {rows_per_block!r}")
        return uniform_bounds(n, int(rows_per_block))
    target = int(block_nnz if block_nnz is not None else settings.get("store.block-nnz"))
    if target < 1:
        raise ValueError(f"block_nnz must be >= 1; got {target}")
    csum = np.cumsum(np.asarray(row_nnz, dtype=np.int64))
    total = int(csum[-1])
    n_blocks = max(1, -(-total // target))
    # cut after the row whose cumulative count first reaches each multiple of the target
    cuts = np.searchsorted(csum, np.arange(1, n_blocks, dtype=np.int64) * (total / n_blocks), side="left") + 1
    return np.unique(np.concatenate([[0], cuts[(cuts > 0) & (cuts < n)], [n]]).astype(np.int64))


# --------------------------------------------------------------------------------------------
# atomic directories (see dask_rec.atomic; re-exported here for the writers that import them from here)
# --------------------------------------------------------------------------------------------

from dask_rec.atomic import atomic_directory, check_target  # noqa: E402


# --------------------------------------------------------------------------------------------
# writing a store from memory
# --------------------------------------------------------------------------------------------

def write_store(path, matrix, user_vocabulary=None, item_vocabulary=None, *, rows_per_block: int | None = None,
                block_nnz: int | None = None, values: dict | None = None, metadata: dict | None = None,
                overwrite: bool = False) -> InteractionStore:
    """Write an in-memory matrix (or list of row blocks) as an interaction store.

    Parameters
    ----------
    path : str or os.PathLike
        Store directory to create.
    matrix : scipy.sparse matrix or array, numpy array, or sequence of them
        The user × item matrix, or its row blocks in order (which then become the store's
        blocks). Duplicate entries are summed; values are stored as float32.
    user_vocabulary, item_vocabulary : Vocabulary or array-like, optional
        IDs of the rows and columns, in row/column order (so sorted); default ``0..n-1``.
    rows_per_block, block_nnz : int, optional
        Block sizes when ``matrix`` is one matrix (see :func:`block_bounds_for`).
    values : dict, optional
        How the values were made (stored in the ``values`` attribute).
    metadata : dict, optional
        Extra root attributes (JSON-able).
    overwrite : bool
        Replace an existing store at ``path``.

    Returns
    -------
    InteractionStore
    """
    import scipy.sparse as sp

    from dask_rec.vocabulary import Vocabulary

    path = local_path(path)
    check_target(path, overwrite)
    if isinstance(matrix, (list, tuple)):
        if not matrix:
            raise ValueError("matrix is an empty list of blocks")
        blocks = [sp.csr_matrix(b) for b in matrix]
        widths = {b.shape[1] for b in blocks}
        if len(widths) != 1:
            raise ValueError(f"row blocks have different numbers of columns: {sorted(widths)}")
        bounds = np.concatenate([[0], np.cumsum([b.shape[0] for b in blocks])]).astype(np.int64)
        bounds = np.unique(bounds)
        X = sp.vstack(blocks, format="csr")
    else:
        X = sp.csr_matrix(matrix)
        bounds = None
    X = X.astype(np.float32)
    X.sum_duplicates()
    X.sort_indices()
    n_users, n_items = X.shape
    if bounds is None:
        bounds = block_bounds_for(np.diff(X.indptr), rows_per_block=rows_per_block, block_nnz=block_nnz)
    users = _vocab_for(user_vocabulary, n_users, "user_vocabulary", "rows")
    items = _vocab_for(item_vocabulary, n_items, "item_vocabulary", "columns")
    item_counts = np.bincount(X.indices, minlength=n_items).astype(np.int64)
    attrs = {
        "values": values or {"binarized": bool(X.nnz == 0 or np.all(X.data == 1)), "duplicates": "sum"},
        "ingest": None,
        "dropped": {},
        "source_rows": int(X.nnz),
    }
    attrs.update(metadata or {})
    with atomic_directory(path, overwrite) as tmp:
        create_layout(tmp, n_users, n_items, X.nnz)
        import zarr

        zarr.open_array(tmp / "matrix" / "indptr", mode="r+")[:] = X.indptr.astype(np.int64)
        if X.nnz:
            zarr.open_array(tmp / "matrix" / "indices", mode="r+")[:] = X.indices.astype(index_dtype(n_items))
            zarr.open_array(tmp / "matrix" / "data", mode="r+")[:] = X.data
        if n_items:
            zarr.open_array(tmp / "item_counts", mode="r+")[:] = item_counts
        write_vocabulary(tmp, "user_ids", users)
        write_vocabulary(tmp, "item_ids", items)
        write_root(tmp, root_attrs(n_users, n_items, X.nnz, bounds, **attrs))
    return InteractionStore(path)


def root_attrs(n_users: int, n_items: int, nnz: int, bounds: np.ndarray, **extra) -> dict:
    """The root attributes of a store (counts, blocks and the given extras)."""
    import datetime

    import dask_rec

    attrs = {
        "kind": "dask_rec.interactions",
        "format_version": FORMAT_VERSION,
        "n_users": int(n_users),
        "n_items": int(n_items),
        "nnz": int(nnz),
        "n_blocks": int(len(bounds) - 1),
        "block_bounds": [int(b) for b in bounds],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dask_rec_version": dask_rec.__version__,
    }
    attrs.update(extra)
    return attrs


def _vocab_for(vocab, n: int, name: str, what: str):
    from dask_rec.vocabulary import Vocabulary

    if vocab is None:
        return Vocabulary._from_sorted_unique(np.arange(n, dtype=np.int64), "int")
    if not isinstance(vocab, Vocabulary):
        given = vocab
        vocab = Vocabulary(vocab)
        if len(vocab) == len(given):
            v = vocab.index(given, unknown="missing")
            if not np.array_equal(v, np.arange(len(v))):
                raise ValueError(f"{name} must list the IDs of the {what} in sorted order (as a Vocabulary orders them)")
    if len(vocab) != n:
        raise ValueError(f"{name} has {len(vocab)} IDs but the matrix has {n} {what}")
    return vocab

