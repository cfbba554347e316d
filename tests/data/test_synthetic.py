"""The synthetic log generator: determinism, sizes, heavy tails and real planted structure."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dask_rec.data.synthetic import generate_interactions, make_interactions, planted_groups


@pytest.fixture(scope="module")
def log():
    return make_interactions(2000, 600, 60_000, n_groups=6, seed=7)


def test_columns_and_types(log):
    assert list(log.columns) == ["user_id", "item_id", "timestamp"]
    assert all(dtype == np.int64 for dtype in log.dtypes)
    assert log.user_id.between(0, 1999).all() and log.item_id.between(0, 599).all()


def test_deterministic_for_a_seed(log):
    again = make_interactions(2000, 600, 60_000, n_groups=6, seed=7)
    pd.testing.assert_frame_equal(log, again)
    other = make_interactions(2000, 600, 60_000, n_groups=6, seed=8)
    assert not log.equals(other)


def test_sizes_close_to_request(log):
    assert abs(len(log) - 60_000) < 0.03 * 60_000
    assert log.user_id.nunique() == 2000  # every user has at least one interaction
    assert log.item_id.nunique() > 0.9 * 600


def test_popularity_and_activity_are_heavy_tailed(log):
    item_counts = np.sort(log.item_id.value_counts().to_numpy())[::-1]
    top = item_counts[: len(item_counts) // 100 or 1].sum() / item_counts.sum()
    assert top > 0.10  # the top 1% of items hold over 10x their share
    assert item_counts[0] > 20 * np.median(item_counts)
    activity = log.user_id.value_counts().to_numpy()
    assert activity.max() > 10 * np.median(activity)


def binary_matrix(df, n_users, n_items):
    X = sp.csr_matrix((np.ones(len(df)), (df.user_id, df.item_id)), shape=(n_users, n_items))
    X.data[:] = 1.0
    return X


def test_users_of_a_group_share_far_more_items(log):
    user_group, item_group = planted_groups(2000, 600, 6, seed=7)
    assert (item_group[log.item_id] == user_group[log.user_id]).mean() > 0.7
    X = binary_matrix(log, 2000, 600)
    X = X[np.asarray(X.sum(axis=1)).ravel() >= 10]
    groups = user_group[np.flatnonzero(np.asarray(binary_matrix(log, 2000, 600).sum(axis=1)).ravel() >= 10)]
    norms = np.sqrt(np.asarray(X.sum(axis=1)).ravel())
    cosine = (X @ X.T).toarray() / np.outer(norms, norms)
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    different = groups[:, None] != groups[None, :]
    assert cosine[same].mean() > 2.5 * cosine[different].mean()


def test_item_item_model_beats_popularity():
    """EASE on a held-out item per user clearly beats a popularity ranking: the structure is learnable."""
    df = make_interactions(3000, 300, 90_000, n_groups=12, seed=11).drop_duplicates(["user_id", "item_id"])
    held = df.groupby("user_id").sample(n=1, random_state=1)
    train = df.drop(held.index)
    X = binary_matrix(train, 3000, 300).toarray()
    G = X.T @ X + 50.0 * np.eye(300)
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    users = held.user_id.to_numpy()
    scores = X[users] @ B
    popularity = np.tile(X.sum(axis=0), (len(users), 1)).astype(float)
    for s in (scores, popularity):
        s[X[users] > 0] = -np.inf
    target = held.item_id.to_numpy()

    def hit_rate(s):
        top = np.argsort(-s, axis=1)[:, :10]
        return (top == target[:, None]).any(axis=1).mean()

    assert hit_rate(scores) > 1.5 * hit_rate(popularity)


def test_files_equal_the_in_memory_log(tmp_path):
    path = generate_interactions(tmp_path / "log", 500, 200, 20_000, seed=3, rows_per_file=6000)
    files = sorted(f for f in os.listdir(path) if f.endswith(".parquet"))
    assert len(files) >= 3
    on_disk = pd.read_parquet(path)
    pd.testing.assert_frame_equal(on_disk, make_interactions(500, 200, 20_000, seed=3, rows_per_file=6000))
    info = json.loads((path / "_generator.json").read_text())
    assert info["rows"] == len(on_disk) and info["files"] == len(files) and info["seed"] == 3


def test_overwrite_rules(tmp_path):
    path = generate_interactions(tmp_path / "log", 50, 20, 500)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_interactions(path, 50, 20, 500)
    generate_interactions(path, 60, 20, 700, overwrite=True)
    assert pd.read_parquet(path).user_id.nunique() == 60
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_interactions(tmp_path / "mine", 50, 20, 500, overwrite=True)
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n] == []


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_users must be a positive integer"):
        make_interactions(0, 10, 10)
    with pytest.raises(ValueError, match="n_groups must be an integer in 1..n_items"):
        make_interactions(10, 10, 10, n_groups=11)
    with pytest.raises(ValueError, match="group_affinity"):
        make_interactions(10, 10, 10, group_affinity=1.5)


def test_generated_log_ingests(tmp_path, local_client):
    from dask_rec.data.ingestion import ingest

    path = generate_interactions(tmp_path / "log", 400, 150, 12_000, seed=5, rows_per_file=3000)
    s = ingest(path, tmp_path / "s.zarr", client=local_client, rows_per_block=64)
    df = pd.read_parquet(path)
    pairs = df[["user_id", "item_id"]].drop_duplicates()
    assert s.shape == (df.user_id.nunique(), df.item_id.nunique()) and s.nnz == len(pairs)
    assert s.metadata["dropped"]["duplicate_rows"] == len(df) - len(pairs)


def test_cli_generate(tmp_path, capsys):
    from dask_rec.cli import main

    out = tmp_path / "g"
    assert main(["generate", str(out), "--users", "100", "--items", "40", "--interactions", "3000",
                 "--seed", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert "interactions of 100 users and 40 items" in line
    assert len(pd.read_parquet(out)) == json.loads((out / "_generator.json").read_text())["rows"]
    assert main(["generate", str(out), "--users", "100"]) == 2
    assert "--overwrite" in capsys.readouterr().err
