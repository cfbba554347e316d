"""A batch job: top-k for every user of a store, written as Parquet by the workers.

    python examples/batch_recommend_to_parquet.py MODEL STORE OUTPUT [--k 20] [--scheduler ADDRESS]

Each user block is scored and written by its own task (one part file per block) into a temporary
directory that is renamed to OUTPUT when every task has succeeded.
"""

import argparse

import dask_rec
from dask_rec.cluster import client_context


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("store")
    p.add_argument("output")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--scheduler", default=None, help="existing scheduler; default: a LocalCluster")
    args = p.parse_args(argv)
    model = dask_rec.SANSA.load(args.model)
    store = dask_rec.open_store(args.store)
    with client_context(scheduler=args.scheduler) as client:
        path = model.recommend_users(store, k=args.k, output=args.output, overwrite=True, client=client)
    print(f"recommendations for {store.shape[0]} users written to {path}")
    return path


if __name__ == "__main__":
    main()
