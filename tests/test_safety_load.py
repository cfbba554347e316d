"""Issue 13, findings 5 and 10: saved models are checked on load (one line naming the file); the
scoring kernels never read out of bounds; random corruption never crashes and never serves silently."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import small_interactions
from dask_rec import SANSA, SANSAConfig
from dask_rec.cli import main
from dask_rec.exceptions import ModelFileError
from dask_rec.kernels.scoring import recommend_block, score_block
from dask_rec.models.registry import MODELS, load_model_directory
from dask_rec.data.store_writer import write_store

X = small_interactions(n_users=150, n_items=40)
ITEM_IDS = np.arange(40) * 7 + 3


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A SANSA model saved from a store (so with items.parquet), and its reference top-10."""
    root = tmp_path_factory.mktemp("saved")
    store = write_store(root / "s.zarr", X, item_vocabulary=ITEM_IDS, rows_per_block=50)
    model = SANSA(SANSAConfig(weight_matrix_density=0.3)).fit(store.to_scipy())
    model.item_vocabulary = store.item_vocabulary
    model.save(root / "m.zarr")
    return root / "m.zarr", model.recommend(X, 10)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, array: str, values) -> None:
    """Tamper with an array *consistently* (its CRC updated), as a hostile or buggy writer would."""
    arr = zarr.open_array(str(path / array), mode="r+")
    arr[:] = values
    arr.attrs["crc32"] = zlib.crc32(np.ascontiguousarray(arr[:]).view(np.uint8)) & 0xFFFFFFFF


def _one_line_error(exc_info, *parts):
    text = str(exc_info.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, text


def test_intact_model_round_trips(saved):
    path, (ids, scores) = saved
    model = SANSA.load(path)
    got = model.recommend(X, 10)
    np.testing.assert_array_equal(got[0], ids)
    np.testing.assert_array_equal(got[1], scores)
    np.testing.assert_array_equal(model.item_vocabulary.ids, ITEM_IDS)


def test_deleted_chunk_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "m.zarr")
    chunks = sorted((path / "W2" / "data" / "c").iterdir())
    chunks[len(chunks) // 2].unlink()
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, f"W2/data/c/{chunks[len(chunks) // 2].name}", "chunk file missing")


@pytest.mark.parametrize("array, tamper, expected", [
    ("W2/indices", lambda v: np.where(np.arange(v.size) == 3, 10**7, v), "W2/indices: values must lie in [0, 40)"),
    ("W2/indices", lambda v: np.where(np.arange(v.size) == 3, -1, v), "W2/indices: values must lie in [0, 40)"),
    ("W1/indptr", lambda v: np.where(np.arange(v.size) == 5, v[-1], v), "W1/indptr: offsets must start at 0"),
    ("W1/data", lambda v: np.where(np.arange(v.size) == 0, np.nan, v), "W1/data: values must be finite"),
])
def test_consistent_tampering_is_caught_by_the_structure_checks(saved, tmp_path, array, tamper, expected):
    path = _copy(saved[0], tmp_path / "m.zarr")
    _rewrite(path, array, tamper(zarr.open_array(str(path / array))[:]))
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, expected)


def test_changed_values_fail_the_checksum(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "m.zarr")
    arr = zarr.open_array(str(path / "W1" / "data"), mode="r+")
    arr[0] = arr[0] + 1  # plausible value, CRC not updated
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, "W1/data: checksum mismatch")


def test_truncated_chunk_one_line_in_api_and_cli(saved, tmp_path, capsys):
    path = _copy(saved[0], tmp_path / "m.zarr")
    chunk = path / "W1" / "indices" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, "W1/indices: a chunk cannot be decoded")
    store = tmp_path / "s.zarr"
    write_store(store, X, item_vocabulary=ITEM_IDS)
    assert main(["recommend", str(path), str(store), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "W1/indices: a chunk cannot be decoded" in err


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a["config"].update(evil=1), "zarr.json: the stored config is invalid (TypeError:"),
    (lambda a: a.pop("config"), "zarr.json: the stored config is invalid (KeyError: 'config'"),
    (lambda a: a.update(n_items=41), "zarr.json: n_items=41 but the weights have 40 items"),
    (lambda a: a.update(kind="dask_rec.interactions"), "is not a dask_rec model directory (an interaction store"),
])
def test_tampered_root_attributes(saved, tmp_path, edit, expected):
    path = _copy(saved[0], tmp_path / "m.zarr")
    doc = json.loads((path / "zarr.json").read_text())
    edit(doc["attributes"])
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError) as info:
        load_model_directory(path)
    _one_line_error(info, expected)


def test_garbage_metadata_and_non_model_directories(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "m.zarr")
    (path / "zarr.json").write_bytes(b"\x00garbage{")
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, f"{path / 'zarr.json'}: not valid JSON")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError) as info:
        SANSA.load(tmp_path / "empty")
    _one_line_error(info, "is not a dask_rec model directory (no zarr.json)")
    store = write_store(tmp_path / "s.zarr", X)
    with pytest.raises(ModelFileError, match="is not a dask_rec model directory \\(an interaction store"):
        SANSA.load(store.path)
    with pytest.raises(FileNotFoundError, match="no model at"):
        SANSA.load(tmp_path / "nothing")


def test_damaged_vocabulary_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "m.zarr")
    (path / "items.parquet").write_bytes((path / "items.parquet").read_bytes()[:20])
    with pytest.raises(ModelFileError) as info:
        SANSA.load(path)
    _one_line_error(info, "items.parquet: unreadable item vocabulary")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_kind_refuses_a_deleted_chunk(name, tmp_path):
    import warnings

    entry = MODELS[name]
    model = entry.load_class()(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data: density warnings of SANSA
        model.fit(X)
    try:
        model.save(tmp_path / "m.zarr")
    except NotImplementedError:
        pytest.skip(f"{name} cannot be saved")
    root = tmp_path / "m.zarr"
    chunks = sorted(p for p in root.rglob("*") if p.is_file() and "c" in p.relative_to(root).parts)  # 1-D and 2-D
    chunks[0].unlink()
    with pytest.raises(ModelFileError) as info:
        load_model_directory(tmp_path / "m.zarr")
    _one_line_error(info, "chunk file missing")


def test_kernels_refuse_out_of_range_operands():
    W = sp.identity(5, dtype=np.float32, format="csr")
    Xb = sp.csr_matrix(np.ones((2, 5), np.float32))
    bad_index = sp.csr_matrix((W.data, np.array([0, 1, 2, 3, 10**7], np.int32), W.indptr), shape=(5, 5))
    bad_ptr = W.copy()
    bad_ptr.indptr = np.array([0, 3, 1, 4, 5, 5], dtype=W.indptr.dtype)
    for bad, expected in ((bad_index, "column indices"), (bad_ptr, "indptr decreases")):
        with pytest.raises(ValueError, match=expected):
            recommend_block(Xb, W, bad, 3)
        with pytest.raises(ValueError, match=expected):
            score_block(Xb, bad, W)
        with pytest.raises(ValueError, match="not a valid CSR matrix"):
            SANSA().load_weights((W, bad))


# --------------------------------------------------------------------------------------------
# random corruption: a clean error at load, or the same answers
# --------------------------------------------------------------------------------------------


def _files(path: Path, kind: str = "any") -> list[Path]:
    """Files of a saved model: ``"meta"`` (zarr.json), ``"chunk"``, ``"items"`` (items.parquet) or any."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    pick = {"meta": lambda p: p.name == "zarr.json", "items": lambda p: p.name == "items.parquet",
            "chunk": lambda p: p.parent.name == "c", "any": lambda p: True}[kind]
    return [p for p in files if pick(p)]


_CORRUPTIONS = ("flip", "truncate", "delete", "append", "zero", "random")


def _corrupt(file: Path, how: str, where: float, value: int) -> None:
    data = bytearray(file.read_bytes())
    pos = min(len(data) - 1, int(where * len(data))) if data else 0
    if how == "delete":
        file.unlink()
    elif how == "truncate":
        file.write_bytes(bytes(data[:pos]))
    elif how == "append":
        file.write_bytes(bytes(data) + bytes([value]) * 8)
    elif how == "zero":
        file.write_bytes(bytes(len(data)))
    elif how == "random":
        file.write_bytes(np.random.default_rng(value).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif data:  # flip: one byte changed
        data[pos] ^= value or 1
        file.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def saved_kinds(saved, tmp_path_factory):
    """SANSA (from ``saved``), ItemKNN and PopRec saved with item IDs, and their reference top-10."""
    from dask_rec.models.itemknn import ItemKNN
    from dask_rec.models.popularity import PopRec

    root = tmp_path_factory.mktemp("kinds")
    out = {"sansa": saved}
    store = write_store(root / "s.zarr", X, item_vocabulary=ITEM_IDS, rows_per_block=50)
    for name, cls in (("itemknn", ItemKNN), ("pop", PopRec)):
        model = cls().fit(store.to_scipy())
        model.item_vocabulary = store.item_vocabulary
        model.save(root / f"{name}.zarr")
        out[name] = (root / f"{name}.zarr", model.recommend(X, 10))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(("sansa", "itemknn", "pop")), kind=st.sampled_from(("meta", "chunk", "items")),
       which=st.integers(0, 10**6), how=st.sampled_from(_CORRUPTIONS), where=st.floats(0, 1),
       value=st.integers(0, 255))
def test_random_corruption_never_crashes_nor_serves_silently(saved_kinds, tmp_path_factory, name, kind, which, how,
                                                             where, value):
    src, (ids, scores) = saved_kinds[name]
    path = _copy(src, tmp_path_factory.mktemp("c") / "m.zarr")
    files = _files(path, kind)
    _corrupt(files[which % len(files)], how, where, value)
    try:
        model = load_model_directory(path)
    except (ModelFileError, FileNotFoundError) as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    got_ids, got_scores = model.recommend(X, 10)  # loaded: must answer exactly as before
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_scores, scores)
    np.testing.assert_array_equal(model.item_vocabulary.ids, ITEM_IDS)
