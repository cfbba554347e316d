"""Where an ingest reads its log from: Parquet or CSV paths and URLs, or in-memory frames.

:func:`read_source` turns any accepted source into a ``dask.dataframe`` of the needed columns
(checking that the input exists and has them); :func:`explain_failure` turns a failed read of a
path into a one-line error naming the file (:mod:`dask_rec.data.source_errors`).
"""

from __future__ import annotations

import math
import os

import pandas as pd

__all__ = ["detect_format", "read_source", "explain_failure"]

#: Rows per partition made from an in-memory pandas or pyarrow input.
_MEMORY_PARTITION_ROWS = 1_000_000


def detect_format(source: str, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv'; got {fmt!r}")
        return fmt
    name = source.rstrip("/").lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "parquet"


def read_source(source, columns: list, fmt: str | None, storage_options: dict | None, read_options: dict | None):
    """``(dask DataFrame of the needed columns, in_memory, description)``."""
    import dask.dataframe as dd

    read_options = dict(read_options or {})
    if isinstance(source, pd.DataFrame):
        _check_columns(list(source.columns), columns, "the DataFrame")
        nparts = max(1, math.ceil(len(source) / _MEMORY_PARTITION_ROWS))
        import dask

        with dask.config.set({"dataframe.convert-string": False}):  # keep object columns as they are
            ddf = dd.from_pandas(source[columns], npartitions=nparts, sort=False)
        return ddf, True, "a pandas DataFrame"
    if type(source).__module__.startswith("pyarrow") and hasattr(source, "column_names"):
        _check_columns(list(source.column_names), columns, "the Table")
        table = source.select(columns)
        n = table.num_rows
        slices = [table.slice(a, _MEMORY_PARTITION_ROWS) for a in range(0, max(n, 1), _MEMORY_PARTITION_ROWS)]
        return dd.from_map(_arrow_to_pandas, slices), True, "a pyarrow Table"
    if isinstance(source, dd.DataFrame):
        _check_columns(list(source.columns), columns, "the dask DataFrame")
        return source[columns], False, "a dask DataFrame"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or URL, a pandas, pyarrow or dask DataFrame; got {type(source).__name__}")
    text = os.fspath(source)
    _check_exists(text, storage_options)
    fmt = detect_format(text, fmt)
    if fmt == "csv":
        read_options.setdefault("dtype", str)
        ddf = dd.read_csv(text, storage_options=storage_options, **read_options)
    else:
        ddf = dd.read_parquet(text, storage_options=storage_options, **read_options)
    _check_columns(list(ddf.columns), columns, text)
    return ddf[columns], False, text


def explain_failure(exc, source, fmt, read_options, storage_options) -> None:
    """Raise a one-line error naming the file for a failed read of a path source (see dask_rec.data.source_errors)."""
    if fmt is None or not isinstance(exc, Exception):
        return
    from dask_rec.data.source_errors import explain_read_error

    explained = explain_read_error(exc, os.fspath(source), fmt, sep=(read_options or {}).get("sep"),
                                   storage_options=storage_options)
    if explained is not None:
        raise explained from None


def _arrow_to_pandas(table) -> pd.DataFrame:
    return table.to_pandas()


def _check_exists(source: str, storage_options) -> None:
    import fsspec

    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(source, storage_options=storage_options)
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError(f"no input found at {source}") from exc
    if not paths or not any(fs.exists(p) for p in paths[:1]):
        raise FileNotFoundError(f"no input found at {source}")


def _check_columns(available: list, needed: list, where: str) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found in "
                         f"{where}; available columns: {', '.join(map(repr, map(str, available)))}")
