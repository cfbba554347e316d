"""The fit at scale: the streamed Gramian route wired into ``fit``, memory plans, budgets per item.

Oracles: the assembled route (the whole Gramian in one task, as before the streamed route
existed), scipy's ``XᵀX`` for a kept Gramian, and hand-set memory limits for the refusals.
"""

from __future__ import annotations

import logging

import dask.config
import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec import SANSA, ICFGramianFactorizerConfig, SANSAConfig, UMRUnitLowerTriangleInverterConfig
from dask_rec.models.sansa import training
from dask_rec.exceptions import InsufficientMemoryError
from dask_rec.stages.gramian_store import open_lower_gramian
from dask_rec.memory_plan import MemoryLimits

CONFIG = SANSAConfig(10.0, 0.05, ICFGramianFactorizerConfig(),
                     UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=3))


def _interactions(n_users=900, n_items=260, seed=0):
    """Binary interactions with a skewed popularity (so the popularity order is not the identity)."""
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.6, n_items).astype(float)
    pop /= pop.sum()
    rows, cols = [], []
    for u in range(n_users):
        k = int(rng.integers(2, 25))
        items = np.unique(rng.choice(n_items, size=k, p=pop))
        rows += [u] * items.size
        cols += items.tolist()
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def _same(a, b):
    for wa, wb in zip(a, b):
        assert wa.shape == wb.shape
        np.testing.assert_array_equal(wa.indptr, wb.indptr)
        np.testing.assert_array_equal(wa.indices, wb.indices)
        np.testing.assert_array_equal(wa.data, wb.data)


@pytest.fixture(scope="module")
def X():
    return _interactions()


@pytest.fixture(scope="module")
def assembled(X):
    """Weights from the assembled route (the route every fit took before the streamed one)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(training, "uses_streamed_gramian", lambda config, compute_gramian=True: False)
    try:
        model = SANSA(CONFIG).fit(X)
    finally:
        mp.undo()
    assert model.fit_report_["gramian"]["route"] == "assembled"
    return model.weights


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_streamed_route_is_the_default_for_icf_and_bit_identical_to_the_assembled_one(X, assembled, storage,
                                                                                       tmp_path):
    with dask.config.set({"dask_rec.gramian.storage": storage, "dask_rec.gramian.item-block-size": 37,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}):
        model = SANSA(CONFIG).fit(X)
    info = model.fit_report_["gramian"]
    assert info["route"] == "streamed" and info["on_disk"] == (storage == "disk") and info["blocks"] == 8
    _same(model.weights, assembled)
    assert list(tmp_path.iterdir()) == []  # the working directory is gone


def test_streamed_route_on_a_cluster_with_blocks_on_disk_equals_in_process(X, assembled, tmp_path):
    from distributed import Client, LocalCluster

    with dask.config.set({"dask_rec.gramian.storage": "disk", "dask_rec.gramian.item-block-size": 50,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = SANSA(CONFIG).fit(X, client=client, progress=False)
        weights = model.weights
    assert model.fit_report_["gramian"]["on_disk"]
    _same(weights, assembled)
    assert list(tmp_path.iterdir()) == []


def test_kept_gramian_is_the_ordered_lower_triangle_and_reusable(X, tmp_path):
    keep = tmp_path / "kept-gramian"
    with dask.config.set({"dask_rec.gramian.keep": str(keep), "dask_rec.gramian.item-block-size": 64,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}):
        model = SANSA(CONFIG).fit(X)
    assert model.fit_report_["gramian"]["kept"] == str(keep)
    lower = open_lower_gramian(keep)
    counts = np.asarray((X != 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(lower.order, np.lexsort((np.arange(X.shape[1]), counts)))  # ascending, ties by index
    G = (X.T @ X).toarray()[np.ix_(lower.order, lower.order)]
    got = sp.vstack([lower.block(c) for c in range(len(lower.bounds))]).toarray()  # row j = lower column j
    np.testing.assert_array_equal(got, np.triu(G))
    assert lower.nnz == np.count_nonzero(np.triu(G))
    assert [p.name for p in tmp_path.iterdir()] == ["kept-gramian"]


def test_nnz_per_item_is_a_density_of_nnz_over_items(X):
    n = X.shape[1]
    per_item = SANSAConfig(10.0, nnz_per_item=13, gramian_factorizer_config=ICFGramianFactorizerConfig(),
                           lower_triangle_inverter_config=CONFIG.lower_triangle_inverter_config)
    assert per_item.density_for(n) == 13 / n and per_item.density_for(5) == 1.0
    by_density = SANSAConfig(10.0, 13 / n, ICFGramianFactorizerConfig(), CONFIG.lower_triangle_inverter_config)
    _same(SANSA(per_item).fit(X).weights, SANSA(by_density).fit(X).weights)
    with pytest.raises(ValueError, match="nnz_per_item must be > 0"):
        SANSAConfig(nnz_per_item=0)


def test_cli_nnz_per_item_reaches_the_config():
    from dask_rec.cli import build_parser
    from dask_rec.cli._model_options import config_from_args

    args = build_parser().parse_args(["fit", "store", "model", "--nnz-per-item", "50"])
    assert config_from_args(args).nnz_per_item == 50.0


def _limits(per_task, bigmem):
    return lambda executor: MemoryLimits(per_task=per_task, bigmem=bigmem, n_workers=2, in_process=False)


@pytest.mark.parametrize(("per_task", "bigmem", "stage", "knob", "inverter"), [
    (2**40, 2**16, "factorize", "bigmem", "umr"),           # the factor's budget cannot fit the bigmem worker
    (2**10 * 200, 2**40, "invert", "block-columns", "umr"),  # a UMR task cannot fit a worker thread
    (2**14, 2**40, "gramian", "memory per thread", "exact"),  # one Gramian column cannot fit a task
])
def test_a_stage_that_cannot_fit_is_refused_before_the_gramian_in_one_line(X, monkeypatch, caplog, per_task, bigmem,
                                                                           stage, knob, inverter):
    from dask_rec import ExactUnitLowerTriangleInverterConfig

    config = CONFIG if inverter == "umr" else SANSAConfig(10.0, 0.05, ICFGramianFactorizerConfig(),
                                                          ExactUnitLowerTriangleInverterConfig())
    monkeypatch.setattr(training, "memory_limits", _limits(per_task, bigmem))
    monkeypatch.setattr(training, "lower_gramian_stage", lambda *a, **k: pytest.fail("the Gramian was computed"))
    with caplog.at_level(logging.INFO, logger="dask_rec"), pytest.raises(InsufficientMemoryError) as err:
        SANSA(config).fit(X)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"stage {stage}:") and knob in message, message
    assert "iB, more than the " in message and "memory limit" in message
    assert "stage gramian: done" not in caplog.text


def test_a_failed_stage_is_logged_as_failed_not_done(X, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(training, "lower_gramian_stage", broken)
    with caplog.at_level(logging.INFO, logger="dask_rec"), pytest.raises(RuntimeError, match="disk full"):
        SANSA(CONFIG).fit(X)
    assert "stage gramian: failed" in caplog.text and "stage gramian: done" not in caplog.text


def test_a_task_that_kills_its_workers_becomes_a_memory_error_naming_the_stage():
    from distributed import KilledWorker

    limits = MemoryLimits(per_task=2**30, bigmem=4 * 2**30, n_workers=2, in_process=False)
    with pytest.raises(InsufficientMemoryError, match=r"^stage factorize: .*bigmem"):
        training._raise_memory_error_if_killed("factorize", KilledWorker("factorize-x", "tcp://w", None), limits)
    with pytest.raises(InsufficientMemoryError, match=r"^stage gramian: .*task-fraction"):
        training._raise_memory_error_if_killed("gramian", KilledWorker("g", "tcp://w", None), limits)
    training._raise_memory_error_if_killed("gramian", ValueError("other"), limits)  # not ours: left alone


def test_planned_gramian_blocks_respect_the_task_budget_and_the_lower_bound_holds(X):
    from dask_rec.stages.gramian import ENTRY_BYTES, lower_column_bound, plan_lower_blocks
    from dask_rec.kernels.gramian import permute_items, upper_gramian_rows, upper_row_work

    order = np.argsort(np.asarray((X != 0).sum(axis=0)).ravel(), kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    Xp = permute_items(X, inverse)
    bound = lower_column_bound(upper_row_work(Xp))
    n = X.shape[1]
    task_bytes = 16 * n + (8 + 2 + 1) * ENTRY_BYTES * 400
    bounds = plan_lower_blocks(bound, task_bytes, n_row_blocks=1)
    assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) > 2
    for a, b in bounds:
        actual = upper_gramian_rows(Xp, a, b).nnz
        assert actual <= bound[a:b].sum()
        assert bound[a:b].sum() <= 400 or b - a == 1


def test_assembled_route_plans_column_blocks_too(X, monkeypatch):
    """CHOLMOD reads the whole Gramian, but no task of its reduction sums all items when the
    workers' memory is small."""
    from dask_rec import CHOLMODGramianFactorizerConfig

    config = SANSAConfig(10.0, 0.05, CHOLMODGramianFactorizerConfig(), CONFIG.lower_triangle_inverter_config)
    expected = SANSA(config).fit(X)
    assert expected.fit_report_["gramian"]["blocks"] == 1
    monkeypatch.setattr(training, "memory_limits", _limits(2 * 2**20, 2**40))
    small = SANSA(config).fit(X)
    assert small.fit_report_["gramian"]["blocks"] > 1
    _same(small.weights, expected.weights)


def test_memory_estimates_grow_with_what_they_describe():
    from dask_rec.models.sansa.factorize import streamed_factorization_bytes
    from dask_rec.models.sansa.invert import task_memory_bytes

    assert streamed_factorization_bytes(10**6, 5e-5, 0) > 20 * 50 * 10**6
    assert task_memory_bytes(10**6, 50 * 10**6, 4096) > 8 * 50 * 10**6
    assert training.weights_memory_bytes(10**6, 50 * 10**6) > 2 * 8 * 50 * 10**6


def test_one_shared_gramian_gives_each_config_the_weights_of_its_own_fit(X, tmp_path):
    from dask_rec.data.blocks import as_row_block_source
    from dask_rec.executor import InProcessExecutor

    executor = InProcessExecutor()
    with dask.config.set({"dask_rec.gramian.storage": "disk", "dask_rec.gramian.item-block-size": 40,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}):
        lower = training.compute_lower_gramian(as_row_block_source(X), executor)
        assert lower.on_disk and len(lower.bounds) == 7 and sum(lower.block_nnz) == lower.nnz
        for l2, per_item in ((10.0, 13), (200.0, 40)):
            config = SANSAConfig(l2, nnz_per_item=per_item, gramian_factorizer_config=ICFGramianFactorizerConfig(),
                                 lower_triangle_inverter_config=CONFIG.lower_triangle_inverter_config)
            shared = training.fit_weights_from_lower_gramian(lower, config, executor)
            _same(shared.weights, SANSA(config).fit(X).weights)
        with pytest.raises(ValueError, match="popularity"):
            training.fit_weights_from_lower_gramian(
                lower, SANSAConfig(gramian_factorizer_config=ICFGramianFactorizerConfig(reordering_method="natural")),
                executor)
        training.release_lower_gramian(executor, lower)
    assert list(tmp_path.iterdir()) == []


def test_cli_turns_a_killed_worker_into_one_line(monkeypatch, capsys):
    from distributed import KilledWorker

    from dask_rec import cli
    from dask_rec.cli import evaluate

    def killed(args):
        raise KilledWorker("recommend-block-0", "tcp://127.0.0.1:1", 3)

    monkeypatch.setattr(evaluate, "run", killed)
    assert cli.main(["evaluate", "store"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recommend-block-0" in err[0] and "out of memory" in err[0], err


def test_a_kept_gramian_trains_the_same_model_again(X, tmp_path):
    from dask_rec.executor import InProcessExecutor

    keep = tmp_path / "kept"
    with dask.config.set({"dask_rec.gramian.keep": str(keep), "dask_rec.gramian.item-block-size": 50,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}):
        first = SANSA(CONFIG).fit(X)
    again = training.fit_weights_from_lower_gramian(open_lower_gramian(keep), CONFIG, InProcessExecutor())
    _same(again.weights, first.weights)


@pytest.mark.slow
def test_gowalla_streamed_on_disk_in_many_blocks_is_bit_identical_to_the_assembled_route(tmp_path, monkeypatch):
    from shared_data import interaction_matrix

    X = interaction_matrix("gowalla")
    config = SANSAConfig(10.0, 1e-3, ICFGramianFactorizerConfig(), UMRUnitLowerTriangleInverterConfig(scans=3))
    with dask.config.set({"dask_rec.gramian.storage": "disk", "dask_rec.gramian.item-block-size": 1500,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}):
        streamed = SANSA(config).fit(X)
    assert streamed.fit_report_["gramian"]["blocks"] == 28 and streamed.fit_report_["gramian"]["on_disk"]
    monkeypatch.setattr(training, "uses_streamed_gramian", lambda config, compute_gramian=True: False)
    _same(streamed.weights, SANSA(config).fit(X).weights)


def test_bigmem_placement_spreads_over_tied_workers_and_prefers_the_resource():
    from dask_rec.executor import bigmem_placement

    class FakeClient:
        def __init__(self, workers):
            self.workers = workers

        def scheduler_info(self):
            return {"workers": self.workers}

    tied = {"tcp://b": {"memory_limit": 8}, "tcp://a": {"memory_limit": 8}, "tcp://c": {"memory_limit": 4}}
    assert bigmem_placement(FakeClient(tied)) == {"workers": ["tcp://a", "tcp://b"], "allow_other_workers": True}
    tied["tcp://c"]["resources"] = {"bigmem": 1}
    assert bigmem_placement(FakeClient(tied)) == {"resources": {"bigmem": 1}}
    assert bigmem_placement(FakeClient({})) == {}


def test_in_memory_data_on_workers_of_several_hosts_needs_a_shared_scratch_dir(X, tmp_path):
    from dask_rec.data.blocks import as_row_block_source

    class Client:
        def scheduler_info(self):
            return {"workers": {"tcp://node-a:4001": {}, "tcp://node-b:4001": {}}}

    class Executor:
        client = Client()

    source = as_row_block_source(X)
    with pytest.raises(ValueError, match="2 hosts: set dask_rec.gramian.scratch-dir"):
        training._scratch_dir(source, Executor(), 2**30)
    with dask.config.set({"dask_rec.gramian.scratch-dir": str(tmp_path)}):
        assert training._scratch_dir(source, Executor(), 2**30) == tmp_path


def test_a_gramian_stage_that_fails_midway_leaves_no_blocks_on_disk(X, tmp_path, monkeypatch):
    from dask_rec.stages import gramian_store

    written, write_block = [], gramian_store.write_block

    def write_then_fail(path, c, block):  # the first block is written, the second finds the disk full
        if written:
            raise OSError("No space left on device")
        written.append(c)
        return write_block(path, c, block)

    monkeypatch.setattr(gramian_store, "write_block", write_then_fail)
    with dask.config.set({"dask_rec.gramian.storage": "disk", "dask_rec.gramian.item-block-size": 60,
                          "dask_rec.gramian.scratch-dir": str(tmp_path)}), \
            pytest.raises(OSError, match="No space left"):
        SANSA(CONFIG).fit(X)
    assert written == [0] and list(tmp_path.iterdir()) == []
