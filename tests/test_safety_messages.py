"""Issue 13, finding 10: reading errors of an interaction log are one line naming the file, line and column."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dask_rec.data.ingestion import ingest


def _csv(path, n_rows: int, bad_row: int | None = None, ragged_row: int | None = None):
    lines = ["user_id,item_id"]
    for i in range(n_rows):
        user, item = f"u{i % 97}", f"i{i % 31}"
        if i == bad_row:
            item = "caf\xe9"  # written as latin-1 below: not UTF-8
        if i == ragged_row:
            item += ",extra"
        lines.append(f"{user},{item}")
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def _one_line(info, *parts):
    text = str(info.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text


def test_non_utf8_deep_in_a_multi_block_csv_names_file_line_column(tmp_path, local_client):
    path = _csv(tmp_path / "log.csv", 3000, bad_row=2500)
    offset = path.read_bytes().index(b"caf\xe9") + 3
    with pytest.raises(ValueError) as info:
        ingest(path, tmp_path / "s.zarr", client=local_client, read_options={"blocksize": 4000})
    _one_line(info, f"{path}: not UTF-8 at byte {offset} (line 2502, column 'item_id')")
    assert not (tmp_path / "s.zarr").exists() and not list(tmp_path.glob(".s.zarr*"))


def test_ragged_csv_names_the_line(tmp_path, local_client):
    path = _csv(tmp_path / "log.csv", 3000, ragged_row=2000)
    with pytest.raises(ValueError) as info:
        ingest(path, tmp_path / "s.zarr", client=local_client, read_options={"blocksize": 4000})
    _one_line(info, f"{path}: line 2002 has 3 fields where the header has 2 (separator ',')")


@pytest.mark.parametrize("content, expected", [(b"", "Parquet file size is 0 bytes"),
                                               (b"PAR1" + bytes(40) + b"PAR1", "not a readable Parquet file")])
def test_bad_parquet_file_among_good_ones_is_named(tmp_path, local_client, content, expected):
    source = tmp_path / "log"
    source.mkdir()
    for i in range(3):
        pd.DataFrame({"user_id": np.arange(10) + i, "item_id": np.arange(10) % 4}).to_parquet(source / f"p{i}.parquet")
    (source / "p1.parquet").write_bytes(content)
    with pytest.raises(ValueError) as info:
        ingest(source, tmp_path / "s.zarr", client=local_client)
    _one_line(info, f"{source / 'p1.parquet'}: not a readable Parquet file", expected)


def test_cli_error_is_one_line_without_warnings(tmp_path):
    path = _csv(tmp_path / "log.csv", 50, bad_row=10)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-m", "dask_rec.cli", "ingest", str(path), str(tmp_path / "s.zarr"),
                           "--workers", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "Warning" in line]
    assert errors == [f"dask-rec ingest: error: {path}: not UTF-8 at byte {path.read_bytes().index(bytes([0xe9]))} "
                      "(line 12, column 'item_id'); re-encode the file as UTF-8"]
    assert "Traceback" not in proc.stderr


def test_target_under_a_regular_file_refused_before_reading(tmp_path, local_client):
    (tmp_path / "regfile").write_text("x")
    with pytest.raises(ValueError) as info:  # the source does not even exist: the target is checked first
        ingest(tmp_path / "absent.csv", tmp_path / "regfile" / "sub", client=local_client)
    _one_line(info, f"cannot create {tmp_path / 'regfile' / 'sub'}: {tmp_path / 'regfile'} is a file, not a directory")
