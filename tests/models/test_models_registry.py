"""The model registry and the CLI that uses it: fit --model, evaluate --models, recommend of any kind."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from conformance import small_interactions
from dask_rec.cli import main
from dask_rec.models import registry


@pytest.fixture()
def store(tmp_path):
    from dask_rec.data.store_writer import write_store

    X = small_interactions(n_users=200, n_items=30)
    write_store(tmp_path / "s.zarr", X, np.arange(200) + 1000, np.arange(30) * 10, rows_per_block=50)
    return str(tmp_path / "s.zarr")


def test_every_entry_builds_from_its_own_options():
    parser = argparse.ArgumentParser()
    for entry in registry.MODELS.values():
        entry.add_options(parser)  # no option clashes between models
    args = parser.parse_args(["--random-seed", "4", "--wilson-threshold", "3"])
    for entry in registry.MODELS.values():
        model = entry.build(args)
        assert type(model) is entry.load_class()
    assert registry.get("random").config(args).seed == 4
    assert registry.get("wilson").config(args).threshold == 3.0
    with pytest.raises(ValueError, match="unknown model 'nope'; choose from sansa, pop"):
        registry.get("nope")


def test_register_one_entry_adds_a_model():
    entry = registry.ModelEntry("pop2", "dask_rec.models.popularity:PopRec", "dask_rec.PopRec2")
    registry.register(entry)
    try:
        assert registry.get("pop2").load_class().__name__ == "PopRec"
    finally:
        registry.MODELS.pop("pop2")


def test_cli_fit_recommend_any_kind_and_evaluate_table(store, tmp_path, capsys):
    for name in ("pop", "wilson"):
        out = tmp_path / f"{name}.zarr"
        assert main(["fit", store, str(out), "--model", name, "--workers", "1"]) == 0
        recs = tmp_path / f"recs-{name}"
        assert main(["recommend", str(out), store, str(recs), "-k", "3", "--workers", "1"]) == 0
        frame = pd.read_parquet(recs)
        assert set(frame.columns) >= {"user_id", "item_id", "score", "rank"}
        assert frame["item_id"].isin(np.arange(30) * 10).all()
    capsys.readouterr()
    assert main(["evaluate", store, "--models", "pop,random", "--test-users", "20", "--k", "5,10", "--json",
                 "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["models"] == ["pop", "random"] and set(got["fit_seconds"]) == {"pop", "random"}
    assert {"recall@5", "ndcg@10"} <= set(got["popularity"]) and "recall@5" in got["random"]
    assert main(["evaluate", store, "--models", "pop,wilson", "--test-users", "20", "--k", "5",
                 "--workers", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["metric", "pop", "wilson"]
    assert table[-1].startswith("fit seconds")
    assert main(["evaluate", store, "--models", "pop,bogus"]) == 2


def test_evaluate_help_prints_a_single_percent(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "20%" in text and "%%" not in text
