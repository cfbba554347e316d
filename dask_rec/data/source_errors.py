"""One-line explanations of the errors raised while reading an interaction log (CSV or Parquet).

Readers fail deep inside pandas, pyarrow or Dask, with messages that may span lines, name no
file (a file among many), or give positions relative to a byte block. When a read fails,
:func:`explain_read_error` finds the culprit itself (only then, so the happy path costs nothing):
the first file of the source that is not UTF-8 (with byte offset, line and column), whose rows
do not have the header's number of fields (with line), or that is not a readable Parquet file.
"""

from __future__ import annotations

import codecs
import csv
import io

__all__ = ["explain_read_error"]

_BLOCK = 1 << 20


def _files(source: str, storage_options=None) -> list:
    """``(fs, paths)``: the files a source path, directory or glob stands for, sorted."""
    import fsspec

    fs, _, paths = fsspec.core.get_fs_token_paths(source, storage_options=storage_options)
    files = []
    for p in paths:
        if fs.isdir(p):
            files.extend(sorted(f for f in fs.find(p) if not f.rsplit("/", 1)[-1].startswith((".", "_"))))
        else:
            files.append(p)
    return fs, files


def _invalid_utf8(fs, path: str):
    """``(byte offset, line number, line bytes, offset in line)`` of the first invalid UTF-8 byte, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines_before, tail = 0, 0, b""  # tail: the bytes after the last newline read so far
    with fs.open(path, "rb", compression="infer") as f:
        while True:
            block = f.read(_BLOCK)
            pending = len(decoder.getstate()[0])  # an unfinished character of the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                bad = offset - pending + exc.start
                data = tail + block  # starts at byte offset - len(tail)
                local = bad - (offset - len(tail))
                start = data.rfind(b"\n", 0, local) + 1
                end = data.find(b"\n", local)
                line = data[start:end if end >= 0 else len(data)]
                return bad, lines_before + data.count(b"\n", 0, local) + 1, line, local - start
            if not block:
                return None
            lines_before += block.count(b"\n")
            newline = block.rfind(b"\n")
            tail = block[newline + 1:] if newline >= 0 else tail + block
            offset += len(block)


def _column_at(fs, path: str, line: bytes, pos: int, sep: str) -> str:
    with fs.open(path, "rb", compression="infer") as f:
        header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split(sep)
    field = line[:pos].count(sep.encode())
    return repr(header[field]) if field < len(header) else f"#{field + 1}"


def _ragged_line(fs, path: str, sep: str):
    """``(line number, fields, expected)`` of the first row whose field count differs from the header's."""
    with fs.open(path, "rb", compression="infer") as f:
        reader = csv.reader(io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline=""), delimiter=sep)
        expected = None
        for row in reader:
            if expected is None:
                expected = len(row)
            elif row and len(row) != expected:
                return reader.line_num, len(row), expected
    return None


def _first_line(text: str) -> str:
    text = text.split("Original Message:", 1)[-1].strip()
    return (text.splitlines() or [""])[0]


def explain_read_error(exc: BaseException, source: str, fmt: str, *, sep: str | None = None,
                       storage_options=None) -> ValueError | None:
    """A one-line ``ValueError`` naming the file (and line/column) for a failed read of ``source``, or None
    when ``exc`` is not a reading error (then it is raised as it is)."""
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return None  # already clear, and raised by our own checks
    message = str(exc)
    wrapped = "An error occurred while calling the read_" in message
    try:
        fs, files = _files(source, storage_options)
    except Exception:  # pragma: no cover - the source was listed once already
        fs, files = None, []
    if fmt == "csv":
        sep = sep or ","
        if not (isinstance(exc, UnicodeDecodeError) or wrapped or type(exc).__name__ in ("ParserError", "EmptyDataError")):
            return None
        for path in files:
            found = _invalid_utf8(fs, path)
            if found is not None:
                offset, line_no, line, pos = found
                return ValueError(f"{path}: not UTF-8 at byte {offset} (line {line_no}, column "
                                  f"{_column_at(fs, path, line, pos, sep)}); re-encode the file as UTF-8")
        for path in files:
            found = _ragged_line(fs, path, sep)
            if found is not None:
                line_no, n, expected = found
                return ValueError(f"{path}: line {line_no} has {n} fields where the header has {expected} "
                                  f"(separator {sep!r})")
        return ValueError(f"{source}: cannot be read as CSV ({type(exc).__name__}: {_first_line(message)})")
    if not (wrapped or type(exc).__module__.startswith("pyarrow") or isinstance(exc, OSError)):
        return None
    import pyarrow.parquet as pq

    for path in files:
        try:
            with fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                if parquet.num_row_groups:
                    parquet.read_row_group(0)
        except Exception as bad:  # this file is the culprit
            return ValueError(f"{path}: not a readable Parquet file ({_first_line(str(bad))})")
    if not wrapped:
        return None
    return ValueError(f"{source}: cannot be read as Parquet ({type(exc).__name__}: {_first_line(message)})")
