"""The example scripts run, on small data, and do what they say."""

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, *args, timeout=300):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _main(script):
    return runpy.run_path(str(EXAMPLES / script))["main"]


def test_sansa_dropin():
    ids, scores = _main("sansa_dropin.py")(["--users", "800", "--items", "300"])
    assert ids.shape == (5, 10) and np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.cluster
def test_quickstart_then_existing_cluster_then_batch(tmp_path, local_client):
    recs = _main("quickstart_localcluster.py")(
        ["--workdir", str(tmp_path), "--users", "3000", "--items", "800", "--interactions", "90000"])
    assert list(recs.columns) == ["user_id", "item_id", "score", "rank"]
    assert set(recs["rank"]) <= set(range(1, 11))
    store, model = tmp_path / "store.zarr", tmp_path / "model2.zarr"
    address = local_client.scheduler.address
    report = _main("existing_cluster.py")([address, str(store), str(model), "--l2", "20", "--density", "5e-3"])
    assert report["n_items"] > 0 and (model / "W1").exists()
    out = tmp_path / "recs"
    _main("batch_recommend_to_parquet.py")([str(model), str(store), str(out), "--k", "5", "--scheduler", address])
    frame = pd.read_parquet(out)
    # every user got at most 5 items, none of them already seen
    import dask_rec

    X = dask_rec.open_store(store).to_scipy()
    users = dask_rec.open_store(store).user_vocabulary
    items = dask_rec.open_store(store).item_vocabulary
    assert frame.groupby("user_id").size().max() == 5
    rows = users.index(frame["user_id"].to_numpy())
    cols = items.index(frame["item_id"].to_numpy())
    assert np.asarray(X[rows, cols]).ravel().sum() == 0


@pytest.mark.cluster
def test_large_catalog_with_the_gramian_on_disk(tmp_path):
    report, recall = _main("large_catalog.py")(
        ["--workdir", str(tmp_path), "--users", "4000", "--items", "1500", "--interactions", "120000",
         "--nnz-per-item", "20", "--gramian-on-disk"])
    assert report["gramian"]["route"] == "streamed" and report["gramian"]["on_disk"]
    assert report["density"] == pytest.approx(20 / report["n_items"])
    assert recall["SANSA"] > 1.5 * recall["popularity"]
    assert not list((tmp_path / "scratch").iterdir())  # the Gramian's blocks are removed after the fit
