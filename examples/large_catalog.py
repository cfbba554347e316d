"""A large catalog on one machine: a budget per item, the Gramian on disk, the memory plan.

At a million items a density of 5e-3 would be 5 billion entries per weight matrix; a budget per
item (``nnz_per_item``) keeps the model proportional to the catalog. With the ICF and the
popularity order (the defaults) the Gramian is computed as column blocks sized from the workers'
memory limits and, when it is large, written beside the store; the factorization streams over
them. This script shows the knobs on a size that runs in seconds; the defaults are a million
items (about ten minutes here, see the README's "A million items").

    python examples/large_catalog.py [--workdir large] [--users 2000000 --items 1000000 --interactions 48000000]
"""

import argparse
from pathlib import Path

import dask
from distributed import Client, LocalCluster

import dask_rec
from dask_rec.serving.evaluation import PopularityBaseline, evaluate, split_strong_generalization


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="large")
    p.add_argument("--users", type=int, default=2_000_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--interactions", type=int, default=48_000_000)
    p.add_argument("--nnz-per-item", type=float, default=50.0)
    p.add_argument("--gramian-on-disk", action="store_true", help="write the Gramian's blocks even when small")
    args = p.parse_args(argv)
    work = Path(args.workdir)

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        log = dask_rec.generate_interactions(work / "log", args.users, args.items, args.interactions,
                                             popularity_exponent=0.8, overwrite=True)
        store = dask_rec.ingest(log, work / "store.zarr", overwrite=True)
        split = split_strong_generalization(store, n_test_users=max(100, min(10_000, args.users // 10)), seed=0)
        config = dask_rec.SANSAConfig(l2=10.0, nnz_per_item=args.nnz_per_item)  # ICF, popularity order
        storage = "disk" if args.gramian_on_disk else "auto"
        with dask.config.set({"dask_rec.gramian.storage": storage,
                              "dask_rec.gramian.scratch-dir": str(work / "scratch")}):
            model = dask_rec.SANSA(config).fit(split.train, client=client)
        report = model.fit_report_
        print(f"{report['n_items']:,} items: Gramian with {report['factor']['gramian_nnz']:,} non-zeros in "
              f"{report['gramian']['blocks']} column blocks ({'on disk' if report['gramian']['on_disk'] else 'in memory'}); "
              f"stages {report['stage_seconds']}")
        recall = {}
        for name, scorer in (("SANSA", model), ("popularity", PopularityBaseline().fit(split.train))):
            metrics = evaluate(scorer, split.test_history, split.test_targets, ks=(20,), client=client)
            recall[name] = metrics["recall@20"]
            print(f"{name:>10}: Recall@20 {recall[name]:.4f}")
        return report, recall


if __name__ == "__main__":
    main()
