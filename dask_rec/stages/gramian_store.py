"""The Gramian's lower triangle in item column blocks, kept in memory or in a Zarr directory.

The ICF factorization reads the lower triangle of the (ordered) Gramian one column at a time, so
the Gramian of a large catalog is computed and kept as column blocks: block ``c`` holds the
lower-triangle columns ``j0:j1`` (in the item order of the fit) as a CSR matrix of shape
``(j1 - j0, n_items)`` whose row ``r`` is column ``j0 + r`` (rows ``k >= j0 + r``, sorted, the
diagonal first). Small Gramians stay in the workers' memory; large ones are written by the
tasks that compute them into a directory the workers share, then read back one block at a time.

Layout of a directory (Zarr v3)::

    GRAMIAN/                    root attrs: kind "dask_rec.LowerGramian", format_version,
                                n_items, bounds [[j0, j1], ...], ordering, nnz (when complete)
      order                     int64 [n_items]: the item order (new item j is item order[j])
      b00000/ b00001/ ...       one group per column block: indptr int64, indices int32,
                                data float32 when that is lossless (integer counts), else float64

A working directory is created under the scratch directory (``dask_rec.gramian.scratch-dir``,
default: beside the store, or the system's temporary directory for in-memory data) and removed
when the fit ends; with ``dask_rec.gramian.keep`` set to a path it is renamed there instead,
complete, and :func:`open_lower_gramian` reads it back.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["LowerGramian", "open_lower_gramian", "create_lower_gramian", "write_block", "read_block"]

KIND = "dask_rec.LowerGramian"
FORMAT_VERSION = 1
#: Elements per chunk of a block's indices/data arrays.
CHUNK = 1 << 22


@dataclass
class LowerGramian:
    """Where the column blocks of a lower-triangle Gramian are.

    Attributes
    ----------
    n_items : int
    bounds : list of (int, int)
        The column blocks ``(j0, j1)``, tiling ``0..n_items`` in order.
    order : numpy.ndarray of int64
        The item order the columns are in (new item ``j`` is item ``order[j]``).
    path : str or None
        The directory holding the blocks; ``None`` when they are in memory (``handles``).
    handles : list
        In memory: one handle (value or future) per block.
    nnz : int
        Stored entries of the lower triangle, diagonal included (0 until known).
    block_nnz : list of int
        Stored entries per block (empty until known).
    ordering : str
        The name of the order (``"popularity"``, ``"natural"``).
    info : dict
        What the stage that computed it measured (see :func:`dask_rec.models.sansa.training.compute_lower_gramian`).
    """

    n_items: int
    bounds: list
    order: np.ndarray
    path: str | None = None
    handles: list = field(default_factory=list)
    nnz: int = 0
    block_nnz: list = field(default_factory=list)
    ordering: str = "popularity"
    info: dict = field(default_factory=dict)

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def block(self, c: int) -> sp.csr_matrix:
        """Block ``c`` as CSR float64 (read from disk, or the in-memory value)."""
        if self.path is not None:
            return read_block(self.path, c)
        value = self.handles[c]
        return value.result() if hasattr(value, "result") else value


def create_lower_gramian(scratch_dir, n_items: int, bounds, order, ordering: str) -> str:
    """Create an empty working directory for the blocks under ``scratch_dir``; returns its path."""
    import zarr

    parent = Path(scratch_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".dask_rec-gramian-{uuid.uuid4().hex[:8]}-", dir=parent))
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update({"kind": KIND, "format_version": FORMAT_VERSION, "n_items": int(n_items),
                       "bounds": [[int(a), int(b)] for a, b in bounds], "ordering": str(ordering)})
    order = np.asarray(order, dtype=np.int64)
    arr = root.create_array("order", shape=order.shape, dtype=order.dtype, chunks=(max(1, min(order.size, CHUNK)),))
    if order.size:
        arr[:] = order
    return str(path)


def write_block(path: str, c: int, block: sp.csr_matrix) -> int:
    """Write block ``c`` (CSR ``w × n``) into the directory ``path``; returns its non-zeros.

    Values are stored as float32 when that loses nothing (Gramians of integer interactions),
    else as float64.
    """
    import zarr

    data = block.data
    as32 = data.astype(np.float32)
    if np.array_equal(as32, data):
        data = as32
    group = zarr.open_group(str(path), mode="a", zarr_format=3).create_group(_name(c))
    group.attrs.update({"shape": [int(s) for s in block.shape]})
    for key, values in (("indptr", block.indptr.astype(np.int64)), ("indices", block.indices.astype(np.int32)),
                        ("data", data)):
        arr = group.create_array(key, shape=values.shape, dtype=values.dtype,
                                 chunks=(max(1, min(values.size, CHUNK)),))
        if values.size:
            arr[:] = values
    return int(block.nnz)


def read_block(path: str, c: int) -> sp.csr_matrix:
    """Block ``c`` of the directory ``path`` as canonical CSR float64."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=3)[_name(c)]
    shape = tuple(group.attrs["shape"])
    out = sp.csr_matrix((group["data"][:].astype(np.float64, copy=False), group["indices"][:], group["indptr"][:]),
                        shape=shape)
    out.has_sorted_indices = True
    out.has_canonical_format = True
    return out


def finish_lower_gramian(path: str, nnz: int, keep=None) -> str | None:
    """Record the total ``nnz``; with ``keep``, rename the directory there (it must not exist)."""
    import zarr

    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    root.attrs["nnz"] = int(nnz)
    if keep is None:
        return None
    target = Path(keep)
    if target.exists():
        raise FileExistsError(f"cannot keep the Gramian at {str(target)!r}: it already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(path).rename(target)
    return str(target)


def remove_lower_gramian(path) -> None:
    """Remove a working directory made by :func:`create_lower_gramian` (nothing else)."""
    p = Path(path)
    if p.name.startswith(".dask_rec-gramian-") and p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def open_lower_gramian(path) -> LowerGramian:
    """Open a Gramian kept by a fit (``dask_rec.gramian.keep``)."""
    import zarr

    p = Path(path)
    if not (p / "zarr.json").exists():
        raise FileNotFoundError(f"no kept Gramian at {str(p)!r}")
    root = zarr.open_group(str(p), mode="r", zarr_format=3)
    attrs = dict(root.attrs)
    if attrs.get("kind") != KIND:
        raise ValueError(f"{str(p)!r} is not a dask_rec Gramian directory (kind={attrs.get('kind')!r})")
    if "nnz" not in attrs:
        raise ValueError(f"the Gramian at {str(p)!r} is incomplete (its fit did not finish)")
    block_nnz = [int(root[_name(c)]["indices"].shape[0]) for c in range(len(attrs["bounds"]))]
    return LowerGramian(n_items=int(attrs["n_items"]), bounds=[tuple(b) for b in attrs["bounds"]],
                        order=root["order"][:], path=str(p), nnz=int(attrs["nnz"]), block_nnz=block_nnz,
                        ordering=str(attrs.get("ordering", "popularity")))


def _name(c: int) -> str:
    return f"b{int(c):05d}"
