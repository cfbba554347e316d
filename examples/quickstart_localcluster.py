"""Quick start on one machine: a LocalCluster, a synthetic log, ingest, fit, evaluate, recommend.

    python examples/quickstart_localcluster.py [--workdir quickstart] [--users 20000 --items 5000 --interactions 800000]
"""

import argparse
from pathlib import Path

from distributed import Client, LocalCluster

import dask_rec
from dask_rec.serving.evaluation import PopularityBaseline, evaluate, split_strong_generalization


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="quickstart")
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--interactions", type=int, default=800_000)
    args = p.parse_args(argv)
    work = Path(args.workdir)

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        # 1. a log with planted taste groups (or bring your own Parquet/CSV)
        log = dask_rec.generate_interactions(work / "log", args.users, args.items, args.interactions, overwrite=True)
        # 2. ingest it into a Zarr store of sparse row blocks
        store = dask_rec.ingest(log, work / "store.zarr", min_user_interactions=2, overwrite=True)
        print(store)
        # 3. offline evaluation: hold out 10% of the users
        split = split_strong_generalization(store, test_fraction=0.1, seed=0)
        config = dask_rec.SANSAConfig(l2=20.0, weight_matrix_density=5e-3)
        model = dask_rec.SANSA(config).fit(split.train)  # the current client runs the fit
        for name, scorer in (("SANSA", model), ("popularity", PopularityBaseline().fit(split.train))):
            metrics = evaluate(scorer, split.test_history, split.test_targets, ks=(20,))
            print(f"{name:>10}: Recall@20 {metrics['recall@20']:.4f}  NDCG@20 {metrics['ndcg@20']:.4f}")
        # 4. train on everyone, save, and recommend in the original IDs
        model = dask_rec.SANSA(config).fit(store)
        model.save(work / "model.zarr", overwrite=True)
        recs = model.recommend_users(store, k=10)
        print(recs.head(10))
        return recs


if __name__ == "__main__":
    main()
