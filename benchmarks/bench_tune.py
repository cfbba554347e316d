"""``dask_rec.tune``: what a grid costs against one fit, and what tuning buys on the test users.

Two parts, each on a 2-worker, 1-thread-per-worker LocalCluster, in one run:

* ``timing`` (gowalla): the wall time of one SANSA fit (``--single-l2``, ``--single-density``) on the
  trials' training users, then of ``tune`` over the ``--l2`` x ``--density`` grid (one shared
  Gramian, trials side by side), on the same cluster after a warm-up fit (numba compiled on both
  workers). The target: the grid costs at most 3x the single fit.
* ``accuracy`` (gowalla, amazon-book-kgat, yelp2020): the protocol of issue 15's peers (10% of the
  users held out, at most 10,000, 20% of their items hidden, seed 0). ``tune`` chooses on
  validation users carved from the other users; the chosen config is fitted on all the other
  users and scored on the test users (Recall@20, NDCG@100).

    python benchmarks/bench_tune.py timing --dataset gowalla
    python benchmarks/bench_tune.py accuracy --datasets gowalla,amazon-book-kgat,yelp2020
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from _common import format_table, load_matrix

#: issue 15's best peer per dataset: (name, Recall@20, NDCG@100)
PEERS = {"gowalla": ("implicit Cosine", 0.1885, 0.2022), "amazon-book-kgat": ("dense EASE λ200", 0.2568, 0.1857),
         "yelp2020": ("implicit ALS", 0.1766, 0.1784)}


def _floats(text):
    return [float(x) for x in text.split(",") if x.strip()]


def _cluster(workers):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    return cluster, Client(cluster)


def _warm_up(client):
    import scipy.sparse as sp

    from dask_rec import SANSA, SANSAConfig

    X = sp.random(400, 300, density=0.05, format="csr", random_state=0, dtype="float32")
    X.data[:] = 1.0
    for _ in range(2):  # each worker compiles its kernels once
        SANSA(SANSAConfig(l2=10.0, weight_matrix_density=2e-2)).fit(X, client=client, progress=False)


def timing(args) -> dict:
    from distributed import get_task_stream

    from dask_rec import SANSA, SANSAConfig
    from dask_rec.serving.evaluation import evaluate, split_strong_generalization
    from dask_rec.tuning.search import tune, validation_split
    from dask_rec.tuning.space import grid_points

    X = load_matrix(args.dataset)
    test_rows = split_strong_generalization(X, n_test_users=min(10_000, X.shape[0] // 10), seed=0).test_users
    space = {"l2": _floats(args.l2), "density": _floats(args.density)}
    out = {"dataset": args.dataset, "workers": args.workers, "grid": space, "runs": []}
    cluster, client = _cluster(args.workers)
    try:
        _warm_up(client)
        split = validation_split(X, test_users=test_rows)
        single_config = SANSAConfig(l2=args.single_l2, weight_matrix_density=args.single_density)
        t0 = time.perf_counter()
        model = SANSA(single_config).fit(split.train, client=client, progress=False)
        _ = model.weights
        single = time.perf_counter() - t0
        out.update({"single_fit_s": round(single, 2), "single_config": [args.single_l2, args.single_density],
                    "single_stages": model.fit_report_["stage_seconds"]})
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            with get_task_stream(client) as stream:
                t0 = time.perf_counter()
                result = tune(X, space, test_users=test_rows, client=client, concurrency=concurrency, progress=True)
                grid = time.perf_counter() - t0
            factorize = [(t["worker"], t["startstops"][-1]["stop"] - t["startstops"][-1]["start"])
                         for t in stream.data if str(t["key"]).startswith("factorize-")]
            by_worker = {}
            for worker, seconds in factorize:
                by_worker[worker] = round(by_worker.get(worker, 0.0) + seconds, 2)
            run = {"concurrency": result.info["concurrency"], "tune_s": round(grid, 2), "ratio": round(grid / single, 2),
                   "gramian_s": result.info.get("gramian_seconds"), "factorize_s_by_worker": by_worker,
                   "trials": [{**t["params"], "fit_s": t["fit_seconds"], "s": t["seconds"],
                               **{k: round(v, 2) for k, v in t["stage_seconds"].items()},
                               "ndcg@100": round(t["value"], 4)} for t in result.ordered_trials()]}
            out["runs"].append(run)
            print(format_table(run["trials"], ["l2", "density", "fit_s", "factorize", "invert", "s", "ndcg@100"]))
            print(f"{args.dataset}: single fit {single:.1f} s, {len(result.trials)}-trial grid {grid:.1f} s "
                  f"(Gramian once {run['gramian_s']} s, {run['concurrency']} at a time): {grid / single:.2f}x; "
                  f"factorize seconds by worker {by_worker}", flush=True)
        if args.separate:  # every config fitted from scratch, one after the other (what refit-per-trial costs)
            t0 = time.perf_counter()
            for point in grid_points(space):
                m = SANSA(SANSAConfig(l2=point["l2"], weight_matrix_density=point["density"]))
                m.fit(split.train, client=client, progress=False)
                evaluate(m, split.test_history, split.test_targets, client=client)
            out["separate_fits_s"] = round(time.perf_counter() - t0, 2)
            print(f"{args.dataset}: the same grid as separate fits, one after the other: {out['separate_fits_s']} s "
                  f"({out['separate_fits_s'] / single:.2f}x the single fit)", flush=True)
    finally:
        client.close()
        cluster.close()
    return out


def accuracy(args) -> dict:
    from dask_rec import SANSA
    from dask_rec.serving.evaluation import evaluate, split_strong_generalization
    from dask_rec.tuning.search import tune

    space = {"l2": _floats(args.l2), "density": _floats(args.density)}
    rows, out = [], {"grid": space, "metric": args.metric, "datasets": {}}
    cluster, client = _cluster(args.workers)
    try:
        _warm_up(client)
        for name in args.datasets.split(","):
            X = load_matrix(name)
            test = split_strong_generalization(X, n_test_users=min(10_000, X.shape[0] // 10), seed=0)
            t0 = time.perf_counter()
            result = tune(X, space, metric=args.metric, test_users=test.test_users, client=client,
                          concurrency=int(args.concurrency.split(",")[0]), progress=True)
            tune_s = time.perf_counter() - t0
            model = SANSA(result.best_config).fit(test.train, client=client, progress=False)
            m = evaluate(model.weights, test.test_history, test.test_targets, ks=(20, 100))
            peer = PEERS.get(name, ("-", None, None))
            row = {"dataset": name, "l2": result.best_params["l2"], "density": result.best_params["density"],
                   f"val {args.metric}": round(result.best["value"], 4), "test R@20": round(m["recall@20"], 4),
                   "test N@100": round(m["ndcg@100"], 4), "best peer": peer[0], "peer R@20": peer[1],
                   "peer N@100": peer[2], "tune s": round(tune_s, 1)}
            rows.append(row)
            out["datasets"][name] = {**row, "trials": result.ordered_trials()}
            print(result.table(), flush=True)
    finally:
        client.close()
        cluster.close()
    print(format_table(rows, list(rows[0])))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("timing", "accuracy"))
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--datasets", default="gowalla,amazon-book-kgat,yelp2020")
    p.add_argument("--l2", default="1,10,100")
    p.add_argument("--density", default="1e-4,5e-4,2e-3")
    p.add_argument("--single-l2", type=float, default=10.0)
    p.add_argument("--single-density", type=float, default=5e-4)
    p.add_argument("--metric", default="ndcg@100")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", default="2", help="timing: comma-separated trial concurrencies to run")
    p.add_argument("--separate", action="store_true", help="timing: also fit the grid's configs one by one")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = timing(args) if args.part == "timing" else accuracy(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
