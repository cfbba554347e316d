"""The CLI with the Gramian models: fit --model ease/slim/rules, evaluate --models with all of them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conformance import small_interactions
from dask_rec.cli import main


@pytest.fixture()
def store(tmp_path):
    from dask_rec.data.store_writer import write_store

    X = small_interactions(n_users=200, n_items=30)
    write_store(tmp_path / "s.zarr", X, np.arange(200) + 1000, np.arange(30) * 10, rows_per_block=50)
    return str(tmp_path / "s.zarr")


@pytest.mark.parametrize("name,options,check", [
    ("ease", ["--ease-l2", "7", "--ease-dtype", "float64"], lambda m: m.config.l2 == 7 and m.weights_.dtype == "f8"),
    ("slim", ["--slim-l1", "0.5", "--slim-l2", "3", "--slim-topk", "5"],
     lambda m: m.config.topk == 5 and np.diff(m.similarity_.tocsc().indptr).max() <= 5),
    ("rules", ["--rules-metric", "lift", "--rules-k", "4", "--rules-min-support", "0.01"],
     lambda m: m.config.metric == "lift" and np.diff(m.similarity_.indptr).max() <= 4),
])
def test_fit_model_saves_what_recommend_serves(store, tmp_path, name, options, check):
    from dask_rec.models.registry import load_model_directory

    out = tmp_path / f"{name}.zarr"
    assert main(["fit", store, str(out), "--model", name, *options, "--workers", "1"]) == 0
    model = load_model_directory(out)
    assert model.name == name and check(model)
    recs = tmp_path / f"recs-{name}"
    assert main(["recommend", str(out), store, str(recs), "-k", "3", "--workers", "1"]) == 0
    frame = pd.read_parquet(recs)
    assert frame["item_id"].isin(np.arange(30) * 10).all() and len(frame) > 0


def test_evaluate_prints_every_model_with_fit_seconds(store, capsys):
    models = "sansa,ease,slim,rules,itemknn,pop"
    assert main(["evaluate", store, "--models", models, "--test-users", "20", "--k", "5,10", "--json",
                 "--density", "0.1", "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["models"] == models.split(",") and set(got["fit_seconds"]) == set(models.split(","))
    assert all(got["fit_seconds"][m] > 0 for m in ("ease", "slim", "rules"))
    for name in ("ease", "slim", "rules"):
        assert 0 <= got[name]["recall@5"] <= 1 and 0 <= got[name]["ndcg@10"] <= 1
    assert main(["evaluate", store, "--models", "ease,rules", "--test-users", "20", "--k", "5",
                 "--workers", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["metric", "ease", "rules"]
    assert table[-1].startswith("fit seconds")
