"""Directories written atomically, replaced only by their own kind, and stale temporaries swept.

Every directory dask_rec writes (interaction stores, models, recommendation outputs, synthetic
logs) is built in a sibling temporary directory ``.{name}.tmp-{pid}-{host}-{id}`` and renamed
into place when complete (:func:`atomic_directory`).

Overwrite rule
--------------
With ``overwrite=True`` an existing target is replaced only when it is empty or holds a
directory of the *same kind* that dask_rec wrote, and nothing else:

* ``"store"``: root ``zarr.json`` of kind ``dask_rec.interactions``;
* ``"model"``: root ``zarr.json`` of a ``dask_rec.*`` model kind (any model replaces any model);
* ``"recommendations"``: only ``part-NNNNNN.parquet`` files;
* ``"synthetic"``: ``_generator.json`` and ``part-NNNNN.parquet`` files.

Zarr kinds may hold only ``zarr.json``, Zarr sub-directories and ``items.parquet``: a directory
with any other file (``NOTES.txt``) is refused, as is a store where a model is to go.

Stale temporaries
-----------------
A run killed with SIGKILL leaves its ``.{name}.tmp-…`` (or, if killed while swapping, its
``.{name}.old-…``) beside the target. The next :func:`atomic_directory` on that target removes
those it can prove stale: written on this host (the host tag matches) by a process that is no
longer running (its pid is gone, or the pid now belongs to a process started after the
directory was last modified). A stale ``.old-`` is removed when the target exists and renamed
back to the target when it does not (the swap was interrupted between its two renames). Others
(another host's, a live process's, names of older dask_rec versions) are left alone; the old
12-hex-digit names are reported in a warning with the command that removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
import warnings
from pathlib import Path

__all__ = ["atomic_directory", "check_target", "directory_kind", "sweep_stale", "local_path", "KINDS"]

logger = logging.getLogger(__name__)

KINDS = ("store", "model", "recommendations", "synthetic")
#: The ``marker=`` values of earlier versions, mapped to kinds.
_MARKERS = {"store": "store", "zarr.json": "model", "part-000000.parquet": "recommendations",
            "_generator.json": "synthetic"}
_KIND_NAMES = {"store": "an interaction store", "model": "a dask_rec model",
               "recommendations": "a recommendations output", "synthetic": "a synthetic log"}
_PART = re.compile(r"part-\d{5,6}\.parquet")
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<what>tmp|old)-(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-)?[0-9a-f]{8,12}")


def local_path(path) -> Path:
    """``path`` as an absolute local :class:`~pathlib.Path` (``file://`` accepted); other URLs are
    refused in one line: every directory dask_rec writes must be on a filesystem the workers mount."""
    text = os.fspath(path)
    if "://" in text:
        if text.startswith("file://"):
            text = text[len("file://"):]
        else:
            raise ValueError(
                f"store paths must be local directories (on a filesystem every worker mounts); got {text!r}")
    return Path(text).expanduser().absolute()


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_name(path: Path, what: str) -> Path:
    return path.parent / f".{path.name}.{what}-{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# kinds
# --------------------------------------------------------------------------------------------


def _zarr_kind(path: Path):
    try:
        doc = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError):
        return None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    kind = attrs.get("kind") if isinstance(attrs, dict) else None
    if not isinstance(kind, str) or not kind.startswith("dask_rec."):
        return None
    return "store" if kind == "dask_rec.interactions" else "model"


def directory_kind(path) -> str | None:
    """What dask_rec wrote at ``path`` (one of :data:`KINDS`), ``"empty"``, or None (foreign or mixed)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    entries = list(path.iterdir())
    if not entries:
        return "empty"
    names = {e.name for e in entries}
    if "zarr.json" in names:
        kind = _zarr_kind(path)
        allowed_files = {"zarr.json", "items.parquet"} if kind == "model" else {"zarr.json"}
        for e in entries:
            if e.is_dir() and not e.is_symlink() and (e / "zarr.json").is_file():
                continue
            if e.is_file() and e.name in allowed_files:
                continue
            return None
        return kind
    if all(e.is_file() and _PART.fullmatch(e.name) for e in entries):
        return "recommendations" if all(len(n) == len("part-000000.parquet") for n in names) else None
    if "_generator.json" in names and all(e.is_file() and (e.name == "_generator.json" or _PART.fullmatch(e.name))
                                          for e in entries):
        return "synthetic"
    return None


def _kind_of(kind: str | None, marker: str | None) -> str:
    if kind is None:
        kind = _MARKERS.get(marker or "store")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r} (marker={marker!r})")
    return kind


def check_target(path, overwrite: bool, marker: str | None = None, *, kind: str | None = None) -> None:
    """Raise ``FileExistsError`` when ``path`` exists and may not be replaced by a ``kind`` directory."""
    path = Path(path)
    kind = _kind_of(kind, marker)
    _check_parent(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    found = directory_kind(path)
    if found in (kind, "empty"):
        return
    if found is not None:
        why = f"holds {_KIND_NAMES[found]}"
    elif not path.is_dir():
        why = "is not a directory"
    elif _zarr_kind(path) is not None:
        why = f"holds {_KIND_NAMES[_zarr_kind(path)]} and files dask_rec did not write"
    else:
        why = "holds files dask_rec did not write"
    raise FileExistsError(f"{path} {why}, not {_KIND_NAMES[kind]}; refusing to overwrite it")


# --------------------------------------------------------------------------------------------
# stale temporaries
# --------------------------------------------------------------------------------------------


def _process_started(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid`` from /proc, or None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _owner_gone(pid: int, temp: Path) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, someone else's
    started = _process_started(pid)
    try:
        modified = temp.lstat().st_mtime
    except OSError:
        return False
    return started is not None and started > modified + 1.0  # the pid was reused after the last write


def sweep_stale(path) -> list[Path]:
    """Remove the stale temporaries of earlier runs on ``path`` (see the module docstring); return them."""
    path = Path(path)
    removed, legacy = [], []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for temp in siblings:
        m = _TEMP.fullmatch(temp.name)
        if not m or m["name"] != path.name or not temp.is_dir():
            continue
        if m["pid"] is None:
            legacy.append(temp)
            continue
        if m["host"] != _host_tag() or not _owner_gone(int(m["pid"]), temp):
            continue
        if m["what"] == "old" and not path.exists():
            os.rename(temp, path)
            logger.warning("restored %s from %s (a run was killed while replacing it)", path, temp.name)
            continue
        shutil.rmtree(temp, ignore_errors=True)
        removed.append(temp)
        logger.warning("removed %s, left by a killed run (process %s)", temp, m["pid"])
    if legacy:
        warnings.warn(f"{len(legacy)} temporary director{'y' if len(legacy) == 1 else 'ies'} of an earlier "
                      f"dask_rec beside {path}, probably left by a killed run; if no run is writing {path.name}, "
                      f"remove with: rm -rf {' '.join(str(t) for t in legacy)}", stacklevel=3)
    return removed


# --------------------------------------------------------------------------------------------
# the atomic write
# --------------------------------------------------------------------------------------------


def _check_parent(path: Path) -> None:
    """Raise a one-line ``ValueError`` when an existing ancestor of ``path`` is not a directory."""
    for ancestor in (path.parent, *path.parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot create {path}: {ancestor} is a file, not a directory")
            return


def _prepare_parent(path: Path) -> None:
    _check_parent(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_directory(path, overwrite: bool = False, marker: str | None = None, *, kind: str | None = None):
    """Yield a fresh sibling temporary directory that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The target directory.
    overwrite : bool
        Replace an existing ``path``, only if it is empty or of the same ``kind`` (see the module
        docstring). The old one is moved aside, the new one renamed in, and the old one deleted last.
    marker : str, optional
        Earlier spelling of ``kind`` (``"store"``, ``"zarr.json"`` for a model,
        ``"part-000000.parquet"``, ``"_generator.json"``).
    kind : {"store", "model", "recommendations", "synthetic"}
        What is written (default ``"store"``).

    On any error the temporary directory is deleted and ``path`` is left as it was. Stale
    temporaries of earlier killed runs on ``path`` are swept first (:func:`sweep_stale`).
    """
    kind = _kind_of(kind, marker)
    path = local_path(path)
    _prepare_parent(path)
    sweep_stale(path)
    check_target(path, overwrite, kind=kind)
    tmp = _temp_name(path, "tmp")
    try:
        tmp.mkdir()
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        _commit(tmp, path, overwrite, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, path: Path, overwrite: bool, kind: str) -> None:
    if path.exists():
        check_target(path, overwrite, kind=kind)
        old = _temp_name(path, "old")
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, path)
    except OSError as exc:
        if path.exists():
            raise FileExistsError(f"{path} appeared while it was being written; pass overwrite=True to replace it") from exc
        raise
