"""Issue 13, findings 1-3: overwrite replaces only a directory of the same kind; stale temporaries are swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from conformance import small_interactions
from dask_rec import SANSA, SANSAConfig
from dask_rec.data.atomic import _host_tag, atomic_directory, directory_kind, sweep_stale
from dask_rec.cli import main
from dask_rec.models.popularity import PopRec
from dask_rec.data.store import open_store
from dask_rec.data.store_writer import write_store


@pytest.fixture()
def store(tmp_path):
    X = small_interactions(n_users=120, n_items=25)
    write_store(tmp_path / "s.zarr", X, rows_per_block=40)
    return tmp_path / "s.zarr"


@pytest.fixture()
def model(store):
    return PopRec().fit(open_store(store).to_scipy())


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_kinds_are_recognised(store, model, tmp_path):
    model.save(tmp_path / "m.zarr")
    model.recommend_users(open_store(store), k=3, output=tmp_path / "recs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "NOTES.txt").write_text("mine")
    assert [directory_kind(tmp_path / n) for n in ("s.zarr", "m.zarr", "recs", "empty", "notes")] == [
        "store", "model", "recommendations", "empty", None]


def test_a_store_is_never_replaced_by_a_model(store, model):
    before = _listing(store)
    with pytest.raises(FileExistsError, match="holds an interaction store, not a dask_rec model; refusing"):
        model.save(store, overwrite=True)
    with pytest.raises(FileExistsError, match="holds an interaction store, not a dask_rec model"):
        SANSA(SANSAConfig(weight_matrix_density=0.2)).fit(open_store(store).to_scipy()).save(store, overwrite=True)
    assert _listing(store) == before and open_store(store).nnz > 0


def test_cli_fit_store_onto_store_refused_before_fitting(store, capsys):
    before = _listing(store)
    assert main(["fit", str(store), str(store), "--overwrite", "--model", "pop"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds an interaction store, not a dask_rec model" in err
    assert _listing(store) == before


def test_a_model_replaces_a_model_and_not_a_foreign_directory(store, model, tmp_path):
    target = tmp_path / "m.zarr"
    model.save(target)
    SANSA(SANSAConfig(weight_matrix_density=0.2)).fit(open_store(store).to_scipy()).save(target, overwrite=True)  # another kind of model
    assert SANSA.load(target).n_items == 25
    (target / "NOTES.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds a dask_rec model and files dask_rec did not write"):
        model.save(target, overwrite=True)
    assert (target / "NOTES.txt").read_text() == "keep me"


def test_recommend_output_with_foreign_files_is_refused(store, model, tmp_path, capsys):
    model.save(tmp_path / "m.zarr")
    out = tmp_path / "out"
    out.mkdir()
    (out / "NOTES.txt").write_text("keep me")
    assert main(["recommend", str(tmp_path / "m.zarr"), str(store), str(out), "--overwrite"]) == 2
    assert "holds files dask_rec did not write, not a recommendations output" in capsys.readouterr().err
    assert (out / "NOTES.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError):
        model.recommend_users(open_store(store), k=3, output=out, overwrite=True)
    assert os.listdir(out) == ["NOTES.txt"]
    with pytest.raises(FileExistsError, match="holds an interaction store, not a recommendations output"):
        model.recommend_users(open_store(store), k=3, output=store, overwrite=True)


def test_recommendations_replace_recommendations(store, model, tmp_path):
    out = tmp_path / "recs"
    model.recommend_users(open_store(store), k=3, output=out)
    model.recommend_users(open_store(store), k=5, output=out, overwrite=True)
    assert pd.read_parquet(out)["rank"].max() == 5


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_runs_are_removed_others_kept(tmp_path):
    target = tmp_path / "s.zarr"
    host = _host_tag()
    dead = tmp_path / f".s.zarr.tmp-{_dead_pid()}-{host}-0123abcd"
    alive = tmp_path / f".s.zarr.tmp-{os.getppid()}-{host}-0123abcd"
    elsewhere = tmp_path / f".s.zarr.tmp-{_dead_pid()}-{'0' * 8 if host != '0' * 8 else '1' * 8}-0123abcd"
    other_target = tmp_path / f".t.zarr.tmp-{_dead_pid()}-{host}-0123abcd"
    for d in (dead, alive, elsewhere, other_target):
        (d / "_scratch").mkdir(parents=True)
        (d / "_scratch" / "piece.npy").write_bytes(b"x")
    write_store(target, small_interactions(n_users=10, n_items=5))
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and other_target.exists()


def test_interrupted_swap_restores_the_old_target(tmp_path):
    target = tmp_path / "s.zarr"
    write_store(target, small_interactions(n_users=10, n_items=5))
    old = tmp_path / f".s.zarr.old-{_dead_pid()}-{_host_tag()}-0123abcd"
    os.rename(target, old)  # killed between moving the old store aside and renaming the new one in
    sweep_stale(target)
    assert open_store(target).shape == (10, 5) and not old.exists()


def test_legacy_temporaries_are_reported_with_the_command(tmp_path):
    legacy = tmp_path / ".s.zarr.tmp-0123456789ab"
    legacy.mkdir()
    with pytest.warns(UserWarning, match=f"remove with: rm -rf {legacy}"):
        sweep_stale(tmp_path / "s.zarr")
    assert legacy.exists()


def test_a_run_killed_mid_write_is_cleaned_by_the_next_run(tmp_path):
    target = tmp_path / "s.zarr"
    script = textwrap.dedent(f"""
        import time
        from dask_rec.data.atomic import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            (tmp / "_scratch").mkdir()
            (tmp / "_scratch" / "piece.npy").write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = list(tmp_path.glob(".s.zarr.tmp-*"))
    assert len(leftovers) == 1 and not target.exists()
    write_store(target, small_interactions(n_users=10, n_items=5))
    assert not list(tmp_path.glob(".s.zarr.*")) and open_store(target).shape == (10, 5)


def test_target_under_a_regular_file_or_unwritable_place_names_the_target(tmp_path):
    (tmp_path / "regfile").write_text("x")
    with pytest.raises(ValueError, match=r"cannot create .*regfile/sub: .*regfile is a file, not a directory"):
        with atomic_directory(tmp_path / "regfile" / "sub"):
            pass
    with pytest.raises(ValueError) as info:
        with atomic_directory("/proc/dask_rec_test_target"):
            pass
    assert ".tmp-" not in str(info.value) and "/proc/dask_rec_test_target" in str(info.value)
