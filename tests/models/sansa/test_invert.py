"""The inverse of the unit lower triangular factor, end to end: exact and UMR, in process and on a
LocalCluster, against round-off bounds, monotonicity, blocking invariance and the reference."""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import numpy as np
import pytest
import scipy.sparse as sp

from dask_rec.config import ExactUnitLowerTriangleInverterConfig, UMRUnitLowerTriangleInverterConfig
from dask_rec.executor import DaskExecutor, InProcessExecutor
from dask_rec.models.sansa.invert import assemble_blocks, auto_block_columns, invert_unit_lower, resolve_partition, task_memory_bytes
from dask_rec.kernels.pruning import prune_to_nnz

DATASETS = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
EPS32 = np.finfo(np.float32).eps


# ---------------------------------------------------------------------------------------------
# factors
# ---------------------------------------------------------------------------------------------


def random_unit_lower(n: int, per_column: float, scale: float, seed: int) -> sp.csc_matrix:
    rng = np.random.default_rng(seed)
    A = np.tril(rng.standard_normal((n, n)) * (rng.random((n, n)) < per_column / n), -1) * scale
    L = sp.csc_matrix((A + np.eye(n)).astype(np.float32))
    L.sort_indices()
    return L


def unit_lower_from_gramian(X: sp.spmatrix, l2: float, density: float) -> sp.csc_matrix:
    """Dense Cholesky of XᵀX + λI (ascending popularity order), pruned to ``density``, then
    ``L = L̂ · diag(1/diag L̂)`` with the unit diagonal stored exactly."""
    order = np.argsort(np.asarray(X.sum(axis=0)).ravel(), kind="stable")
    X = sp.csc_matrix(X)[:, order]
    G = (X.T @ X).toarray().astype(np.float64) + l2 * np.eye(X.shape[1])
    C = np.linalg.cholesky(G)
    n = C.shape[0]
    Lh = prune_to_nnz(sp.csc_matrix(C.astype(np.float32)), int(density * n * n), protect_diagonal=True)
    L = sp.csc_matrix(Lh @ sp.diags(1.0 / Lh.diagonal())).astype(np.float32)
    L.sort_indices()
    L.data[L.indices == np.repeat(np.arange(n), np.diff(L.indptr))] = 1.0
    return L


def load_interactions(name: str) -> sp.csr_matrix:
    path = DATASETS / name / "interactions.parquet"
    if not path.exists():
        pytest.skip(f"shared dataset {name} is absent ({path})")
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["user_id", "item_id"])
    _, users = np.unique(table.column("user_id").to_numpy(), return_inverse=True)
    _, items = np.unique(table.column("item_id").to_numpy(), return_inverse=True)
    X = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)))
    X.data[:] = 1.0
    return X


@pytest.fixture(scope="module")
def L_ml100k():
    return unit_lower_from_gramian(load_interactions("ml-100k"), l2=10.0, density=2e-2)


@pytest.fixture(scope="module")
def L_small():
    return random_unit_lower(300, 6, 0.4, 0)


@pytest.fixture(scope="module")
def dask_executor():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield DaskExecutor(client)
    finally:
        client.close()
        cluster.close()


def residual_stats(L, M):
    n = L.shape[0]
    R = sp.identity(n, format="csc") - L.astype(np.float64) @ M.astype(np.float64)
    norms = np.sqrt(np.asarray(R.multiply(R).sum(axis=0))).ravel()
    return norms.max(), float(np.mean(norms**2))


def same_blocks(a, b):
    assert [(s, e) for s, e, _ in a] == [(s, e) for s, e, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b):
        x = x.result() if hasattr(x, "result") else x
        y = y.result() if hasattr(y, "result") else y
        np.testing.assert_array_equal(x.indptr, y.indptr)
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.data, y.data)


UMR = UMRUnitLowerTriangleInverterConfig
EXACT = ExactUnitLowerTriangleInverterConfig()


# ---------------------------------------------------------------------------------------------
# exact inverter
# ---------------------------------------------------------------------------------------------


def assert_inverse_to_roundoff(L, M):
    """|L M − I| ≤ c·eps32·(|L| |M|) entrywise: the bound of float32 rounding of M's entries."""
    Ld = L.astype(np.float64).toarray()
    Md = M.astype(np.float64).toarray()
    err = np.abs(Ld @ Md - np.eye(L.shape[0]))
    bound = 4 * EPS32 * (np.abs(Ld) @ np.abs(Md)) + 1e-30
    assert np.all(err <= bound), float((err / bound).max())


@pytest.mark.parametrize("block_columns,wave_blocks", [(64, 2), (1000, 1)])
def test_exact_unpruned_is_inverse_random(L_small, block_columns, wave_blocks):
    n = L_small.shape[0]
    blocks, report = invert_unit_lower(
        L_small, n, EXACT, target_nnz=n * (n + 1) // 2, block_columns=block_columns, wave_blocks=wave_blocks
    )
    M = assemble_blocks(blocks)
    assert_inverse_to_roundoff(L_small, M)
    assert report[-1]["pass"] == "exact" and report[-1]["prunes"] == 0
    assert sp.tril(M).nnz == M.nnz


def test_exact_unpruned_is_inverse_ml100k(L_ml100k):
    n = L_ml100k.shape[0]
    blocks, report = invert_unit_lower(L_ml100k, n, EXACT, target_nnz=n * (n + 1) // 2, block_columns=256)
    M = assemble_blocks(blocks)
    assert_inverse_to_roundoff(L_ml100k, M)
    assert report[-1]["max_residual_norm"] < 1e-4


def test_exact_pruned_keeps_global_top(L_small):
    n = L_small.shape[0]
    full = assemble_blocks(invert_unit_lower(L_small, n, EXACT, target_nnz=n * n, block_columns=32)[0])
    target = 4 * n
    with dask.config.set({"dask_rec.umr.block-cap-factor": 0}):
        blocks, report = invert_unit_lower(L_small, n, EXACT, target_nnz=target, block_columns=32, wave_blocks=2)
    M = assemble_blocks(blocks)
    # pruning wave by wave keeps exactly the global top (a streaming top-k) ...
    want = prune_to_nnz(full, target, protect_diagonal=True)
    np.testing.assert_array_equal(M.toarray(), want.toarray())
    assert report[-1]["prunes"] >= 1 and report[-1]["nnz"] == M.nnz


# ---------------------------------------------------------------------------------------------
# UMR
# ---------------------------------------------------------------------------------------------


def test_umr_residual_falls_with_scans_and_finetune_without_pruning(L_small):
    n = L_small.shape[0]
    target = n * (n + 1) // 2
    finals = []
    for scans, finetune in [(0, 0), (1, 0), (2, 0), (3, 0), (3, 5), (3, 12)]:
        blocks, report = invert_unit_lower(
            L_small, n, UMR(scans=scans, finetune_steps=finetune), target_nnz=target, block_columns=64
        )
        mse = [r["mean_squared_residual_norm"] for r in report]
        # pass by pass, down to float32 round-off (M's entries are rounded to float32)
        assert all(b <= a * (1 + 1e-6) + 1e-14 for a, b in zip(mse, mse[1:])), mse
        assert all(r["prunes"] == 0 for r in report)
        M = assemble_blocks(blocks)
        assert residual_stats(L_small, M)[1] == pytest.approx(mse[-1], rel=1e-4)
        finals.append(mse[-1])
    assert all(b < a for a, b in zip(finals, finals[1:])), finals  # strictly better with more work
    assert finals[-1] < 1e-3 * finals[0]


def test_umr_pruned_meets_target_and_keeps_diagonal(L_ml100k):
    n = L_ml100k.shape[0]
    target = L_ml100k.nnz
    blocks, report = invert_unit_lower(L_ml100k, n, UMR(scans=3, finetune_steps=3), target_nnz=target, block_columns=200)
    M = assemble_blocks(blocks)
    np.testing.assert_array_equal(M.diagonal(), np.ones(n, np.float32))
    assert sp.triu(M, 1).nnz == 0
    off = np.abs(M.data[M.indices != np.repeat(np.arange(n), np.diff(M.indptr))])
    ties = int(np.sum(off == off.min()))
    assert M.nnz <= target + ties
    assert report[-1]["nnz"] == M.nnz
    assert sum(r["prunes"] for r in report) >= 1
    assert report[-1]["mean_squared_residual_norm"] < report[0]["mean_squared_residual_norm"] / 5


@pytest.mark.parametrize("factor", ["ml-100k", "near-identity"])
def test_incremental_summaries_equal_recomputed_ones(L_ml100k, factor, monkeypatch):
    """Summaries reuse the residual norms of unchanged columns, a scan whose threshold lies above
    every residual is skipped without tasks, and a prune whose threshold stays in the last
    one's coarse bin needs no second histogram round: none changes a number of the result."""
    import dask_rec.models.sansa.invert as inv

    L = L_ml100k if factor == "ml-100k" else random_unit_lower(400, 6, 0.05, 1)
    n = L.shape[0]
    kw = dict(target_nnz=L.nnz, block_columns=128, wave_blocks=2)
    config = UMR(scans=3, finetune_steps=5)
    skips, fine_rounds = [], []
    skip_scan, fine_task = inv._skip_scan, inv._fine_task
    monkeypatch.setattr(inv, "_skip_scan", lambda *a: skips.append(skip_scan(*a)) or skips[-1])
    monkeypatch.setattr(inv, "_fine_task", lambda *a: fine_rounds.append(1) or fine_task(*a))
    fast_blocks, fast = invert_unit_lower(L, n, config, **kw)
    fast_fine = len(fine_rounds)
    # ml-100k's residuals are above the first thresholds; the near-identity factor's are below
    assert skips == ([False] * 3 if factor == "ml-100k" else [True, False, False])

    summarise, prune = inv._Run.summarise, inv._Run.prune

    def from_scratch(self, handles, k):  # forget the previous summary every time
        self.summary_parts = self.summary_blocks = None
        return summarise(self, handles, k)

    def without_guess(self, *args, **kwargs):  # no guessed threshold bin: always a second round
        self.last_bin = None
        return prune(self, *args, **kwargs)

    monkeypatch.setattr(inv._Run, "summarise", from_scratch)
    monkeypatch.setattr(inv._Run, "prune", without_guess)
    monkeypatch.setattr(inv, "_skip_scan", lambda summary, skip_below: False)
    fine_rounds.clear()
    slow_blocks, slow = invert_unit_lower(L, n, config, **kw)
    assert fast_fine < len(fine_rounds)  # the guessed bin saved second rounds
    same_blocks(fast_blocks, slow_blocks)
    for a, b in zip(fast, slow):
        assert a["pass"] == b["pass"] and a["columns_updated"] == b["columns_updated"]
        assert a["max_residual_norm"] == b["max_residual_norm"] and a["nnz"] == b["nnz"]
        assert a["mean_squared_residual_norm"] == pytest.approx(b["mean_squared_residual_norm"], rel=1e-12)
    # the final report describes the final M
    from dask_rec.kernels.umr import residual_norms

    norms = residual_norms(L, assemble_blocks(fast_blocks), 0)
    assert fast[-1]["max_residual_norm"] == norms.max()


def test_umr_tiny_target_gives_identity(L_small):
    n = L_small.shape[0]
    blocks, _ = invert_unit_lower(L_small, n, UMR(scans=1, finetune_steps=1), target_nnz=n // 2, block_columns=100)
    np.testing.assert_array_equal(assemble_blocks(blocks).toarray(), np.eye(n, dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# executor and blocking invariance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [UMR(scans=3, finetune_steps=3), EXACT], ids=["umr", "exact"])
def test_in_process_equals_cluster(L_ml100k, dask_executor, config):
    n = L_ml100k.shape[0]
    kw = dict(target_nnz=L_ml100k.nnz, block_columns=256, wave_blocks=2)
    local, rep_local = invert_unit_lower(L_ml100k, n, config, executor=InProcessExecutor(), **kw)
    # L as a future with lineage (as the factorization stage hands it over)
    L_future = dask_executor.client.submit(lambda: L_ml100k, pure=False)
    remote, rep_remote = invert_unit_lower(L_future, n, config, executor=dask_executor, **kw)
    assert all(type(h).__name__ == "Future" for _, _, h in remote)  # M never gathered
    same_blocks(local, remote)
    for a, b in zip(rep_local, rep_remote):
        assert a["max_residual_norm"] == b["max_residual_norm"]
        assert a["mean_squared_residual_norm"] == b["mean_squared_residual_norm"]
        assert a["nnz"] == b["nnz"] and a["columns_updated"] == b["columns_updated"]


def test_matrix_handle_on_cluster(L_small, dask_executor):
    n = L_small.shape[0]
    kw = dict(target_nnz=3 * n, block_columns=50, wave_blocks=3)
    local, _ = invert_unit_lower(L_small, n, UMR(scans=2, finetune_steps=2), **kw)
    remote, _ = invert_unit_lower(L_small, n, UMR(scans=2, finetune_steps=2), executor=dask_executor, **kw)
    same_blocks(local, remote)


def test_block_columns_invariance_for_fixed_wave_columns(L_ml100k):
    """Contract: with the local cap not binding, M depends on the wave partition in columns,
    not on how a wave is cut into blocks."""
    n = L_ml100k.shape[0]
    results = []
    with dask.config.set({"dask_rec.umr.block-cap-factor": 0}):
        for bc, wb in [(96, 4), (192, 2), (384, 1)]:
            blocks, report = invert_unit_lower(
                L_ml100k, n, UMR(scans=3, finetune_steps=4), target_nnz=L_ml100k.nnz, block_columns=bc, wave_blocks=wb
            )
            results.append((assemble_blocks(blocks), report))
    for M, report in results[1:]:
        np.testing.assert_array_equal(M.indptr, results[0][0].indptr)
        np.testing.assert_array_equal(M.indices, results[0][0].indices)
        np.testing.assert_array_equal(M.data, results[0][0].data)
        assert [r["nnz"] for r in report] == [r["nnz"] for r in results[0][1]]


def test_local_cap_is_a_no_op_on_real_factor(L_ml100k):
    """The default cap (8 × a block's share) never binds on ml-100k: same M with and without."""
    n = L_ml100k.shape[0]
    out = []
    for factor in (0, 8):
        with dask.config.set({"dask_rec.umr.block-cap-factor": factor}):
            blocks, _ = invert_unit_lower(L_ml100k, n, UMR(scans=3, finetune_steps=4), target_nnz=L_ml100k.nnz, block_columns=128)
        out.append(assemble_blocks(blocks))
    assert (out[0] != out[1]).nnz == 0


def test_partition_defaults_and_config_keys():
    assert resolve_partition(20_000) == (4096, 1)  # 5 blocks, at most 16 waves
    assert resolve_partition(262_144) == (4096, 4)  # 64 blocks
    assert resolve_partition(1_000_000) == (15_625, 4)  # auto: 64 blocks above 262,144 items
    assert auto_block_columns(1_000_000, 50_000_000, 10 * 2**30) == 15_625
    small = auto_block_columns(1_000_000, 50_000_000, task_memory_bytes(1_000_000, 50_000_000, 2_000))
    assert small == 15_625 // 8 and task_memory_bytes(1_000_000, 50_000_000, small) <= \
        task_memory_bytes(1_000_000, 50_000_000, 2_000)  # halved until a task fits
    with dask.config.set({"dask_rec.umr.block-columns": 4096}):
        assert resolve_partition(1_000_000) == (4096, 16)  # 245 blocks
    assert resolve_partition(500) == (4096, 1)
    with dask.config.set({"dask_rec.umr.block-columns": 100, "dask_rec.umr.wave-blocks": 3}):
        assert resolve_partition(20_000) == (100, 3)
    with dask.config.set({"dask_rec.umr.waves-per-pass": 2}):
        assert resolve_partition(200_000) == (4096, 25)  # 49 blocks
    assert resolve_partition(20_000, 500, 7) == (500, 7)
    with pytest.raises(ValueError):
        resolve_partition(10, 0)


def test_rejects_bad_inputs(L_small):
    n = L_small.shape[0]
    with pytest.raises(TypeError):
        invert_unit_lower(L_small, n, object(), target_nnz=n)
    with pytest.raises(ValueError):
        invert_unit_lower(L_small, n + 1, EXACT, target_nnz=n)
    upper = sp.csc_matrix(L_small.T)
    upper.sort_indices()
    with pytest.raises(ValueError, match="above the diagonal"):
        invert_unit_lower(upper, n, EXACT, target_nnz=n)
    assert invert_unit_lower(sp.csc_matrix((0, 0), dtype=np.float32), 0, EXACT, target_nnz=0) == ([], [])


def test_logs_each_pass(L_small, caplog):
    n = L_small.shape[0]
    logger = logging.getLogger("test-invert")
    with caplog.at_level(logging.INFO, logger="test-invert"):
        _, report = invert_unit_lower(L_small, n, UMR(scans=2, finetune_steps=2), target_nnz=2 * n, logger=logger)
    assert [r["pass"] for r in report] == ["initial", "scan 0", "scan 1", "finetune 0", "finetune 1"]
    assert sum("mean ||r_j||^2" in m for m in caplog.messages) == len(report)


# ---------------------------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------------------------


REF_SCANS, REF_FINETUNE = 1, 3  # the reference is slow on this factor (~5 s per scan here)


def reference_umr(L, scans, finetune):
    inverters = pytest.importorskip("sansa.core.inverters")
    inv = inverters.UMRUnitLowerTriangleInverter(
        inverters.UMRUnitLowerTriangleInverterConfig(scans=scans, finetune_steps=finetune)
    )
    return sp.csc_matrix(inv.invert(L))


@pytest.fixture(scope="module")
def reference_ml100k(L_ml100k):
    return reference_umr(L_ml100k, REF_SCANS, REF_FINETUNE)


def test_reference_schedule_reproduces_reference(L_ml100k, reference_ml100k):
    """Waves of ceil(n·δ) columns (the reference's prune granularity), no local cap: the
    reference's M up to float rounding. (Checked by hand: entry for entry after 1 scan; after
    2 scans a near-tie at one of ~100 prunes flipped a few entries, which then propagated to
    1.5% of the entries, with residual statistics equal to 1e-4.)"""
    n = L_ml100k.shape[0]
    ncols = -(-L_ml100k.nnz // n)
    with dask.config.set({"dask_rec.umr.block-cap-factor": 0}):
        blocks, report = invert_unit_lower(
            L_ml100k, n, UMR(scans=REF_SCANS, finetune_steps=REF_FINETUNE), target_nnz=L_ml100k.nnz,
            block_columns=ncols, wave_blocks=1,
        )
    M = assemble_blocks(blocks)
    R = reference_ml100k
    ours, ref = residual_stats(L_ml100k, M), residual_stats(L_ml100k, R)
    assert ours[0] == pytest.approx(ref[0], rel=1e-3)
    assert ours[1] == pytest.approx(ref[1], rel=1e-3)
    assert M.nnz == R.nnz
    assert abs(M - R).max() < 1e-5


def test_default_schedule_close_to_reference(L_ml100k, reference_ml100k):
    n = L_ml100k.shape[0]
    _, report = invert_unit_lower(
        L_ml100k, n, UMR(scans=REF_SCANS, finetune_steps=REF_FINETUNE), target_nnz=L_ml100k.nnz
    )
    ref = residual_stats(L_ml100k, reference_ml100k)
    assert report[-1]["max_residual_norm"] <= 1.05 * ref[0]
    assert report[-1]["mean_squared_residual_norm"] <= 1.05 * ref[1]


@pytest.mark.slow
def test_yelp2020_default_schedule_close_to_reference():
    """yelp2020 (n = 20,092), Cholesky factor pruned to density 2e-3: our default partition vs
    the reference after 3 scans + 10 finetune steps (about 10 minutes, nearly all in the
    reference)."""
    L = unit_lower_from_gramian(load_interactions("yelp2020"), l2=10.0, density=2e-3)
    n = L.shape[0]
    _, report = invert_unit_lower(L, n, UMR(scans=3, finetune_steps=10), target_nnz=L.nnz)
    ref = residual_stats(L, reference_umr(L, 3, 10))
    assert report[-1]["max_residual_norm"] <= 1.25 * ref[0]
    assert report[-1]["mean_squared_residual_norm"] <= 1.25 * ref[1]
