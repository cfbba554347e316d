"""The interaction store: layout, block reads, interoperability, atomic writes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_rec.data import store_writer
from dask_rec.data.store import InteractionStore, open_store
from dask_rec.data.store_writer import block_bounds_for, chunk_pieces, shared_chunks, write_store
from dask_rec.data.vocabulary import Vocabulary


def random_csr(rng, n_rows, n_cols, density=0.05):
    X = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.round(X.data * 5 + 1).astype(np.float32)
    return X


def same(a, b) -> bool:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    return a.shape == b.shape and (a != b).nnz == 0


def leftovers(parent):
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


@pytest.fixture
def small_store(tmp_path, rng):
    X = random_csr(rng, 500, 120)
    users = Vocabulary([f"user{i:04d}" for i in range(500)])
    return write_store(tmp_path / "s.zarr", X, users, np.arange(120) * 10, rows_per_block=64), X


def test_properties(small_store):
    s, X = small_store
    assert s.shape == (500, 120) and s.nnz == X.nnz
    assert s.n_blocks == 8
    assert s.block_bounds.dtype == np.int64
    assert s.block_bounds.tolist() == [0, 64, 128, 192, 256, 320, 384, 448, 500]
    assert s.user_vocabulary.id_of(3) == "user0003"
    assert s.item_vocabulary.ids.tolist() == (np.arange(120) * 10).tolist()
    assert np.array_equal(s.item_counts, X.getnnz(axis=0))
    assert np.array_equal(s.user_counts, X.getnnz(axis=1))
    md = s.metadata
    assert md["format_version"] == 1 and md["n_users"] == 500 and md["nnz"] == X.nnz
    assert md["block_bounds"] == s.block_bounds.tolist()
    assert "users=500" in repr(s) and "blocks=8" in repr(s)


def test_block_reads(small_store):
    s, X = small_store
    for i, block in enumerate(s.iter_blocks()):
        lo, hi = s.block_bounds[i], s.block_bounds[i + 1]
        assert isinstance(block, sp.csr_matrix) and block.dtype == np.float32
        assert block.has_sorted_indices
        assert same(block, X[lo:hi])
    assert same(s.read_rows(10, 300), X[10:300])
    assert s.read_rows(7, 7).shape == (0, 120)
    assert same(s.to_scipy(), X)
    with pytest.raises(IndexError):
        s.read_block(8)
    with pytest.raises(IndexError):
        s.read_rows(0, 501)


def test_dask_array(small_store):
    s, X = small_store
    arr = s.to_dask_array()
    assert arr.shape == X.shape and arr.chunks[0] == tuple(np.diff(s.block_bounds))
    block = arr.blocks[2].compute(scheduler="sync")
    assert isinstance(block, sp.csr_matrix) and same(block, X[128:192])
    assert same(arr.compute(scheduler="sync"), X)


def test_pickles_cheaply(small_store):
    s, X = small_store
    s.user_vocabulary, s.item_counts, s.read_block(0)  # fill the caches
    blob = pickle.dumps(s)
    assert len(blob) < 2000
    t = pickle.loads(blob)
    assert isinstance(t, InteractionStore) and t.path == s.path
    assert same(t.read_block(1), X[64:128])


def test_plain_zarr_reads_the_layout(small_store):
    s, X = small_store
    g = zarr.open_group(s.path, mode="r")
    m = g["matrix"]
    assert dict(m.attrs) == {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [500, 120]}
    assert m["indptr"].dtype == np.int64 and m["indices"].dtype == np.int32 and m["data"].dtype == np.float32
    Y = sp.csr_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m.attrs["shape"]))
    assert same(Y, X)
    assert g["user_ids"][:].tolist()[:2] == ["user0000", "user0001"]
    assert g["item_ids"].dtype == np.int64
    assert g.attrs["n_blocks"] == 8
    assert sorted(g.keys()) == ["item_counts", "item_ids", "matrix", "user_ids"]


def test_anndata_reads_the_matrix(small_store):
    pytest.importorskip("anndata")
    try:
        from anndata.io import sparse_dataset
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset
    s, X = small_store
    ds = sparse_dataset(zarr.open_group(s.path, mode="r")["matrix"])
    assert ds.shape == X.shape and ds.format == "csr"
    assert same(ds[100:200], X[100:200])
    assert same(ds.to_memory(), X)
    assert ds.to_memory().dtype == np.float32  # the store's documented value dtype, as anndata reads it


def test_block_read_touches_only_its_chunks(tmp_path, rng):
    X = random_csr(rng, 3000, 400, density=0.05)  # ~60k entries
    with_small_chunks = {"dask_rec.store.nnz-chunk": 4096}
    import dask

    with dask.config.set(with_small_chunks):
        s = write_store(tmp_path / "s.zarr", X, block_nnz=12_000)
    assert s.n_blocks >= 4
    i = 2
    lo, hi = s.block_bounds[i], s.block_bounds[i + 1]
    p0, p1 = X.indptr[lo], X.indptr[hi]
    needed = set(range(p0 // 4096, (p1 - 1) // 4096 + 1))
    # corrupt every other chunk of indices and data: reading any of them would fail
    for name in ("indices", "data"):
        chunk_dir = s.path / "matrix" / name / "c"
        for f in os.listdir(chunk_dir):
            if int(f) not in needed:
                (chunk_dir / f).write_bytes(b"not a zstd frame")
    fresh = open_store(s.path)
    assert same(fresh.read_block(i), X[lo:hi])
    with pytest.raises(Exception):
        fresh.to_scipy()


@settings(max_examples=25, deadline=None)
@given(n_rows=st.integers(1, 60), n_cols=st.integers(1, 30), density=st.floats(0, 0.5),
       rows_per_block=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_blocks_concatenate_to_the_matrix(tmp_path_factory, n_rows, n_cols, density, rows_per_block, seed):
    X = sp.random(n_rows, n_cols, density=density, format="csr", dtype=np.float32, random_state=seed)
    s = write_store(tmp_path_factory.mktemp("s") / "s.zarr", X, rows_per_block=rows_per_block)
    blocks = list(s.iter_blocks())
    assert len(blocks) == s.n_blocks == -(-n_rows // rows_per_block)
    assert same(sp.vstack(blocks), s.to_scipy())
    assert same(s.to_scipy(), X)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 500), chunk=st.integers(1, 64), data=st.data())
def test_chunk_pieces_cover_each_range_once(total, chunk, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, total), max_size=8)))
    offsets = np.array([0] + cuts + [total])
    shared = set(shared_chunks(offsets, total, chunk).tolist())
    owner = np.zeros(total, dtype=int)
    pieces = {}
    for a, b in zip(offsets[:-1], offsets[1:]):
        (lo, hi), partial = chunk_pieces(int(a), int(b), total, chunk)
        assert a <= lo <= hi <= b
        if hi > lo:
            assert lo % chunk == 0 and (hi % chunk == 0 or hi == total)
        owner[lo:hi] += 1
        for k, pa, pb in partial:
            assert k in shared and k * chunk <= pa < pb <= min((k + 1) * chunk, total)
            owner[pa:pb] += 1
            pieces.setdefault(k, []).append((pa, pb))
        if hi > lo:
            for k in range(lo // chunk, -(-hi // chunk)):
                assert k not in shared
    assert (owner == 1).all()
    for k in shared:  # the pieces of a shared chunk tile it
        spans = sorted(pieces[k])
        assert spans[0][0] == k * chunk and spans[-1][1] == min((k + 1) * chunk, total)
        assert all(x[1] == y[0] for x, y in zip(spans[:-1], spans[1:]))


def test_block_bounds_for():
    counts = np.array([5, 1, 1, 1, 10, 1, 1, 0, 2])
    assert block_bounds_for(counts, rows_per_block=4).tolist() == [0, 4, 8, 9]
    b = block_bounds_for(counts, block_nnz=6)
    assert b[0] == 0 and b[-1] == len(counts) and np.all(np.diff(b) > 0)
    sizes = np.add.reduceat(counts, b[:-1])
    assert sizes.sum() == counts.sum() and len(sizes) >= 3
    assert block_bounds_for(np.zeros(0, int)).tolist() == [0]
    with pytest.raises(ValueError):
        block_bounds_for(counts, rows_per_block=0)


def test_block_list_input_keeps_blocks(tmp_path, rng):
    blocks = [random_csr(rng, n, 30) for n in (10, 3, 25)]
    s = write_store(tmp_path / "s.zarr", blocks)
    assert s.block_bounds.tolist() == [0, 10, 13, 38]
    assert same(s.read_block(1), blocks[1])


def test_write_store_checks_vocabularies(tmp_path, rng):
    X = random_csr(rng, 5, 4)
    with pytest.raises(ValueError, match="user_vocabulary has 3 IDs but the matrix has 5 rows"):
        write_store(tmp_path / "a.zarr", X, user_vocabulary=[1, 2, 3])
    with pytest.raises(ValueError, match="sorted order"):
        write_store(tmp_path / "a.zarr", X, item_vocabulary=["d", "c", "b", "a"])
    assert leftovers(tmp_path) == [] and not (tmp_path / "a.zarr").exists()


def test_open_store_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no interaction store"):
        open_store(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not an interaction store"):
        open_store(tmp_path / "plain")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(ValueError, match="not a dask_rec interaction store"):
        open_store(tmp_path / "other.zarr")
    with pytest.raises(ValueError, match="local directories"):
        open_store("s3://bucket/store")


def test_exists_overwrite_and_atomic_failure(tmp_path, rng, monkeypatch):
    X, Y = random_csr(rng, 20, 10), random_csr(rng, 30, 10)
    target = tmp_path / "s.zarr"
    write_store(target, X)
    with pytest.raises(FileExistsError, match=r"s\.zarr already exists; pass overwrite=True"):
        write_store(target, Y)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_writer, "write_vocabulary", boom)
    with pytest.raises(OSError, match="disk full"):
        write_store(target, Y, overwrite=True)
    monkeypatch.undo()
    assert same(open_store(target).to_scipy(), X)  # the old store is intact
    assert leftovers(tmp_path) == []
    s = write_store(target, Y, overwrite=True)
    assert same(s.to_scipy(), Y) and leftovers(tmp_path) == []


def test_refuses_to_overwrite_something_else(tmp_path, rng):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an interaction store"):
        write_store(tmp_path / "docs", random_csr(rng, 3, 3), overwrite=True)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "precious"


def test_empty_matrix(tmp_path):
    s = write_store(tmp_path / "e.zarr", sp.csr_matrix((0, 5), dtype=np.float32))
    assert s.shape == (0, 5) and s.nnz == 0 and s.n_blocks == 0
    assert s.to_scipy().shape == (0, 5)
