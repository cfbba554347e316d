"""External IDs ↔ dense indices.

A :class:`Vocabulary` holds the distinct original IDs of users or of items, sorted, and maps them
to the dense indices ``0 .. n-1`` the matrices use (the position of the ID in the sorted order).
IDs are either all integers (held as ``int64``) or all strings; the order is the natural one
(numeric, or Unicode code point order for strings), so the same set of IDs always gets the same
indices, however the input was partitioned.

The unknown-ID policy is explicit, as in LensKit: ``"error"`` (raise :class:`UnknownIDError`),
``"missing"`` (index ``-1``) or ``"drop"`` (leave the unknown ones out).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from dask_rec.kernels.ids import as_kind, id_kind, int_lookup_values, sorted_unique

__all__ = ["Vocabulary", "PositionalVocabulary", "as_vocabulary", "UnknownIDError"]

_UNKNOWN_POLICIES = ("error", "drop", "missing")
_FORMAT_VERSION = 1
_META_KEY = b"dask_rec.vocabulary"


class UnknownIDError(KeyError, ValueError):
    """IDs looked up in a :class:`Vocabulary` that it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Vocabulary:
    """A sorted set of distinct IDs and their dense indices ``0 .. n-1``.

    Parameters
    ----------
    ids : array-like
        IDs, all integers or all strings, in any order, possibly repeated; nulls are not allowed.
        They are sorted and deduplicated.

    Examples
    --------
    >>> v = Vocabulary(["b", "a", "c", "a"])
    >>> len(v), v.index(["c", "a"]).tolist(), v.id_of(1)
    (3, [2, 0], 'b')
    """

    def __init__(self, ids=()) -> None:
        if isinstance(ids, Vocabulary):
            self._kind, self._ids = ids._kind, ids._ids
            self._lookup = None
            return
        if hasattr(ids, "to_numpy") and hasattr(ids, "type") and hasattr(ids, "null_count"):  # pyarrow
            ids = ids.to_pandas()
        if isinstance(ids, (list, tuple, set, frozenset)) or not hasattr(ids, "__len__"):
            ids = list(ids)
        if len(ids) and pd.isna(pd.Series(ids, copy=False) if not isinstance(ids, pd.Series) else ids).any():
            raise ValueError("IDs must not contain nulls")
        kind = id_kind(ids) if len(ids) else "int"
        values = as_kind(ids, kind)
        if kind == "int":
            values = sorted_unique(values)
        else:
            values = values.unique()
            values = values[values.argsort(kind="stable")] if len(values) else values
        self._kind = kind
        self._ids = values
        self._lookup = None

    @classmethod
    def from_sorted_unique(cls, ids, kind: str) -> "Vocabulary":
        """Wrap IDs already sorted and unique, of ``kind`` ``"int"`` or ``"str"`` (no checks: the
        fast path for callers that built them so, such as the ingest's passes)."""
        self = cls.__new__(cls)
        self._kind = kind
        self._ids = as_kind(ids, kind)
        self._lookup = None
        return self

    @classmethod
    def from_unique_parts(cls, parts: Iterable) -> "Vocabulary":
        """A vocabulary of the union of several arrays of IDs (e.g. the distinct IDs of each partition).

        Raises
        ------
        TypeError
            When the parts mix integer and string IDs.
        """
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls()
        kinds = {id_kind(p) for p in parts}
        if len(kinds) > 1:
            raise TypeError("IDs mix integers and strings across partitions; IDs of one vocabulary must be of one type")
        kind = kinds.pop()
        if kind == "int":
            merged = sorted_unique(np.concatenate([as_kind(p, kind) for p in parts]))
        else:
            merged = pd.unique(pd.array(np.concatenate([np.asarray(as_kind(p, kind), dtype=object) for p in parts]),
                                        dtype="str"))
            merged = merged[merged.argsort(kind="stable")]
        return cls.from_sorted_unique(merged, kind)

    def subset(self, positions) -> "Vocabulary":
        """The vocabulary of the IDs at increasing ``positions`` (e.g. the users kept by a filter)."""
        return Vocabulary.from_sorted_unique(self._ids[np.asarray(positions)], self._kind)

    # -- basic properties -------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """``"int"`` or ``"str"``: the type of the IDs."""
        return self._kind

    @property
    def ids(self) -> np.ndarray:
        """The IDs in index order: ``int64`` for integer IDs, an object array of ``str`` otherwise."""
        if self._kind == "int":
            return self._ids
        return np.asarray(self._ids, dtype=object)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def size(self) -> int:
        """Number of IDs."""
        return len(self._ids)

    def __contains__(self, value) -> bool:
        try:
            return bool(self.index([value], unknown="missing")[0] >= 0)
        except TypeError:
            return False

    def __iter__(self):
        return iter(self.ids.tolist())

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        if self._kind != other._kind or len(self) != len(other):
            return len(self) == len(other) == 0
        return bool(np.array_equal(np.asarray(self._ids, dtype=object if self._kind == "str" else None),
                                   np.asarray(other._ids, dtype=object if other._kind == "str" else None)))

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self.ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"Vocabulary(n={len(self)}, kind={self._kind}, ids=[{head}{more}])"

    def __getstate__(self):
        return {"kind": self._kind, "ids": self._ids}

    def __setstate__(self, state) -> None:
        self._kind = state["kind"]
        self._ids = state["ids"]
        self._lookup = None

    # -- lookups -----------------------------------------------------------------------------
    def index(self, ids, unknown: str = "error"):
        """Dense indices of ``ids``.

        Parameters
        ----------
        ids : scalar or array-like
            IDs of this vocabulary's kind.
        unknown : {"error", "drop", "missing"}
            What to do with IDs the vocabulary does not hold: raise :class:`UnknownIDError`
            (naming a few and how many), leave them out of the result, or give them ``-1``.

        Returns
        -------
        int or numpy.ndarray of int64
            An int for a scalar (``-1`` when missing), else an array (shorter with ``"drop"``).
        """
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {', '.join(_UNKNOWN_POLICIES)}; got {unknown!r}")
        scalar = np.ndim(ids) == 0 and not isinstance(ids, (list, tuple))
        values = [ids] if scalar else ids
        if hasattr(values, "to_numpy") and hasattr(values, "null_count"):  # pyarrow
            values = values.to_pandas()
        if not len(values):
            return np.empty(0, dtype=np.int64)
        codes = self.codes(values)
        bad = codes < 0
        if bad.any():
            if unknown == "error":
                arr = np.asarray(values, dtype=object)[bad]
                shown = ", ".join(repr(v) for v in arr[:5].tolist())
                more = f" (and {bad.sum() - 5} more)" if bad.sum() > 5 else ""
                raise UnknownIDError(f"{int(bad.sum())} of {len(codes)} IDs are not in the vocabulary: {shown}{more}")
            if unknown == "drop":
                return codes[~bad]
        if scalar and unknown != "drop":
            return int(codes[0])
        return codes

    def codes(self, values) -> np.ndarray:
        """Indices of the array ``values`` with -1 for unknown ones (nulls are unknown).

        The unchecked fast path of :meth:`index` (no policy, no scalar handling), for callers that
        check the ``-1`` entries themselves.
        """
        n = len(self._ids)
        if n == 0:
            return np.full(len(values), -1, dtype=np.int64)
        dtype = getattr(values, "dtype", None)
        if dtype is None:
            values = np.asarray(values, dtype=object) if isinstance(values, (list, tuple)) else np.asarray(values)
            dtype = values.dtype
        if self._kind == "int":
            arr, valid = int_lookup_values(values, dtype)
            codes = self._int_codes(arr)
            if valid is not None:
                codes[~valid] = -1
            return codes
        # string IDs: hash lookup through a cached pandas Index
        if self._lookup is None:
            self._lookup = pd.Index(self._ids)
        if pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
            raise TypeError("this vocabulary holds string IDs; got numbers")
        target = pd.array(np.asarray(values, dtype=object), dtype="str") if dtype == object else values
        return self._lookup.get_indexer(target).astype(np.int64, copy=False)

    def _int_codes(self, arr: np.ndarray) -> np.ndarray:
        """Codes of int64 ``arr`` (-1 when unknown): a lookup table when the IDs are dense enough."""
        n = len(self._ids)
        lo, hi = int(self._ids[0]), int(self._ids[-1])
        span = hi - lo + 1
        if span <= max(4 * n, 1 << 20):
            if self._lookup is None:
                lut = np.full(span, -1, dtype=np.int32 if n < 2**31 else np.int64)
                lut[self._ids - lo] = np.arange(n)
                self._lookup = lut
            offset = arr - lo
            inside = (arr >= lo) & (arr <= hi)
            codes = self._lookup[np.where(inside, offset, 0)].astype(np.int64)
            codes[~inside] = -1
            return codes
        pos = np.searchsorted(self._ids, arr)
        np.minimum(pos, n - 1, out=pos)
        return np.where(self._ids[pos] == arr, pos, -1).astype(np.int64, copy=False)

    def id_of(self, codes):
        """Original IDs of dense indices ``codes`` (scalar in, scalar out).

        Raises
        ------
        IndexError
            For indices outside ``0 .. len-1`` (``-1`` included).
        """
        scalar = np.ndim(codes) == 0
        arr = np.atleast_1d(np.asarray(codes))
        if arr.size and arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"indices must be integers; got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            shown = ", ".join(str(v) for v in arr[bad][:5].tolist())
            raise IndexError(f"{int(bad.sum())} indices out of range 0..{len(self) - 1}: {shown}")
        out = self.ids[arr.astype(np.int64, copy=False)]
        if scalar:
            return out[0].item() if self._kind == "int" else out[0]
        return out

    # -- persistence -------------------------------------------------------------------------
    def to_arrow(self):
        """The IDs as a ``pyarrow.Array`` (``int64`` or ``string``) in index order."""
        import pyarrow as pa

        if self._kind == "int":
            return pa.array(self._ids, type=pa.int64())
        return pa.array(np.asarray(self._ids, dtype=object), type=pa.string())

    def save(self, path) -> None:
        """Write the vocabulary to a Parquet file (one column ``id``), atomically.

        The file is written next to ``path`` under a temporary name and renamed into place.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        table = pa.table({"id": self.to_arrow()})
        table = table.replace_schema_metadata(
            {_META_KEY: json.dumps({"kind": self._kind, "format_version": _FORMAT_VERSION,
                                    "crc32": _ids_crc32(self._ids, self._kind)}).encode()})
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            When ``path`` does not exist.
        ValueError
            When the file has no ``id`` column or its IDs are not sorted and unique.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        table = pq.read_table(path)
        if "id" not in table.column_names:
            raise ValueError(f"{path} is not a vocabulary file: no 'id' column (columns: {table.column_names})")
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        column = table.column("id")
        kind = meta.get("kind") or ("str" if str(column.type) in ("string", "large_string") else "int")
        vocab = cls._checked(column.to_numpy(zero_copy_only=False), kind, str(path))
        if "crc32" in meta and meta["crc32"] != _ids_crc32(vocab._ids, vocab._kind):
            raise ValueError(f"{path}: checksum mismatch; the file is damaged")
        return vocab

    @classmethod
    def _checked(cls, ids, kind: str, where: str) -> "Vocabulary":
        """Wrap stored IDs after checking they are sorted and unique."""
        vocab = cls.from_sorted_unique(ids, kind)
        v = vocab._ids
        if len(v) > 1:
            if kind == "int":
                ok = bool((v[1:] > v[:-1]).all())
            else:
                import pyarrow as pa
                import pyarrow.compute as pc

                a = pa.array(np.asarray(v, dtype=object), type=pa.string())
                ok = bool(pc.all(pc.greater(a[1:], a[:-1])).as_py())
            if not ok:
                raise ValueError(f"IDs stored in {where} are not sorted and unique")
        return vocab


def _ids_crc32(ids, kind: str) -> int:
    """CRC-32 of the IDs (int64 bytes, or the UTF-8 strings joined by NUL bytes)."""
    import zlib

    if kind == "int":
        return zlib.crc32(np.ascontiguousarray(ids, dtype=np.int64).view(np.uint8)) & 0xFFFFFFFF
    return zlib.crc32("\0".join(map(str, ids)).encode("utf-8", "surrogatepass")) & 0xFFFFFFFF


class PositionalVocabulary:
    """IDs in a caller's own index order (not sorted): ``ids[j]`` is the ID of index ``j``.

    For a model trained on a matrix whose columns follow an ID array of the caller's (serving
    accepts ``item_vocabulary=array``). Lookups go through a sorted :class:`Vocabulary` of the same
    IDs and a permutation, so kinds, nulls and unknown IDs are handled as there.

    Parameters
    ----------
    ids : array-like
        Distinct IDs, integers or strings, in index order.
    """

    def __init__(self, ids) -> None:
        self.ids = np.asarray(ids)
        self._sorted = Vocabulary(self.ids)
        if len(self._sorted) != len(self.ids):
            raise ValueError(f"an ID array used as a vocabulary must hold distinct IDs; "
                             f"{len(self.ids) - len(self._sorted)} repeat")
        self._position = np.empty(len(self.ids), dtype=np.int64)
        self._position[self._sorted.codes(self.ids)] = np.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, ids, unknown: str = "error"):
        """Indices of ``ids`` in this order; ``unknown`` as in :meth:`Vocabulary.index`."""
        codes = self._sorted.index(ids, unknown=unknown)
        if np.ndim(codes) == 0:
            return int(self._position[codes]) if codes >= 0 else -1
        return np.where(codes >= 0, self._position[np.maximum(codes, 0)], -1) if len(codes) else codes

    def id_of(self, codes) -> np.ndarray:
        """IDs of indices ``codes``."""
        return self.ids[np.asarray(codes)]


def as_vocabulary(vocabulary):
    """``vocabulary`` itself when it is a vocabulary (has ``ids``, ``index``, ``id_of``), None for
    None, else a :class:`PositionalVocabulary` over it (an array of IDs in index order)."""
    if vocabulary is None:
        return None
    if all(hasattr(vocabulary, name) for name in ("index", "ids", "id_of")):
        return vocabulary
    return PositionalVocabulary(vocabulary)
