"""Writing interaction stores: :func:`write_store` from memory, and the layout pieces
(:func:`create_layout`, :func:`write_nnz_range`, :func:`assemble_chunk`, :func:`write_root`, ...)
that the distributed ingest (:mod:`dask_rec.data.ingestion`) writes with in parallel.

The format is described in :mod:`dask_rec.data.store`, which reads it. Every write goes through a
temporary sibling directory renamed into place (:func:`dask_rec.data.atomic.atomic_directory`).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from dask_rec import settings
from dask_rec.data.atomic import atomic_directory, check_target, local_path
from dask_rec.data.blocks import uniform_bounds
from dask_rec.jsonable import to_jsonable
from dask_rec.data.store import FORMAT_VERSION, INDPTR_CHUNK, VECTOR_CHUNK, InteractionStore

__all__ = ["write_store", "block_bounds_for", "root_attrs", "index_dtype", "create_layout", "nnz_chunk",
           "write_vocabulary", "write_root", "chunk_pieces", "shared_chunks", "write_nnz_range", "assemble_chunk"]


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

    from dask_rec.data.vocabulary import Vocabulary

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
    from dask_rec.data.vocabulary import Vocabulary

    if vocab is None:
        return Vocabulary.from_sorted_unique(np.arange(n, dtype=np.int64), "int")
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

