"""ALS against dense NumPy oracles and implicit 0.7.3, on 1 and 2 workers, plus the recommender contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cluster_utils import gathered, kill_worker_during
from conformance import RecommenderConformance, small_interactions
from dask_rec.kernels.als import solve_rows, solve_rows_naive
from dask_rec.kernels.factors import factor_gramian, init_factors, objective_naive, row_losses
from dask_rec.models.als import ALS, ALSConfig

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:implicit", "ignore:.*OpenBLAS.*",
                                        "ignore:Method expects CSR input")


def _weighted(seed=0, n_users=300, n_items=40, density=0.15):
    X = small_interactions(seed, n_users, n_items, density=density)
    X.data = (np.random.default_rng(seed).integers(1, 5, X.nnz)).astype(np.float32)
    return X


class TestALS(RecommenderConformance):
    def make_model(self):
        return ALS(ALSConfig(factors=6, regularization=0.5, alpha=2.0, iterations=4))


class TestALSCholesky(RecommenderConformance):
    def make_model(self):
        return ALS(ALSConfig(factors=5, regularization=1.0, alpha=5.0, iterations=3, solver="cholesky"))


# ------------------------------------------------------------------------------ kernels


def test_cholesky_rows_equal_the_dense_normal_equations():
    X = _weighted()
    Y = np.random.default_rng(1).random((40, 7)).astype(np.float32)
    got = solve_rows(X, Y, factor_gramian(Y), 0.3, 2.5)
    np.testing.assert_allclose(got, solve_rows_naive(X, Y, 0.3, 2.5), rtol=2e-4, atol=2e-5)


def test_cg_converges_to_the_exact_solution_and_never_worsens_a_row():
    X = _weighted(2)
    Y = np.random.default_rng(2).random((40, 7)).astype(np.float32)
    exact = solve_rows_naive(X, Y, 0.3, 2.5)
    start = np.random.default_rng(3).random((X.shape[0], 7)).astype(np.float32)
    G = factor_gramian(Y)
    errors = [np.abs(solve_rows(X, Y, G, 0.3, 2.5, solver="cg", cg_steps=s, previous=start) - exact).max()
              for s in (1, 3, 7, 12)]
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-4 * np.abs(exact).max()
    one_step = solve_rows(X, Y, G, 0.3, 2.5, solver="cg", cg_steps=1, previous=start)
    for r in range(X.shape[0]):  # one CG step lowers each row's objective from its start
        row = X[r]
        after = row_losses(row, one_step[r:r + 1], Y, G, 2.5) + 0.3 * float((one_step[r].astype(float) ** 2).sum())
        before = row_losses(row, start[r:r + 1], Y, G, 2.5) + 0.3 * float((start[r].astype(float) ** 2).sum())
        assert after <= before + 1e-9 * abs(before)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_threads_do_not_change_a_bit(solver, monkeypatch):
    import dask_rec.kernels.als as kernels

    monkeypatch.setattr(kernels, "CG_CHUNK", 64)  # several chunks
    X = _weighted(3, n_users=500)
    Y = np.random.default_rng(5).random((40, 6)).astype(np.float32)
    one, three = (solve_rows(X, Y, factor_gramian(Y), 0.3, 2.5, solver=solver, previous=np.full((500, 6), 0.1, np.float32),
                             n_threads=t) for t in (1, 3))
    np.testing.assert_array_equal(one, three)


def test_row_losses_equal_the_dense_objective():
    X = _weighted(4)
    rng = np.random.default_rng(4)
    U, Y = rng.random((300, 5)).astype(np.float32), rng.random((40, 5)).astype(np.float32)
    got = row_losses(X, U, Y, factor_gramian(Y), 1.5) + 0.7 * ((U.astype(float) ** 2).sum() + (Y.astype(float) ** 2).sum())
    assert got == pytest.approx(objective_naive(X, U, Y, 0.7, 1.5), rel=1e-6)


def test_init_does_not_depend_on_the_blocks():
    whole = init_factors(0, 10_000, 3, 7, 1)
    parts = np.concatenate([init_factors(a, b, 3, 7, 1) for a, b in ((0, 5), (5, 4100), (4100, 10_000))])
    np.testing.assert_array_equal(whole, parts)
    assert whole.min() >= 0 and whole.max() < 0.01
    assert not np.array_equal(whole, init_factors(0, 10_000, 3, 8, 1))


# ------------------------------------------------------------------------------ fit


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_objective_decreases_every_iteration_and_is_exact(solver):
    X = _weighted(5, 400, 60)
    model = ALS(ALSConfig(factors=8, regularization=0.5, alpha=2.0, iterations=8, solver=solver)).fit(
        X, keep_user_factors=True)
    objective = np.array(model.fit_report_["objective"])
    assert len(objective) == 8 and np.all(np.diff(objective) < 0)
    assert objective[-1] == pytest.approx(objective_naive(X, model.user_factors_, model.item_factors_, 0.5, 2.0),
                                          rel=1e-5)


def test_cg_and_cholesky_reach_the_same_objective():
    X = _weighted(6, 500, 80)
    final = {s: ALS(ALSConfig(factors=10, regularization=1.0, alpha=3.0, iterations=20, solver=s)).fit(X)
             .fit_report_["objective"][-1] for s in ("cholesky", "cg")}
    assert final["cg"] == pytest.approx(final["cholesky"], rel=2e-3)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_same_factors_as_implicit_from_the_same_start(solver):
    from implicit.cpu.als import AlternatingLeastSquares

    X = small_interactions(7, 300, 50, density=0.1)  # binary: implicit's alpha = ours + 1
    ours = ALS(ALSConfig(factors=8, regularization=0.5, alpha=3.0, iterations=5, solver=solver)).fit(
        X, keep_user_factors=True)
    theirs = AlternatingLeastSquares(factors=8, regularization=0.5, alpha=4.0, iterations=5, use_cg=solver == "cg",
                                     calculate_training_loss=False, num_threads=1, random_state=0)
    theirs.user_factors = init_factors(0, 300, 8, 0, 0)  # our seeded start (streams 0: users, 1: items)
    theirs.item_factors = init_factors(0, 50, 8, 0, 1)
    theirs.fit(X, show_progress=False)
    scale = np.abs(theirs.item_factors).max()
    np.testing.assert_allclose(ours.item_factors_, theirs.item_factors, atol=1e-3 * scale)
    np.testing.assert_allclose(ours.user_factors_, theirs.user_factors, atol=1e-3 * scale)


def test_blocks_change_only_round_off():
    import dask

    X = _weighted(8, 600, 70)
    config = ALSConfig(factors=6, regularization=0.5, alpha=2.0, iterations=6, solver="cholesky")
    one = ALS(config).fit(X, keep_user_factors=True)
    with dask.config.set({"dask_rec.blocks.target-nnz": 200}):
        many = ALS(config).fit(X, keep_user_factors=True)
    assert one.fit_report_["n_user_blocks"] == 8 and many.fit_report_["n_user_blocks"] > 20
    assert many.fit_report_["n_item_blocks"] > 20
    np.testing.assert_allclose(many.item_factors_, one.item_factors_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(many.user_factors_, one.user_factors_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_equal_factors_in_process_and_on_one_and_two_workers(tmp_path, solver, local_client, single_worker_client):
    from dask_rec.data.store_writer import write_store

    X = _weighted(9, 500, 60)
    write_store(tmp_path / "s.zarr", X, rows_per_block=120)
    config = ALSConfig(factors=6, regularization=0.5, alpha=2.0, iterations=4, solver=solver)
    from dask_rec.data.store import open_store

    store = open_store(tmp_path / "s.zarr")
    two = ALS(config).fit(store, client=local_client, keep_user_factors=True)
    one = ALS(config).fit(store, client=single_worker_client, keep_user_factors=True)
    assert two.fit_report_["n_user_blocks"] == 5
    np.testing.assert_array_equal(two.item_factors_, one.item_factors_)
    np.testing.assert_array_equal(two.user_factors_, one.user_factors_)
    assert two.fit_report_["objective"] == one.fit_report_["objective"]
    import dask

    here = ALS(config).fit(X)  # in process, other blocks
    assert here.fit_report_["n_user_blocks"] == 8
    np.testing.assert_allclose(here.item_factors_, two.item_factors_, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ scoring


def test_fold_in_scores_are_the_exact_solve_times_the_item_factors():
    X = _weighted(10)
    model = ALS(ALSConfig(factors=5, regularization=0.8, alpha=1.5, iterations=3)).fit(X)
    U = solve_rows_naive(X[:20], model.item_factors_, 0.8, 1.5)
    dense = U @ model.item_factors_.T.astype(np.float64)
    dense[X[:20].toarray() > 0] = -np.inf
    ids, scores = model.recommend(X[:20], 4)
    np.testing.assert_allclose(scores, np.sort(dense, axis=1)[:, ::-1][:, :4], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.take_along_axis(dense, ids, 1).argsort(1)[:, ::-1], np.tile(np.arange(4), (20, 1)))


def test_similar_items_are_the_cosine_of_item_factors():
    model = ALS(ALSConfig(factors=4, iterations=3)).fit(_weighted(11))
    Y = model.item_factors_.astype(np.float64)
    unit = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    ids, scores = model.similar_items([0, 5, 9], k=3)
    np.testing.assert_array_equal(ids, np.argsort(-cos[[0, 5, 9]], axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.sort(cos[[0, 5, 9]], axis=1)[:, ::-1][:, :3], rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(factors=0), dict(regularization=0.0), dict(alpha=-1.0), dict(iterations=-1),
                                 dict(solver="lu"), dict(cg_steps=0), dict(seed=-3)])
def test_config_errors_name_the_parameter(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ALSConfig(**bad)


def test_cli_fit_recommend_and_evaluate_als(tmp_path, capsys):
    import json

    import pandas as pd

    from dask_rec.cli import main
    from dask_rec.models.registry import load_model_directory
    from dask_rec.data.store_writer import write_store

    X = small_interactions(12, 200, 30)
    write_store(tmp_path / "s.zarr", X, np.arange(200) + 1000, np.arange(30) * 10, rows_per_block=50)
    store, out = str(tmp_path / "s.zarr"), tmp_path / "als.zarr"
    assert main(["fit", store, str(out), "--model", "als", "--als-factors", "5", "--als-iterations", "3",
                 "--als-solver", "cholesky", "--workers", "1"]) == 0
    model = load_model_directory(out)
    assert isinstance(model, ALS) and model.config.factors == 5 and model.config.solver == "cholesky"
    assert main(["recommend", str(out), store, str(tmp_path / "recs"), "-k", "3", "--workers", "1"]) == 0
    assert pd.read_parquet(tmp_path / "recs")["item_id"].isin(np.arange(30) * 10).all()
    capsys.readouterr()
    assert main(["evaluate", store, "--models", "als,pop", "--als-factors", "4", "--test-users", "20", "--k", "5",
                 "--json", "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["models"] == ["als", "pop"] and 0.0 <= got["als"]["recall@5"] <= 1.0


# ------------------------------------------------------------------------------ real data


class _ImplicitFoldIn:
    """implicit's own fold-in (recalculate_user) and ranking, as a block scorer for our evaluate()."""

    def __init__(self, model):
        self.model = model
        self.n_items = model.item_factors.shape[0]

    def topk_block(self, X_block, k, exclude_seen=True, allowed=None, n_threads=1):
        from dask_rec.kernels.topk import top_k_of_scores

        X = sp.csr_matrix(X_block, dtype=np.float32)
        U = self.model.recalculate_user(np.arange(X.shape[0]), X)
        return top_k_of_scores(U @ self.model.item_factors.T, k, exclude=X if exclude_seen else None)


def _compare_with_implicit(name, factors, regularization, alpha, iterations, same_start, n_test):
    from implicit.cpu.als import AlternatingLeastSquares

    from dask_rec.serving.evaluation import evaluate, split_strong_generalization
    from shared_data import interaction_matrix

    X = interaction_matrix(name)
    train, history, targets = split_strong_generalization(X, n_test_users=n_test, seed=0)
    config = ALSConfig(factors=factors, regularization=regularization, alpha=alpha - 1.0, iterations=iterations)
    ours = ALS(config).fit(train)
    theirs = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                     iterations=iterations, calculate_training_loss=False, random_state=0)
    if same_start:
        theirs.user_factors = init_factors(0, train.shape[0], factors, 0, 0)
        theirs.item_factors = init_factors(0, train.shape[1], factors, 0, 1)
    theirs.fit(train, show_progress=False)
    a = evaluate(ours, history, targets, ks=(20, 100))
    b = evaluate(_ImplicitFoldIn(theirs), history, targets, ks=(20, 100))
    print(f"{name}: ours recall@20 {a['recall@20']:.4f} ndcg@100 {a['ndcg@100']:.4f}; "
          f"implicit {b['recall@20']:.4f} {b['ndcg@100']:.4f}")
    for key in ("recall@20", "ndcg@100"):
        assert a[key] == pytest.approx(b[key], rel=0.02), (key, a[key], b[key])
    return a, b


def test_recall_and_ndcg_match_implicit_on_ml_latest_small():
    _compare_with_implicit("ml-latest-small", 32, 5.0, 10.0, 10, same_start=True, n_test=120)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gowalla", "amazon-book-kgat", "yelp2020"])
def test_recall_and_ndcg_match_implicit_on_large_datasets(name):
    _compare_with_implicit(name, 128, 20.0, 40.0, 15, same_start=False, n_test=5000)


def test_a_worker_killed_mid_iteration_costs_time_not_the_result():
    """Kill one of three worker processes while item-solve tasks run: same factors as undisturbed."""
    import dask
    from distributed import Client, LocalCluster

    X = _weighted(13, 3000, 400, density=0.05)
    config = ALSConfig(factors=16, regularization=0.5, alpha=2.0, iterations=8)
    with dask.config.set({"dask_rec.blocks.target-nnz": 2000}):
        undisturbed = ALS(config).fit(X, keep_user_factors=True)
        with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client:
            with kill_worker_during(client, "als-items-3-solve", timeout=60) as killed:
                model = ALS(config).fit(X, client=client, keep_user_factors=True)
    assert killed, "no item-solve task was seen running, so no worker was killed"
    np.testing.assert_array_equal(model.item_factors_, undisturbed.item_factors_)
    np.testing.assert_array_equal(model.user_factors_, undisturbed.user_factors_)


def test_factors_that_cannot_fit_a_task_are_refused_up_front(monkeypatch):
    from dask_rec import memory_plan
    from dask_rec.exceptions import InsufficientMemoryError

    monkeypatch.setattr(memory_plan, "memory_limits", lambda executor: memory_plan.MemoryLimits(10_000, 10_000, 1, True))
    with pytest.raises(InsufficientMemoryError, match="als-solve.*fewer factors"):
        ALS(ALSConfig(factors=64, iterations=1)).fit(small_interactions())


def test_solves_run_on_both_workers_and_only_small_results_reach_the_client(local_client):
    import dask
    from distributed import get_task_stream

    X = _weighted(14, 2000, 300, density=0.05)
    with gathered(local_client) as received, get_task_stream(local_client) as ts, \
            dask.config.set({"dask_rec.blocks.target-nnz": 2000}):
        model = ALS(ALSConfig(factors=6, iterations=3)).fit(X, client=local_client)
    workers = {}
    for rec in ts.data:
        name = rec["key"] if isinstance(rec["key"], str) else str(rec["key"])
        workers.setdefault("-".join(name.split("-")[:2]), set()).add(rec["worker"])
    assert len(workers["als-users"]) == 2 and len(workers["als-items"]) == 2, workers
    *small, factors = received
    sizes = [np.size(x) for r in small for x in (r if isinstance(r, list) else [r])]
    assert max(sizes) <= 6 * 6  # loss sums and k x k Gramians only
    assert np.array_equal(np.concatenate(factors), model.item_factors_) and model.user_factors_ is None


def test_fold_in_is_the_exact_solve_for_short_and_long_histories():
    from dask_rec.kernels.als import fold_in

    rng = np.random.default_rng(15)
    n_items, k = 200, 24
    Y = (rng.random((n_items, k)) * 0.3).astype(np.float32)
    lengths = np.arange(60) % 50  # 0 .. 49 items: both sides of k (Woodbury below, Cholesky above)
    rows = np.repeat(np.arange(60), lengths)
    cols = np.concatenate([rng.choice(n_items, m, replace=False) for m in lengths])
    X = sp.csr_matrix((rng.integers(1, 4, rows.size).astype(np.float32), (rows, cols)), shape=(60, n_items))
    got = fold_in(X, Y, factor_gramian(Y), 0.7, 2.0)
    np.testing.assert_allclose(got, solve_rows_naive(X, Y, 0.7, 2.0), rtol=1e-5, atol=1e-6)
    assert not got[0].any()
