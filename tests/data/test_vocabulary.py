"""Vocabulary: IDs <-> dense indices, unknown-ID policies, persistence."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.data.vocabulary import UnknownIDError, Vocabulary


def test_int_ids_sorted_and_deduplicated():
    v = Vocabulary(np.array([30, 10, 20, 10, 30]))
    assert len(v) == 3 and v.kind == "int"
    assert v.ids.dtype == np.int64
    assert v.ids.tolist() == [10, 20, 30]
    assert v.index([30, 10]).tolist() == [2, 0]
    assert v.index(20) == 1 and isinstance(v.index(20), int)
    assert v.id_of([2, 0]).tolist() == [30, 10]
    assert v.id_of(1) == 20


def test_string_ids_in_code_point_order():
    v = Vocabulary(["b", "a", "B", "é", "aa", "a"])
    assert v.kind == "str"
    assert v.ids.tolist() == sorted({"b", "a", "B", "é", "aa"})
    assert v.index(["é", "B"]).tolist() == [4, 0]
    assert v.id_of(0) == "B"


def test_accepts_pandas_and_arrow_inputs():
    assert Vocabulary(pd.Series([3, 1, 2])) == Vocabulary([1, 2, 3])
    assert Vocabulary(pa.array(["x", "y"])) == Vocabulary(["y", "x"])
    assert Vocabulary(pd.array(["x", "y"], dtype="str")) == Vocabulary(np.array(["x", "y"], dtype=object))
    assert Vocabulary(np.array([1.0, 2.0])) == Vocabulary([1, 2])  # whole floats are integer IDs
    assert Vocabulary(np.array([1, 2], dtype=np.uint16)).ids.dtype == np.int64


def test_unknown_policies():
    v = Vocabulary([1, 2, 3])
    assert v.index([3, 9, 1], unknown="missing").tolist() == [2, -1, 0]
    assert v.index([3, 9, 1], unknown="drop").tolist() == [2, 0]
    assert v.index(9, unknown="missing") == -1
    with pytest.raises(UnknownIDError, match=r"2 of 3 IDs are not in the vocabulary: 9, 7") as info:
        v.index([9, 1, 7])
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="unknown must be one of"):
        v.index([1], unknown="ignore")


def test_unknown_error_names_a_few_and_counts_all():
    v = Vocabulary(["a"])
    with pytest.raises(KeyError) as info:
        v.index([f"x{i}" for i in range(20)])
    msg = str(info.value)
    assert msg.startswith("20 of 20 IDs") and "'x0'" in msg and "(and 15 more)" in msg


def test_wrong_kind_of_lookup_raises_type_error():
    with pytest.raises(TypeError, match="integer IDs"):
        Vocabulary([1, 2]).index(["a"])
    with pytest.raises(TypeError, match="string IDs"):
        Vocabulary(["a"]).index(np.array([1, 2]))


def test_lookup_with_nullable_and_float_inputs():
    v = Vocabulary([5, 7])
    assert v.index(pd.array([7, None], dtype="Int64"), unknown="missing").tolist() == [1, -1]
    assert v.index(np.array([5.0, 5.5]), unknown="missing").tolist() == [0, -1]


def test_id_of_out_of_range():
    v = Vocabulary(["a", "b"])
    with pytest.raises(IndexError, match="out of range"):
        v.id_of([0, 2])
    with pytest.raises(IndexError):
        v.id_of(-1)


def test_invalid_ids_rejected():
    with pytest.raises(TypeError, match="mix integers and strings"):
        Vocabulary([1, "a"])
    with pytest.raises(ValueError, match="nulls"):
        Vocabulary(["a", None])
    with pytest.raises(TypeError, match="non-integral"):
        Vocabulary([1.5, 2.0])
    with pytest.raises(TypeError, match="booleans"):
        Vocabulary(np.array([True, False]))


def test_empty_vocabulary():
    v = Vocabulary()
    assert len(v) == 0
    assert v.index([], unknown="error").tolist() == []
    assert v.index([1], unknown="missing").tolist() == [-1]


def test_equality_and_contains():
    assert Vocabulary([1, 2]) == Vocabulary([2, 1, 1])
    assert Vocabulary([1, 2]) != Vocabulary([1, 3])
    assert Vocabulary(["1"]) != Vocabulary([1])
    assert 2 in Vocabulary([1, 2]) and 3 not in Vocabulary([1, 2]) and "a" not in Vocabulary([1])
    assert "Vocabulary(n=3, kind=int, ids=[1, 2, 3])" == repr(Vocabulary([3, 2, 1]))


def test_pickle_round_trip_drops_lookup_cache():
    v = Vocabulary([f"u{i}" for i in range(1000)])
    v.index(["u5"])  # builds the hash lookup
    w = pickle.loads(pickle.dumps(v))
    assert w == v and w._lookup is None
    assert w.index(["u999"]).tolist() == v.index(["u999"]).tolist()


@pytest.mark.parametrize("ids", [[5, -3, 2**40], ["β", "a", "zz", ""]])
def test_save_load_round_trip(tmp_path, ids):
    v = Vocabulary(ids)
    v.save(tmp_path / "v.parquet")
    w = Vocabulary.load(tmp_path / "v.parquet")
    assert w == v and w.kind == v.kind
    assert os.listdir(tmp_path) == ["v.parquet"]  # no temporary file left


def test_save_replaces_atomically(tmp_path):
    Vocabulary([1]).save(tmp_path / "v.parquet")
    Vocabulary([2, 3]).save(tmp_path / "v.parquet")
    assert Vocabulary.load(tmp_path / "v.parquet") == Vocabulary([2, 3])
    assert os.listdir(tmp_path) == ["v.parquet"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Vocabulary.load(tmp_path / "missing.parquet")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'id' column"):
        Vocabulary.load(tmp_path / "bad.parquet")
    pq.write_table(pa.table({"id": [3, 1]}), tmp_path / "unsorted.parquet")
    with pytest.raises(ValueError, match="not sorted"):
        Vocabulary.load(tmp_path / "unsorted.parquet")


ints = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=60)
texts = st.lists(st.text(max_size=8), max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.one_of(ints, texts))
def test_round_trip_property(ids):
    v = Vocabulary(ids)
    assert len(v) == len(set(ids))
    codes = v.index(ids)
    assert codes.dtype == np.int64
    assert list(v.id_of(codes)) == list(ids)
    assert np.array_equal(v.index(v.ids), np.arange(len(v)))
    if len(v) > 1:
        assert all(a < b for a, b in zip(v.ids[:-1].tolist(), v.ids[1:].tolist()))


@settings(max_examples=30, deadline=None)
@given(st.one_of(ints, texts), st.integers(min_value=1, max_value=5))
def test_merging_partitions_equals_building_at_once(ids, n_parts):
    parts = [ids[i::n_parts] for i in range(n_parts)]
    assert Vocabulary.from_unique_parts(parts) == Vocabulary(ids)


@settings(max_examples=20, deadline=None)
@given(st.one_of(ints, texts))
def test_save_load_property(tmp_path_factory, ids):
    path = tmp_path_factory.mktemp("vocab") / "v.parquet"
    v = Vocabulary(ids)
    v.save(path)
    assert Vocabulary.load(path) == v


def test_large_int_ids_are_exact():
    big = [2**62 + 1, 2**62 + 2, 2**63 - 1, -(2**63)]
    v = Vocabulary(big)
    assert v.index(big).tolist() == [1, 2, 3, 0]  # a list of Python ints: no float rounding
    assert v.index([2**62 + 3, 2**64], unknown="missing").tolist() == [-1, -1]
    assert v.index(np.array([2**63], dtype=np.uint64), unknown="missing").tolist() == [-1]


def test_dense_and_sparse_int_lookups_agree(rng):
    dense = rng.choice(10_000, 5_000, replace=False)
    sparse = dense.astype(np.int64) * 10**12
    probe = rng.integers(-5, 10_010, 2_000)
    for ids, values in ((dense, probe), (sparse, probe.astype(np.int64) * 10**12)):
        v = Vocabulary(ids)
        codes = v.index(values, unknown="missing")
        known = set(ids.tolist())
        expected = np.array([np.searchsorted(v.ids, x) if x in known else -1 for x in values.tolist()])
        assert np.array_equal(codes, expected)


def test_positional_vocabulary_keeps_the_callers_order():
    from dask_rec.data.vocabulary import PositionalVocabulary, UnknownIDError, as_vocabulary

    v = as_vocabulary(np.array(["c", "a", "b"]))
    assert isinstance(v, PositionalVocabulary)
    np.testing.assert_array_equal(v.index(["b", "c", "a"]), [2, 0, 1])
    np.testing.assert_array_equal(v.index(["a", "zz"], unknown="missing"), [1, -1])
    np.testing.assert_array_equal(v.index(["zz", "b"], unknown="drop"), [2])
    assert v.index("a") == 1
    np.testing.assert_array_equal(v.id_of([0, 2]), ["c", "b"])
    with pytest.raises(UnknownIDError, match="zz"):
        v.index(["zz"])
    with pytest.raises(ValueError, match="distinct"):
        PositionalVocabulary([3, 1, 3])
    sorted_vocab = Vocabulary([5, 1])
    assert as_vocabulary(sorted_vocab) is sorted_vocab and as_vocabulary(None) is None

