"""``dask_rec.tune`` and ``dask-rec tune``: the protocol, the shared Gramian, grid/TPE, the CLI round trip."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from shared_data import interaction_matrix

from dask_rec import SANSA, SANSAConfig
from dask_rec.models.sansa import training
from dask_rec.serving.evaluation import evaluate, split_strong_generalization
from dask_rec.tuning.search import tune, validation_split
from dask_rec.tuning.result import config_file_dict

SPACE = {"l2": [10.0, 300.0], "density": [5e-3, 2e-2]}


@pytest.fixture(scope="module")
def X():
    return interaction_matrix("ml-100k")


def _values(result):
    return [(tuple(t["params"].items()), t["metrics"]) for t in result.ordered_trials()]


def _scramble_rows(X, rows, rng):
    """X with the given users' interactions replaced by random items (their targets change too)."""
    X = sp.lil_matrix(X, copy=True)
    for r in rows:
        X.rows[r], X.data[r] = [], []
        for j in np.sort(rng.choice(X.shape[1], size=30, replace=False)):
            X[r, j] = 1.0
    return sp.csr_matrix(X)


def test_test_users_never_influence_the_choice(X):
    test_rows = split_strong_generalization(X, n_test_users=150, seed=1).test_users
    changed = _scramble_rows(X, test_rows, np.random.default_rng(3))
    space = {"l2": [1.0, 10.0, 300.0], "density": [5e-3, 2e-2]}
    a = tune(X, space, test_users=test_rows, progress=False)
    b = tune(changed, space, test_users=test_rows, progress=False)
    assert a.best_params == b.best_params and _values(a) == _values(b)
    assert not set(test_rows) & (set(validation_split(X, test_users=test_rows).train_users)
                                 | set(validation_split(X, test_users=test_rows).test_users))
    # the same change made to users the tuner may look at does move the metrics (the check can fail)
    c = tune(changed, space, progress=False)
    assert _values(c) != _values(tune(X, space, progress=False))


def test_a_number_of_test_users_holds_out_those_of_evaluate(X):
    rows = split_strong_generalization(X, n_test_users=100, seed=4).test_users
    by_count, by_rows = validation_split(X, test_users=100, seed=4), validation_split(X, test_users=rows, seed=4)
    assert np.array_equal(by_count.train_users, by_rows.train_users)
    assert np.array_equal(by_count.test_users, by_rows.test_users)
    assert not set(rows) & set(by_count.train_users) and by_count.train.shape[0] == by_count.train_users.size


def test_the_gramian_is_computed_once_for_all_trials(X, monkeypatch):
    calls = {"gramian": 0, "trial": 0, "release": 0}
    real = (training.compute_lower_gramian, training.fit_weights_from_lower_gramian, training.release_lower_gramian)

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(training, "compute_lower_gramian", counted("gramian", real[0]))
    monkeypatch.setattr(training, "fit_weights_from_lower_gramian", counted("trial", real[1]))
    monkeypatch.setattr(training, "release_lower_gramian", counted("release", real[2]))
    monkeypatch.setattr(training, "fit_weights", lambda *a, **k: pytest.fail("a trial fitted from the data"))
    result = tune(X, {"l2": [5.0, 50.0, 500.0], "density": [5e-3, 2e-2]}, progress=False)
    assert calls == {"gramian": 1, "trial": 6, "release": 1}
    assert len(result.trials) == 6 and result.info["shared_gramian"]


def _separate_fit_metrics(X, config, ks=(20, 100)):
    split = validation_split(X)
    model = SANSA(config).fit(split.train)
    return evaluate(model, split.test_history, split.test_targets, ks=ks)


def test_grid_results_equal_separate_fits(X):
    result = tune(X, SPACE, metric="recall@20", progress=False)
    assert len(result.trials) == 4
    for trial in result.trials:
        config = SANSAConfig(l2=trial["params"]["l2"], weight_matrix_density=trial["params"]["density"])
        assert trial["metrics"] == pytest.approx(_separate_fit_metrics(X, config), rel=1e-12)
        assert trial["value"] == trial["metrics"]["recall@20"]
    assert result.best["value"] == max(t["value"] for t in result.trials)
    assert result.best_config == SANSAConfig(l2=result.best_params["l2"],
                                             weight_matrix_density=result.best_params["density"])


def test_concurrent_trials_on_a_cluster_equal_in_process_trials(X, local_client):
    space = {"l2": [10.0, 300.0], "nnz_per_item": [10, 40]}
    here = tune(X, space, progress=False)
    there = tune(X, space, client=local_client, concurrency=2, progress=False)
    assert there.info["concurrency"] == 2
    for a, b in zip(here.ordered_trials(), there.ordered_trials()):
        assert a["params"] == b["params"] and a["metrics"] == pytest.approx(b["metrics"], rel=1e-12)
    assert there.best_params == here.best_params


def test_concurrency_is_bounded_by_the_bigmem_worker(X, monkeypatch):
    from dask_rec import memory_plan, settings
    from dask_rec.models.sansa.factorize import streamed_factorization_bytes

    seen = {}
    real = training.compute_lower_gramian

    def keep(*args, **kwargs):
        seen["lower"] = real(*args, **kwargs)
        return seen["lower"]

    monkeypatch.setattr(training, "compute_lower_gramian", keep)
    n_items = X.shape[1]
    probe = tune(X, {"l2": [10.0], "density": [2e-2]}, concurrency=4, progress=False)
    assert probe.info["concurrency"] == 4  # this machine's memory holds 4 of these small ones
    need = streamed_factorization_bytes(n_items, 2e-2, max(seen["lower"].block_nnz))
    limit = int(2.5 * need / float(settings.get("memory.bigmem-fraction")))
    monkeypatch.setattr(memory_plan, "memory_limits",
                        lambda executor: memory_plan.MemoryLimits(limit, limit, 1, True))
    result = tune(X, {"l2": [10.0, 100.0], "density": [5e-3, 2e-2]}, concurrency=4, progress=False)
    assert result.info["concurrency"] == 2 and len(result.trials) == 4


def test_itemknn_space_equals_separate_fits(X):
    from dask_rec.models.itemknn import ItemKNN, ItemKNNConfig

    result = tune(X, {"k": [20, 100], "shrinkage": [0.0, 10.0]}, model="itemknn", progress=False)
    split = validation_split(X)
    for trial in result.trials:
        model = ItemKNN(ItemKNNConfig(**trial["params"])).fit(split.train)
        assert trial["metrics"] == pytest.approx(evaluate(model, split.test_history, split.test_targets), rel=1e-12)
    assert result.best_config == ItemKNNConfig(**result.best_params)


def test_tpe_search_stays_in_range_and_picks_its_best(X):
    pytest.importorskip("optuna")
    result = tune(X, {"l2": [5.0, 500.0], "density": [5e-3, 2e-2]}, search="tpe", n_trials=6, progress=False)
    assert 1 <= len(result.trials) <= 6
    for t in result.trials:
        assert 5.0 <= t["params"]["l2"] <= 500.0 and 5e-3 <= t["params"]["density"] <= 2e-2
    assert result.best["value"] == max(t["value"] for t in result.trials)
    stopped = tune(X, {"l2": [10.0], "density": [2e-2]}, search="tpe", n_trials=10, patience=2, progress=False)
    assert len(stopped.trials) == 1  # one point only: later trials repeat it and are not refitted


def test_tpe_patience_stops_the_search(X, monkeypatch):
    pytest.importorskip("optuna")
    from dask_rec.tuning import search as tuning

    def fake_trial(self, point):  # each trial worse than the one before: the first stays the best
        value = 1.0 - len(self.trials) / 100
        self.trials.append({"params": dict(point), "value": value, "metrics": {}, "fit_seconds": 0.0})
        return value

    monkeypatch.setattr(tuning._Trials, "trial", fake_trial)
    result = tune(X, {"l2": [1.0, 1000.0], "density": [5e-3, 2e-2]}, search="tpe", n_trials=30, patience=3,
                  concurrency=1, progress=False)
    assert len(result.trials) == 4 and result.best is result.trials[0]


def test_tpe_without_optuna_is_one_clear_error(X, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match="search='tpe' needs Optuna"):
        tune(X, SPACE, search="tpe")


def test_cli_tpe_without_optuna_is_one_line(X, tmp_path, monkeypatch, capsys):
    from dask_rec.cli import main
    from dask_rec.data.store_writer import write_store

    store = str(write_store(tmp_path / "s.zarr", X[:100]).path)
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", store, "--search", "tpe"]) == 2
    assert capsys.readouterr().err.strip() == ("dask-rec tune: error: --search tpe needs Optuna: pip install optuna "
                                               "(or use --search grid)")


@pytest.mark.parametrize("space, kwargs, message", [
    ({"lambda": [1.0]}, {}, "unknown parameter 'lambda'"),
    ({"density": [1e-3], "nnz_per_item": [10]}, {}, "at most one of density, nnz_per_item"),
    ({"l2": [-1.0]}, {}, "'l2' must be > 0"),
    ({"l2": ["a"]}, {}, "'l2' takes numbers"),
    (SPACE, {"metric": "map@10"}, "metric must be"),
    (SPACE, {"search": "random"}, "search must be"),
    (SPACE, {"model": "pop"}, "cannot be tuned"),
])
def test_bad_spaces_are_one_line_errors(X, space, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tune(X, space, **kwargs)


def test_cli_round_trip_tune_config_fit(X, tmp_path, local_client, capsys):
    from dask_rec.cli import main
    from dask_rec.data.store_writer import write_store

    store = str(write_store(tmp_path / "s.zarr", X).path)
    addr = ["--scheduler", local_client.scheduler.address]
    best, plot, refit = tmp_path / "best.json", tmp_path / "p.png", tmp_path / "m1.zarr"
    assert main(["tune", store, "--l2", "10,300", "--density", "5e-3,2e-2", "--test-users", "100", "--json",
                 "--plot", str(plot), "--config-out", str(best), "--refit", str(refit), *addr]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["trials"]) == 4 and out["n_validation_users"] == (X.shape[0] - 100) // 10
    test_rows = split_strong_generalization(X, n_test_users=100, seed=0).test_users
    api = tune(X, {"l2": [10.0, 300.0], "density": [5e-3, 2e-2]}, test_users=test_rows, progress=False)
    assert out["best"]["params"] == api.best_params
    assert json.loads(best.read_text()) == out["best_config"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fit", store, str(tmp_path / "m2.zarr"), "--config", str(best), *addr]) == 0
    m1, m2 = SANSA.load(refit), SANSA.load(tmp_path / "m2.zarr")
    assert m1.config == m2.config == api.best_config
    oracle = SANSA(api.best_config).fit(X).weights
    for a, b, c in zip(m1.weights, m2.weights, oracle):
        assert (a != b).nnz == 0 and (a != c).nnz == 0


def test_cli_errors(X, tmp_path, capsys):
    from dask_rec.cli import main
    from dask_rec.data.store_writer import write_store

    store = str(write_store(tmp_path / "s.zarr", X[:200]).path)
    assert main(["tune", store, "--model", "itemknn", "--l2", "1,2"]) == 2
    assert "--l2 does not apply to --model itemknn" in capsys.readouterr().err
    assert main(["tune", store, "--space", "alpha=1,2"]) == 2
    assert "--space takes NAME=V1,V2,... with NAME one of l2, density, nnz_per_item" in capsys.readouterr().err
    assert main(["tune", store, "--l2", "1,2", "--space", "l2=3"]) == 2
    assert "--space l2: give its values once" in capsys.readouterr().err
    assert main(["tune", store, "--l2", "1,x"]) == 2
    assert "--l2 must be comma-separated float values" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"model": "itemknn", "config": {"k": 0}}')
    assert main(["fit", store, str(tmp_path / "m.zarr"), "--config", str(tmp_path / "bad.json")]) == 2
    assert "k must be an integer >= 1" in capsys.readouterr().err
    (tmp_path / "sansa.json").write_text(json.dumps(config_file_dict("sansa", SANSAConfig())))
    assert main(["fit", store, str(tmp_path / "m.zarr"), "--config", str(tmp_path / "sansa.json"),
                 "--model", "itemknn"]) == 2
    assert "holds a sansa config, but --model is itemknn" in capsys.readouterr().err


def test_cli_space_options_parse_per_model():
    from dask_rec.cli import build_parser
    from dask_rec.cli.tune import parse_space

    args = build_parser().parse_args(["tune", "s", "--model", "itemknn", "--knn-k", "20,50",
                                      "--space", "similarity=cosine,bm25", "--space", "shrinkage=0,10"])
    assert parse_space(args, "itemknn") == {"k": [20, 50], "similarity": ["cosine", "bm25"], "shrinkage": [0.0, 10.0]}
    args = build_parser().parse_args(["tune", "s", "--nnz-per-item", "10,40", "--space", "l2=1,100"])
    assert parse_space(args, "sansa") == {"nnz_per_item": [10.0, 40.0], "l2": [1.0, 100.0]}
    assert parse_space(build_parser().parse_args(["tune", "s"]), "sansa") is None
