"""Issue 13, findings 4, 6, 7 and 11: item vocabularies checked when serving, --workers bounded,
repeated users recommended once, the recommend summary says what was written, evaluate --help."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conformance import small_interactions
from dask_rec.cli import main
from dask_rec.cluster import check_workers, client_context
from dask_rec.exceptions import DaskRecWarning
from dask_rec.data.item_alignment import remap_columns
from dask_rec.models.itemknn import ItemKNN
from dask_rec.data.store import open_store
from dask_rec.data.store_writer import write_store

X = small_interactions(n_users=120, n_items=30)
ITEMS = np.arange(30) * 10
USERS = np.arange(120) + 500


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A store, an ItemKNN fitted on it (with its item IDs) and saved."""
    root = tmp_path_factory.mktemp("served")
    store = write_store(root / "s.zarr", X, USERS, ITEMS, rows_per_block=40)
    model = ItemKNN().fit(store.path)  # from the store: keeps its item vocabulary
    model.save(root / "m.zarr")
    return root, store, model


# ---------------------------------------------------------------------------- 4: item vocabularies


@pytest.mark.parametrize("items, expected", [
    (ITEMS + 1000, "shares no item ID with the model: the store has 30 integer IDs (1000, 1010, 1020, ...), "
                   "the model 30 integer IDs (0, 10, 20, ...)"),
    (np.array([str(i) for i in ITEMS]), "the store has 30 string IDs"),
])
def test_a_store_of_other_items_is_refused(served, tmp_path, capsys, items, expected):
    root, _, model = served
    other = write_store(tmp_path / "other.zarr", X, USERS, np.sort(items))
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        model.recommend_users(other, k=5)
    assert main(["recommend", str(root / "m.zarr"), str(other.path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "shares no item ID with the model" in err
    assert not (tmp_path / "out").exists()


def test_overlapping_item_ids_are_mapped_by_id(served, tmp_path, rng):
    _, _, model = served
    # the store knows the model's items 5.. and two items the model never saw (IDs 1 and 9999)
    kept = np.arange(5, 30)
    store_items = np.concatenate([[1], ITEMS[kept], [9999]])
    Xc = np.zeros((120, store_items.size), np.float32)
    Xc[:, 1:-1] = X[:, kept].toarray()
    Xc[:, [0, -1]] = rng.random((120, 2)) < 0.3
    other = write_store(tmp_path / "other.zarr", Xc, USERS, store_items, rows_per_block=50)
    got = model.recommend_users(other, k=6)
    Xm = np.zeros((120, 30), np.float32)  # oracle: the same histories in the model's columns
    Xm[:, kept] = Xc[:, 1:-1]
    ids, scores = model.recommend(Xm, 6)
    rows, cols = np.nonzero(ids >= 0)
    want = pd.DataFrame({"user_id": USERS[rows], "item_id": ITEMS[ids[rows, cols]], "score": scores[rows, cols]})
    got = got.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["user_id", "item_id", "score"]], want, check_dtype=False)


def test_remap_columns_oracle(rng):
    A = (rng.random((7, 6)) < 0.5).astype(np.float32) * rng.random((7, 6)).astype(np.float32)
    mapping = np.array([3, -1, 0, 4, -1, 1])
    want = np.zeros((7, 5), np.float32)
    for j, m in enumerate(mapping):
        if m >= 0:
            want[:, m] = A[:, j]
    import scipy.sparse as sp

    got = remap_columns(sp.csr_matrix(A), mapping, 5)
    np.testing.assert_array_equal(got.toarray(), want)
    assert got.has_sorted_indices


# ---------------------------------------------------------------------------- 6: --workers


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_cli_workers_below_one_rejected(served, tmp_path, capsys, value):
    root, store, _ = served
    with pytest.raises(SystemExit) as info:
        main(["recommend", str(root / "m.zarr"), str(store.path), str(tmp_path / "o"), "--workers", value])
    assert info.value.code == 2
    assert "argument --workers: must be an integer >= 1" in capsys.readouterr().err


def test_cli_workers_far_above_the_machine_refused_before_starting(served, tmp_path, capsys):
    root, store, _ = served
    assert main(["recommend", str(root / "m.zarr"), str(store.path), str(tmp_path / "o"), "--workers", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--workers 1000 is far above this machine" in err
    assert "use --scheduler for a bigger cluster" in err


def test_check_workers_bounds():
    gib = 2**30
    assert check_workers(8, cores=2, memory=24 * gib) == 8
    with pytest.raises(ValueError, match=r"at most 8 local workers \(4 per core"):
        check_workers(9, cores=2, memory=24 * gib)
    with pytest.raises(ValueError, match="at most 2 local workers"):
        check_workers(3, cores=16, memory=1 * gib)  # 512 MiB each
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            check_workers(bad)
    with pytest.raises(ValueError, match="must be an integer >= 1; got 0"):
        with client_context(n_workers=0):
            pass


# ---------------------------------------------------------------------------- 7: users, unknown, -k


def test_repeated_users_are_recommended_once(served):
    _, store, model = served
    with pytest.warns(DaskRecWarning, match=r"users lists 1 ID\(s\) more than once \(e.g. \[501\]\)"):
        frame = model.recommend_users(store, k=4, users=[501, 502, 501])
    assert frame.groupby("user_id")["rank"].apply(list).to_dict() == {501: [1, 2, 3, 4], 502: [1, 2, 3, 4]}
    frame_histories = pd.DataFrame({"user_id": [7, 7, 8], "item_id": [0, 10, 20]})
    with pytest.warns(DaskRecWarning, match="more than once"):
        got = model.recommend_users(frame_histories, k=3, users=[8, 7, 8])
    assert got["user_id"].tolist() == [8, 8, 8, 7, 7, 7]


def test_cli_summary_is_truthful(served, tmp_path, capsys):
    root, store, _ = served
    users = tmp_path / "users.txt"
    users.write_text("501\n502\n501\n")
    out = tmp_path / "dups"
    assert main(["recommend", str(root / "m.zarr"), str(store.path), str(out), "--users", str(users), "-k", "5",
                 "--workers", "1"]) == 0
    frame = pd.read_parquet(out)
    assert sorted(frame["user_id"].unique()) == [501, 502] and len(frame) == 10
    line = capsys.readouterr().out
    assert "recommended 5 items for 2 users in" in line and ": 10 rows; written to" in line

    users.write_text("1\n2\n")  # only unknown users
    out = tmp_path / "none"
    assert main(["recommend", str(root / "m.zarr"), str(store.path), str(out), "--users", str(users),
                 "--unknown", "drop", "--workers", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("no recommendations: none of the 2 requested users is in the store "
                           "(2 unknown user(s) dropped)")
    assert len(pd.read_parquet(out)) == 0

    out = tmp_path / "bigk"
    assert main(["recommend", str(root / "m.zarr"), str(store.path), str(out), "-k", "100000",
                 "--workers", "1"]) == 0
    line = capsys.readouterr().out.strip()
    frame = pd.read_parquet(out)
    assert "recommended 30 items for 120 users in" in line and f": {len(frame)} rows (" in line
    assert "-k 100000 exceeds the model's 30 items: at most 30 per user" in line
    assert frame.groupby("user_id").size().max() <= 30


# ---------------------------------------------------------------------------- 11: evaluate --help


def test_evaluate_help_shows_one_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "20%" in out and "%%" not in out
