"""Batch recommendation throughput and memory: dask_rec against the reference ``sansa`` 1.1.0.

Trains weights with the reference (ICF; cached between runs) on a shared dataset, or loads given
weights, then times top-``k`` recommendation with the user's own items excluded for the same users
and the same weights:

- ``sansa``: ``sansa.SANSA(...).load_weights((W1, W2)).recommend(X, k, True)`` on the whole batch;
- ``kernel``: :func:`dask_rec.kernels.scoring.recommend_block` on the whole batch (arrays, like
  the reference returns), on 1 thread and on all cores;
- ``recommend_users``: :func:`dask_rec.serving.recommend.recommend_users` (a DataFrame in original
  IDs) in process and on a 2-worker ``LocalCluster`` (1 thread each), for two block sizes.

The reference crashes ("kth out of bounds") when a user has fewer than ``k`` candidates, so the
users are drawn (seeded) among those for which the model has at least ``k`` candidates.

Each measurement runs in its own subprocess: one warm-up call (numba compilation or cache load,
cluster start), then ``--repeats`` timed calls, the best kept (other jobs share these cores).
Throughput is users over the wall time of the best run; since other jobs may share the cores,
users per CPU-second (client process plus workers) is printed too. Peak memory is the growth of the
resident set during a call (``VmHWM`` after resetting it via
``/proc/self/clear_refs``, minus ``VmRSS`` before; Linux), for the client process and, on the
cluster, the largest over the workers. The model and the users' rows are loaded before measuring.

Run::

    python benchmarks/bench_recommend.py --dataset gowalla --density 1e-3 --n-users 4000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# ---------------------------------------------------------------------------------------------- memory


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak() -> int:
    """Reset the peak-RSS mark; return the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def peak_growth(before: int) -> int:
    return max(0, _status("VmHWM") - before)


# ---------------------------------------------------------------------------------------------- one measurement


def _measure(kind: str, workdir: Path, k: int, block: int, repeats: int) -> dict:
    import scipy.sparse as sp

    X = sp.load_npz(workdir / "X.npz").tocsr()
    W1 = sp.load_npz(workdir / "W1.npz").tocsr()
    W2 = sp.load_npz(workdir / "W2.npz").tocsr()
    n = X.shape[0]
    result: dict = {"kind": kind, "block": block, "users": n}
    client = cluster = None

    if kind == "sansa":
        import warnings

        import sansa

        config = sansa.SANSAConfig(
            l2=1.0, weight_matrix_density=1e-3,
            gramian_factorizer_config=sansa.ICFGramianFactorizerConfig(),
            lower_triangle_inverter_config=sansa.UMRUnitLowerTriangleInverterConfig(),
        )
        model = sansa.SANSA(config).load_weights((W1, W2))

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return model.recommend(X, k, True)
    elif kind.startswith("kernel"):
        from dask_rec.kernels.scoring import recommend_block

        threads = 1 if kind == "kernel-1t" else (os.cpu_count() or 1)

        def run():
            return recommend_block(X, W1, W2, k, exclude_seen=True, n_threads=threads)
    else:
        from dask_rec.serving.recommend import recommend_users

        if kind == "cluster":
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)

        def run():
            return recommend_users((W1, W2), X, k=k, client=client, users_per_block=block)

    out = run()  # warm-up
    times, cpu, growth, worker_growth, worker_cpu = [], [], [], [], []
    for _ in range(repeats):
        before = reset_peak()
        if client is not None:
            w_before = client.run(reset_peak)
            w_cpu = client.run(time.process_time)
        t, c = time.perf_counter(), time.process_time()
        out = run()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if client is not None:
            w_cpu_after = client.run(time.process_time)
            worker_cpu.append(sum(w_cpu_after[a] - w_cpu[a] for a in w_cpu))
        growth.append(peak_growth(before))
        if client is not None:
            w_after = client.run(peak_growth_of_worker, w_before)
            worker_growth.append(max(w_after.values()))
    best = int(np.argmin(times))
    result.update(seconds=times[best], all_seconds=times, users_per_s=n / times[best],
                  cpu_seconds=cpu[best] + (worker_cpu[best] if worker_cpu else 0.0),
                  client_peak_bytes=max(growth))
    if worker_growth:
        result["worker_peak_bytes"] = max(worker_growth)
    if kind in ("sansa", "kernel", "kernel-1t"):
        np.save(workdir / f"ids-{kind}.npy", out[0])
    else:
        result["rows"] = len(out)
    if client is not None:
        client.close()
        cluster.close()
    return result


def peak_growth_of_worker(before_by_worker, dask_worker=None):
    """Run on a worker by ``client.run``: its peak RSS growth since :func:`reset_peak`."""
    before = before_by_worker[dask_worker.address] if dask_worker is not None else 0
    return peak_growth(before)


# ---------------------------------------------------------------------------------------------- setup


def _load_matrix(dataset: str):
    import pandas as pd
    import scipy.sparse as sp

    path = DATASETS / dataset / "interactions.parquet"
    if not path.exists():
        sys.exit(f"shared dataset {dataset!r} not found at {path}")
    df = pd.read_parquet(path, columns=["user_id", "item_id"])
    users, _ = pd.factorize(df["user_id"], sort=True)
    items, _ = pd.factorize(df["item_id"], sort=True)
    X = sp.csr_matrix((np.ones(len(df), np.float32), (users, items)))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def _weights(args, X):
    import scipy.sparse as sp

    if args.weights:
        return tuple(sp.load_npz(p).tocsr().astype(np.float32) for p in args.weights)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"{args.dataset}-l2{args.l2:g}-d{args.density:g}"
    if Path(f"{stem}-W1.npz").exists():
        return sp.load_npz(f"{stem}-W1.npz").tocsr(), sp.load_npz(f"{stem}-W2.npz").tocsr()
    import sansa

    config = sansa.SANSAConfig(
        l2=args.l2, weight_matrix_density=args.density,
        gramian_factorizer_config=sansa.ICFGramianFactorizerConfig(),
        lower_triangle_inverter_config=sansa.UMRUnitLowerTriangleInverterConfig(scans=1, finetune_steps=5),
    )
    t = time.perf_counter()
    W1, W2 = sansa.SANSA(config).fit(X).weights
    print(f"trained the reference (ICF, l2={args.l2:g}, density={args.density:g}) in {time.perf_counter() - t:.1f} s",
          flush=True)
    sp.save_npz(f"{stem}-W1.npz", W1)
    sp.save_npz(f"{stem}-W2.npz", W2)
    return W1.tocsr(), W2.tocsr()


def _fmt_bytes(b) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:,.0f} MiB"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gowalla")
    parser.add_argument("--l2", type=float, default=10.0)
    parser.add_argument("--density", type=float, default=1e-3)
    parser.add_argument("--weights", nargs=2, metavar=("W1.npz", "W2.npz"), help="use these weights (scipy npz)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dask_rec_bench"))
    parser.add_argument("--n-users", type=int, default=4000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--block-sizes", type=int, nargs=2, default=(500, 4000))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: run one measurement
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        res = _measure(args.measure, Path(args.workdir), args.k, args.block, args.repeats)
        print("RESULT " + json.dumps(res))
        return

    import scipy.sparse as sp

    from dask_rec.kernels.scoring import recommend_block

    X = _load_matrix(args.dataset)
    W1, W2 = _weights(args, X)
    if W1.shape[0] != X.shape[1]:
        sys.exit(f"weights have {W1.shape[0]} items; {args.dataset} has {X.shape[1]}")
    # users for which the model has >= k candidates (the reference crashes otherwise)
    ids, _ = recommend_block(X, W1, W2, args.k, n_threads=os.cpu_count() or 1)
    full = np.flatnonzero((ids >= 0).all(axis=1))
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(full, size=min(args.n_users, full.size), replace=False))
    print(f"{args.dataset}: {X.shape[0]:,} users x {X.shape[1]:,} items, {X.nnz:,} interactions; "
          f"W1/W2 {W1.nnz:,} / {W2.nnz:,} non-zeros; {full.size:,} users have >= {args.k} candidates, "
          f"{chosen.size:,} drawn; {os.cpu_count()} cores", flush=True)
    # the work exact scoring cannot avoid: one multiply-add per stored entry of W2 a user reaches
    X_chosen = X[chosen]
    latent = (X_chosen @ W1).tocsr()
    reached = np.diff(W2.indptr)[latent.indices].sum() / max(chosen.size, 1)
    print(f"per user: {latent.nnz / max(chosen.size, 1):,.0f} latent entries reaching {reached:,.0f} "
          f"entries of W2 ({W2.data.nbytes + W2.indices.nbytes:,} bytes)", flush=True)

    plan = [("sansa", 0), ("kernel-1t", 0), ("kernel", 0)]
    plan += [("in-process", b) for b in args.block_sizes] + [("cluster", b) for b in args.block_sizes]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sp.save_npz(work / "X.npz", X_chosen)
        sp.save_npz(work / "W1.npz", W1)
        sp.save_npz(work / "W2.npz", W2)
        for kind, block in plan:
            cmd = [sys.executable, __file__, "--measure", kind, "--workdir", tmp, "--k", str(args.k),
                   "--block", str(block), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{kind} failed:\n{proc.stderr[-3000:]}", flush=True)
                continue
            res = json.loads(lines[-1][len("RESULT "):])
            results.append(res)
            print(f"  {kind:<11} block={block or '-':<5} {res['users_per_s']:>10,.0f} users/s  "
                  f"(best of {[round(s, 3) for s in res['all_seconds']]} s)", flush=True)
        ref_ids = np.load(work / "ids-sansa.npy") if (work / "ids-sansa.npy").exists() else None
        ours_ids = np.load(work / "ids-kernel.npy") if (work / "ids-kernel.npy").exists() else None
    agree = float((ref_ids == ours_ids).mean()) if ref_ids is not None and ours_ids is not None else None

    ref = next((r for r in results if r["kind"] == "sansa"), None)
    print()
    print(f"k={args.k}, seen items excluded, {chosen.size:,} users, best of {args.repeats}")
    print(f"{'method':<34} {'block':>6} {'users/s':>10} {'vs sansa':>9} {'CPU s':>7} {'users/CPU-s':>12} "
          f"{'vs sansa':>9} {'peak client':>12} {'peak worker':>12}")
    names = {"sansa": "sansa 1.1.0 SANSA.recommend", "kernel-1t": "dask_rec recommend_block, 1 thread",
             "kernel": f"dask_rec recommend_block, {os.cpu_count()} thr",
             "in-process": "recommend_users in process", "cluster": "recommend_users 2-worker cluster"}
    for r in results:
        per_cpu = r["users"] / r["cpu_seconds"]
        ratio = f"{r['users_per_s'] / ref['users_per_s']:.1f}x" if ref else "-"
        cpu_ratio = f"{per_cpu / (ref['users'] / ref['cpu_seconds']):.1f}x" if ref else "-"
        print(f"{names[r['kind']]:<34} {r['block'] or '-':>6} {r['users_per_s']:>10,.0f} {ratio:>9} "
              f"{r['cpu_seconds']:>7.2f} {per_cpu:>12,.0f} {cpu_ratio:>9} {_fmt_bytes(r['client_peak_bytes']):>12} "
              f"{_fmt_bytes(r.get('worker_peak_bytes')):>12}")
    print(f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores. "
          "CPU s: CPU time of the best run, client process plus workers)")
    if agree is not None:
        print(f"\ntop-{args.k} ids identical to the reference's at {agree:.4%} of positions (ties aside)")


if __name__ == "__main__":
    main()
