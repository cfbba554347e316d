"""Every tunable the code reads is declared once in dask_rec.yaml, and every declared one is read."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PACKAGE = Path(__file__).resolve().parents[1] / "dask_rec"


def _declared() -> set:
    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return set(walk(yaml.safe_load((PACKAGE / "dask_rec.yaml").read_text())["dask_rec"], ""))


def _read_by_code() -> dict:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for key in re.findall(r"""settings\.get\(\s*["']([\w.-]+)["']""", text):
            found.setdefault(key, path.name)
        for key in re.findall(r"""dask\.config\.get\(\s*["']dask_rec\.([\w.-]+)["']""", text):
            found.setdefault(f"RAW:{key}", path.name)
    return found


def test_every_key_the_code_reads_is_declared_and_read_through_settings():
    read = _read_by_code()
    raw = {k: v for k, v in read.items() if k.startswith("RAW:")}
    assert not raw, f"read with dask.config.get instead of dask_rec.settings.get: {raw}"
    missing = {k: v for k, v in read.items() if k not in _declared()}
    assert not missing, f"keys read by the code but not declared in dask_rec.yaml: {missing}"


def test_every_declared_key_is_read_somewhere():
    unused = _declared() - set(_read_by_code())
    assert not unused, f"keys declared in dask_rec.yaml that no code reads: {sorted(unused)}"


def test_the_key_finder_sees_a_read():
    assert "umr.block-columns" in _read_by_code()  # the scan itself works
