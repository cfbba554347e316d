"""Ingestion on Dask: round trips against pandas + scipy, value handling, filtering, bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.data.ingestion import ingest
from dask_rec.kernels.interactions import dedup_entries
from dask_rec.data.store import open_store
from dask_rec.data.synthetic import make_interactions
from dask_rec.data.vocabulary import Vocabulary


# ---------------------------------------------------------------------------------------------
# the obviously-correct reference: pandas + scipy
# ---------------------------------------------------------------------------------------------

def iterated_filter(pairs: pd.DataFrame, u: str, i: str, min_u: int, min_i: int) -> pd.DataFrame:
    while True:
        n = len(pairs)
        pairs = pairs[pairs.groupby(u)[i].transform("size") >= min_u]
        pairs = pairs[pairs.groupby(i)[u].transform("size") >= min_i]
        if len(pairs) == n:
            return pairs


def reference(df, u="user_id", i="item_id", value_col=None, duplicates="sum", ts_col=None, min_u=1, min_i=1):
    """(matrix, user vocabulary, item vocabulary) built directly with pandas and scipy."""
    if value_col is None:
        pairs = df[[u, i]].drop_duplicates().assign(value=1.0)
    else:
        frame = df if ts_col is None or duplicates != "last" else df.sort_values(ts_col, kind="stable")
        agg = {"sum": "sum", "max": "max", "last": "last"}[duplicates]
        pairs = frame.groupby([u, i], sort=False)[value_col].agg(agg).rename("value").reset_index()
    pairs = iterated_filter(pairs, u, i, min_u, min_i)
    users, items = Vocabulary(pairs[u]), Vocabulary(pairs[i])
    X = sp.csr_matrix((pairs["value"].to_numpy(np.float32), (users.index(pairs[u]), items.index(pairs[i]))),
                      shape=(len(users), len(items)))
    return X, users, items


def assert_store_matches(store, X, users, items):
    assert store.shape == X.shape and store.nnz == X.nnz
    assert store.user_vocabulary == users
    assert store.item_vocabulary == items
    Y = store.to_scipy()
    assert Y.dtype == np.float32 and Y.has_sorted_indices
    assert (Y != X).nnz == 0
    assert np.array_equal(store.item_counts, X.getnnz(axis=0))
    blocks = list(store.iter_blocks())
    assert len(blocks) == store.n_blocks and sum(b.shape[0] for b in blocks) == X.shape[0]
    assert (sp.vstack(blocks) != X).nnz == 0


def leftovers(parent):
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


@pytest.fixture(params=["1 worker", "2 workers"])
def client(request, single_worker_client, local_client):
    return single_worker_client if request.param == "1 worker" else local_client


# ---------------------------------------------------------------------------------------------
# round trips on the shared datasets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows_per_block", [None, 37], ids=["1 block", "many blocks"])
def test_ml100k_round_trip(tmp_path, dataset_path, load_dataset, client, rows_per_block):
    df = load_dataset("ml-100k")
    s = ingest(dataset_path("ml-100k"), tmp_path / "s.zarr", client=client, rows_per_block=rows_per_block)
    assert_store_matches(s, *reference(df))
    assert s.n_blocks == (1 if rows_per_block is None else -(-943 // 37))
    assert s.metadata["dropped"]["duplicate_rows"] == 0 and s.metadata["source_rows"] == 100_000


@pytest.mark.parametrize("name", ["ml-latest-small", "ciao", "yelp2020"])
def test_dataset_round_trip_many_blocks(tmp_path, dataset_path, load_dataset, local_client, name):
    df = load_dataset(name)
    s = ingest(dataset_path(name), tmp_path / "s.zarr", client=local_client, block_nnz=20_000)
    X, users, items = reference(df)
    assert_store_matches(s, X, users, items)
    sizes = np.diff(s.metadata["block_bounds"])
    assert s.n_blocks >= X.nnz // 20_000 and sizes.min() >= 1


@pytest.mark.parametrize("name", ["ml-100k", "ciao"])
def test_dataset_values_round_trip(tmp_path, dataset_path, load_dataset, local_client, name):
    df = load_dataset(name)
    s = ingest(dataset_path(name), tmp_path / "s.zarr", value_col="rating", client=local_client, rows_per_block=500)
    assert_store_matches(s, *reference(df, value_col="rating"))
    assert s.metadata["values"]["binarized"] is False


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gowalla", "amazon-book-kgat"])
def test_large_dataset_round_trip(tmp_path, dataset_path, load_dataset, local_client, name):
    df = load_dataset(name)
    s = ingest(dataset_path(name), tmp_path / "s.zarr", client=local_client)
    assert_store_matches(s, *reference(df))


# ---------------------------------------------------------------------------------------------
# values and duplicates
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def log_with_duplicates():
    df = make_interactions(300, 80, 20_000, n_groups=4, seed=3)  # draws with replacement: many duplicates
    rng = np.random.default_rng(0)
    df["rating"] = rng.integers(1, 11, len(df)) / 2
    df["timestamp"] = rng.integers(0, 50, len(df))  # many ties
    return df


@pytest.mark.parametrize("duplicates", ["sum", "max", "last"])
def test_duplicates(tmp_path, local_client, log_with_duplicates, duplicates):
    df = log_with_duplicates
    s = ingest(df, tmp_path / "s.zarr", value_col="rating", timestamp_col="timestamp", duplicates=duplicates,
               client=local_client, rows_per_block=50)
    X, users, items = reference(df, value_col="rating", duplicates=duplicates, ts_col="timestamp")
    assert_store_matches(s, X, users, items)
    assert s.metadata["dropped"]["duplicate_rows"] == len(df) - X.nnz > 1000


def test_last_without_timestamp_is_file_order(tmp_path, local_client, log_with_duplicates):
    df = log_with_duplicates
    src = tmp_path / "log"
    src.mkdir()
    for k, a in enumerate(range(0, len(df), 7000)):  # three files, read in path order
        pq.write_table(pa.Table.from_pandas(df.iloc[a:a + 7000], preserve_index=False), src / f"part-{k}.parquet")
    s = ingest(src, tmp_path / "s.zarr", value_col="rating", duplicates="last", client=local_client)
    assert_store_matches(s, *reference(df, value_col="rating", duplicates="last"))
    glob_store = ingest(str(src / "part-*.parquet"), tmp_path / "g.zarr", value_col="rating", duplicates="last",
                        client=local_client)
    assert (glob_store.to_scipy() != s.to_scipy()).nnz == 0


def test_binarize_with_value_column(tmp_path, local_client, log_with_duplicates):
    s = ingest(log_with_duplicates, tmp_path / "s.zarr", value_col="rating", binarize=True, client=local_client)
    assert_store_matches(s, *reference(log_with_duplicates))
    assert s.metadata["values"]["binarized"] is True


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(0, 8), st.integers(0, 3)), max_size=40),
       st.sampled_from(["sum", "max", "last", "binarize"]), st.booleans())
def test_dedup_kernel_matches_python(entries, duplicates, with_ts):
    """The vectorised duplicate merge against an obviously-correct dict-based twin."""
    rows = np.array([e[0] for e in entries], dtype=np.int32)
    items = np.array([e[1] for e in entries], dtype=np.int32)
    values = np.array([e[2] / 2 for e in entries], dtype=np.float64)
    ts = np.array([e[3] for e in entries], dtype=np.int64) if with_ts else None
    expected = {}
    for k, (r, i, v, t) in enumerate(entries):
        v = v / 2
        order = (t if with_ts else 0, k)
        if (r, i) not in expected:
            expected[(r, i)] = (v, order)
        elif duplicates == "sum":
            expected[(r, i)] = (expected[(r, i)][0] + v, order)
        elif duplicates == "max":
            expected[(r, i)] = (max(expected[(r, i)][0], v), order)
        elif duplicates == "last" and order >= expected[(r, i)][1]:
            expected[(r, i)] = (v, order)
    got_r, got_i, got_v = dedup_entries(rows, items, None if duplicates == "binarize" else values,
                                        ts if duplicates == "last" else None, 6, duplicates)
    keys = sorted(expected)
    assert list(zip(got_r.tolist(), got_i.tolist())) == keys
    if duplicates != "binarize":
        assert got_v.dtype == np.float32
        assert got_v.tolist() == [np.float32(expected[k][0]) for k in keys]


# ---------------------------------------------------------------------------------------------
# filtering
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("min_u,min_i", [(5, 1), (1, 10), (8, 12), (20, 30)])
def test_min_count_filtering_matches_pandas(tmp_path, dataset_path, load_dataset, local_client, min_u, min_i):
    df = load_dataset("ciao")
    s = ingest(dataset_path("ciao"), tmp_path / "s.zarr", client=local_client, min_user_interactions=min_u,
               min_item_interactions=min_i, block_nnz=10_000)
    X, users, items = reference(df, min_u=min_u, min_i=min_i)
    assert_store_matches(s, X, users, items)
    assert X.getnnz(axis=1).min() >= min_u and X.getnnz(axis=0).min() >= min_i
    dropped = s.metadata["dropped"]
    assert dropped["filtered_users"] == df.user_id.nunique() - len(users)
    assert dropped["filtered_items"] == df.item_id.nunique() - len(items)


def test_filtering_with_values(tmp_path, local_client, log_with_duplicates):
    df = log_with_duplicates
    s = ingest(df, tmp_path / "s.zarr", value_col="rating", client=local_client, min_user_interactions=15,
               min_item_interactions=40)
    X, users, items = reference(df, value_col="rating", min_u=15, min_i=40)
    assert 0 < len(users) < df.user_id.nunique() and 0 < len(items) < df.item_id.nunique()
    assert_store_matches(s, X, users, items)


def test_empty_after_filtering(tmp_path, local_client, log_with_duplicates):
    with pytest.raises(ValueError, match="no interactions left after filtering with min_user_interactions=1000000"):
        ingest(log_with_duplicates, tmp_path / "s.zarr", client=local_client, min_user_interactions=10**6)
    assert leftovers(tmp_path) == [] and not (tmp_path / "s.zarr").exists()


# ---------------------------------------------------------------------------------------------
# sources and ID types
# ---------------------------------------------------------------------------------------------

def test_string_ids(tmp_path, load_dataset, local_client):
    df = load_dataset("ml-100k")
    df = df.assign(user_id="u" + df.user_id.astype(str), item_id="item-" + df.item_id.astype(str))
    s = ingest(df, tmp_path / "s.zarr", client=local_client, rows_per_block=100)
    X, users, items = reference(df)
    assert_store_matches(s, X, users, items)
    assert s.user_vocabulary.kind == "str" and s.user_vocabulary.ids[:3].tolist() == ["u1", "u10", "u100"]


def test_csv_sources(tmp_path, load_dataset, local_client):
    df = load_dataset("ml-100k")
    df.to_csv(tmp_path / "log.csv", index=False)
    s = ingest(tmp_path / "log.csv", tmp_path / "s.zarr", value_col="rating", client=local_client)
    assert s.user_vocabulary.kind == "int"  # integer text stays integer
    assert_store_matches(s, *reference(df, value_col="rating"))
    mixed = df.assign(item_id=np.where(df.index % 1000 == 0, "x" + df.item_id.astype(str), df.item_id.astype(str)))
    mixed.to_csv(tmp_path / "mixed.tsv", sep="\t", index=False)
    s = ingest(tmp_path / "mixed.tsv", tmp_path / "m.zarr", client=local_client, read_options={"sep": "\t"})
    assert s.item_vocabulary.kind == "str"  # some IDs are not integers: all are text
    assert_store_matches(s, *reference(mixed.assign(user_id=df.user_id)))


def test_arrow_and_dask_sources(tmp_path, load_dataset, local_client):
    import dask.dataframe as dd

    df = load_dataset("ml-latest-small")
    expected = reference(df, value_col="rating")
    s = ingest(pa.Table.from_pandas(df), tmp_path / "a.zarr", value_col="rating", client=local_client)
    assert_store_matches(s, *expected)
    s = ingest(dd.from_pandas(df, npartitions=5), tmp_path / "d.zarr", value_col="rating", client=local_client)
    assert_store_matches(s, *expected)


def test_uses_the_current_client(tmp_path, load_dataset, local_client):
    df = load_dataset("ml-100k")
    with local_client.as_current():
        s = ingest(df, tmp_path / "s.zarr")
    assert s.nnz == 100_000


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

SMALL = pd.DataFrame({"user_id": [1, 2, 2, 3], "item_id": [10, 10, 20, 30], "rating": [1.0, 2.0, 3.0, 4.0]})


def test_missing_columns_named(tmp_path, local_client):
    with pytest.raises(ValueError, match=r"column 'uid' not found in the DataFrame; available columns: "
                                         r"'user_id', 'item_id', 'rating'"):
        ingest(SMALL, tmp_path / "s.zarr", user_col="uid", client=local_client)
    SMALL.to_parquet(tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"columns 'score', 'ts' not found in .*log\.parquet"):
        ingest(tmp_path / "log.parquet", tmp_path / "s.zarr", value_col="score", timestamp_col="ts",
               duplicates="last", client=local_client)


def test_missing_source(tmp_path, local_client):
    with pytest.raises(FileNotFoundError, match="no input found"):
        ingest(tmp_path / "nope.parquet", tmp_path / "s.zarr", client=local_client)
    with pytest.raises(FileNotFoundError, match="no input found"):
        ingest(str(tmp_path / "nothing-*.parquet"), tmp_path / "s.zarr", client=local_client)


def test_null_ids(tmp_path, local_client):
    df = SMALL.astype({"item_id": "float64"})
    df.loc[[0, 2], "item_id"] = np.nan
    with pytest.raises(ValueError, match=r"column 'item_id' has 2 null IDs.*on_invalid='drop'"):
        ingest(df, tmp_path / "s.zarr", client=local_client)
    s = ingest(df, tmp_path / "s.zarr", client=local_client, on_invalid="drop")
    assert s.metadata["dropped"]["null_ids"] == 2 and s.nnz == 2
    assert s.item_vocabulary.ids.tolist() == [10, 30] and s.user_vocabulary.ids.tolist() == [2, 3]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_invalid_values(tmp_path, local_client, bad):
    df = SMALL.copy()
    df.loc[1, "rating"] = bad
    with pytest.raises(ValueError, match=r"value column 'rating' has 1 invalid values .*e\.g\. "):
        ingest(df, tmp_path / "s.zarr", value_col="rating", client=local_client)
    s = ingest(df, tmp_path / "s.zarr", value_col="rating", client=local_client, on_invalid="drop")
    assert s.metadata["dropped"]["invalid_values"] == 1 and s.nnz == 3


def test_empty_source(tmp_path, local_client):
    empty = SMALL.iloc[:0]
    with pytest.raises(ValueError, match="holds no interactions"):
        ingest(empty, tmp_path / "s.zarr", client=local_client)
    empty.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="holds no interactions"):
        ingest(tmp_path / "empty.parquet", tmp_path / "s.zarr", client=local_client)
    assert leftovers(tmp_path) == []


def test_mixed_id_types(tmp_path, local_client):
    df = SMALL.assign(user_id=pd.Series([1, "a", 2, "b"], dtype=object))
    with pytest.raises(TypeError, match=r"ID column 'user_id' mix integers and strings"):
        ingest(df, tmp_path / "s.zarr", client=local_client)
    with pytest.raises(TypeError, match=r"ID column 'item_id' holds non-integral numbers, e\.g\. 10\.5"):
        ingest(SMALL.assign(item_id=[10.5, 1.0, 2.0, 3.0]), tmp_path / "s.zarr", client=local_client)


def test_bad_options(tmp_path, local_client):
    with pytest.raises(ValueError, match="duplicates must be one of sum, max, last"):
        ingest(SMALL, tmp_path / "s.zarr", value_col="rating", duplicates="first", client=local_client)
    with pytest.raises(ValueError, match="min_item_interactions must be an integer >= 1"):
        ingest(SMALL, tmp_path / "s.zarr", min_item_interactions=0, client=local_client)
    with pytest.raises(ValueError, match="binarize=False needs a value_col"):
        ingest(SMALL, tmp_path / "s.zarr", binarize=False, client=local_client)
    with pytest.raises(TypeError, match="source must be"):
        ingest(42, tmp_path / "s.zarr", client=local_client)


def test_existing_store_kept_on_failure_and_replaced_with_overwrite(tmp_path, local_client, load_dataset):
    target = tmp_path / "s.zarr"
    first = ingest(SMALL, target, client=local_client)
    with pytest.raises(FileExistsError, match=r"s\.zarr already exists; pass overwrite=True"):
        ingest(SMALL, target, client=local_client)
    bad = SMALL.astype({"user_id": "float64"})
    bad.loc[0, "user_id"] = np.nan
    with pytest.raises(ValueError, match="null IDs"):
        ingest(bad, target, client=local_client, overwrite=True)
    assert (open_store(target).to_scipy() != first.to_scipy()).nnz == 0
    assert leftovers(tmp_path) == []
    s = ingest(load_dataset("ml-100k"), target, client=local_client, overwrite=True)
    assert s.nnz == 100_000 and leftovers(tmp_path) == []


def test_failure_after_writing_started_cleans_up(tmp_path, local_client):
    """A source that changes between passes fails in pass 2, after scratch files were written."""
    import dask.dataframe as dd

    counter = tmp_path / "calls"
    counter.write_text("0")

    def read(path):  # pickled by value: runs in the worker processes
        calls = int(open(path).read())
        open(path, "w").write(str(calls + 1))
        offset = 0 if calls == 0 else 1000
        return pd.DataFrame({"user_id": np.arange(10) + offset, "item_id": np.arange(10)})

    meta = pd.DataFrame({"user_id": np.zeros(0, np.int64), "item_id": np.zeros(0, np.int64)})
    source = dd.from_map(read, [str(counter)], meta=meta, enforce_metadata=False)
    with pytest.raises(RuntimeError, match="source changed"):
        ingest(source, tmp_path / "s.zarr", client=local_client)
    assert leftovers(tmp_path) == [] and not (tmp_path / "s.zarr").exists()


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def test_cli_ingest(tmp_path, dataset_path, local_client, capsys):
    from dask_rec.cli import main

    address = local_client.scheduler.address
    out = tmp_path / "s.zarr"
    code = main(["ingest", str(dataset_path("ml-100k")), str(out), "--value-col", "rating", "--keep-values",
                 "--min-item-interactions", "5", "--rows-per-block", "200", "--scheduler", address])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "943 users" in line and "blocks" in line and "dropped" in line
    s = open_store(out)
    assert s.metadata["values"]["binarized"] is False and s.n_blocks == 5
    assert main(["ingest", str(dataset_path("ml-100k")), str(out), "--scheduler", address]) == 2
    assert "--overwrite" in capsys.readouterr().err
