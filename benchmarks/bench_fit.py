"""Fit time, peak memory and accuracy: dask_rec against the reference ``sansa`` 1.1.0, side by side.

Each contender runs in a fresh process on the same training split and config:

* ``sansa``: the reference, in one process;
* ``dask_rec (in-process)``: our pipeline with no cluster;
* ``dask_rec (LocalCluster xN)``: our pipeline on an N-worker, 1-thread-per-worker LocalCluster
  (fit time excludes the cluster's start-up; peak memory is reported per process and summed).

Accuracy is measured for all with the same code (strong generalization: held-out users, 20% of
each held-out user's items as targets, seed 0), Recall@20 and NDCG@100.

    python benchmarks/bench_fit.py --dataset amazon-book-kgat --factorizer icf --l2 10 --density 2e-3 --scans 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from _common import format_table, load_matrix, peak_rss_mib, run_json_subprocess, write_split


def _config(args, ours: bool):
    if ours:
        import dask_rec as m
    else:
        import sansa as m
    factorizer = (m.ICFGramianFactorizerConfig() if args.factorizer == "icf" else m.CHOLMODGramianFactorizerConfig())
    if ours:
        factorizer.reordering_method = args.ordering
    inverter = m.UMRUnitLowerTriangleInverterConfig(scans=args.scans, finetune_steps=args.finetune_steps)
    return m.SANSAConfig(l2=args.l2, weight_matrix_density=args.density, gramian_factorizer_config=factorizer,
                         lower_triangle_inverter_config=inverter)


def _evaluate(weights, split_dir: str) -> dict:
    from dask_rec.serving.evaluation import evaluate

    history = sp.load_npz(os.path.join(split_dir, "history.npz")).tocsr()
    targets = sp.load_npz(os.path.join(split_dir, "targets.npz")).tocsr()
    m = evaluate(weights, history, targets, ks=(20, 100))
    return {"recall@20": m["recall@20"], "ndcg@100": m["ndcg@100"]}


def worker_main(args) -> None:
    """One contender, in its own process; prints one JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    train = sp.load_npz(os.path.join(args.split_dir, "train.npz")).tocsr()
    out = {"contender": args.contender}
    if args.contender == "sansa":
        import sansa

        model = sansa.SANSA(_config(args, ours=False))
        t0 = time.perf_counter()
        model.fit(train)
        out["fit_s"] = time.perf_counter() - t0
        weights = model.weights
        out["peak_mib"] = out["peak_sum_mib"] = peak_rss_mib()
    elif args.contender == "inprocess":
        from dask_rec import SANSA

        model = SANSA(_config(args, ours=True))
        t0 = time.perf_counter()
        model.fit(train)
        out["fit_s"] = time.perf_counter() - t0
        weights = model.weights
        out["peak_mib"] = out["peak_sum_mib"] = peak_rss_mib()
        out["stages"] = model.fit_report_["stage_seconds"]
    else:
        from distributed import Client, LocalCluster

        from dask_rec import SANSA

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=None,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("dask_rec.models.sansa.training"))  # warm imports, as a long-lived cluster would be
            model = SANSA(_config(args, ours=True))
            t0 = time.perf_counter()
            model.fit(train, client=client, progress=False)
            client.gather(model._weights_handle)
            out["fit_s"] = time.perf_counter() - t0
            weights = model.weights
            workers = client.run(peak_rss_mib)
            out["worker_peak_mib"] = sorted(round(v) for v in workers.values())
            out["peak_mib"] = max(max(workers.values()), peak_rss_mib())
            out["peak_sum_mib"] = sum(workers.values()) + peak_rss_mib()
            out["stages"] = model.fit_report_["stage_seconds"]
    out["weights_nnz"] = int(weights[0].nnz + weights[1].nnz)
    out.update(_evaluate(weights, args.split_dir))
    print(json.dumps(out))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="amazon-book-kgat")
    p.add_argument("--factorizer", choices=("icf", "cholmod"), default="icf")
    p.add_argument("--ordering", default="colamd", help="our ordering (the reference always uses colamd)")
    p.add_argument("--l2", type=float, default=10.0)
    p.add_argument("--density", type=float, default=2e-3)
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--finetune-steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--test-users", type=int, default=None, help="held-out users (default: 10%%, at most 10,000)")
    p.add_argument("--contenders", default="sansa,inprocess,cluster")
    p.add_argument("--contender", help=argparse.SUPPRESS)
    p.add_argument("--split-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.contender:
        return worker_main(args)

    X = load_matrix(args.dataset)
    rows = []
    with tempfile.TemporaryDirectory() as split_dir:
        n_test = write_split(X, split_dir, args.test_users)
        base = [a for a in (argv or sys.argv[1:])]
        for contender in args.contenders.split(","):
            res = run_json_subprocess([__file__, *base, "--contender", contender, "--split-dir", split_dir])
            rows.append(res)
            print(json.dumps(res), file=sys.stderr)
    ref = next((r for r in rows if r["contender"] == "sansa"), None)
    for r in rows:
        if ref:
            r["speedup"] = ref["fit_s"] / r["fit_s"]
            r["recall_rel"] = r["recall@20"] / ref["recall@20"] - 1
            r["ndcg_rel"] = r["ndcg@100"] / ref["ndcg@100"] - 1
        if r["contender"] == "cluster":
            r["contender"] = f"cluster x{args.workers}"
    print(f"\n{args.dataset}: {X.shape[0]} users x {X.shape[1]} items, {X.nnz} interactions; "
          f"{args.factorizer}, ordering(ours)={args.ordering}, l2={args.l2}, density={args.density}, "
          f"scans={args.scans}, finetune={args.finetune_steps}; {n_test} held-out users")
    print(format_table(rows, ["contender", "fit_s", "speedup", "peak_mib", "peak_sum_mib", "recall@20", "recall_rel",
                              "ndcg@100", "ndcg_rel", "weights_nnz"]))


if __name__ == "__main__":
    main()
