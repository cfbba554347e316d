"""A training job on a cluster that is already running, through a ``distributed.Client``.

    python examples/existing_cluster.py tcp://scheduler:8786 STORE MODEL [--l2 20 --density 5e-3]

STORE is a store written by ``dask-rec ingest`` (on a file system every worker sees); the fit
runs on the cluster (Gramian reduced across workers, factorization on the ``bigmem`` worker,
UMR column tasks everywhere) and the workers write the model to MODEL.
"""

import argparse

from distributed import Client

import dask_rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scheduler", help="scheduler address, e.g. tcp://127.0.0.1:8786")
    p.add_argument("store")
    p.add_argument("model")
    p.add_argument("--l2", type=float, default=20.0)
    p.add_argument("--density", type=float, default=5e-3)
    args = p.parse_args(argv)
    with Client(args.scheduler) as client:
        store = dask_rec.open_store(args.store)
        model = dask_rec.SANSA(dask_rec.SANSAConfig(l2=args.l2, weight_matrix_density=args.density))
        model.fit(store, client=client, performance_report=None)
        model.save(args.model, overwrite=True)  # the workers write the weights
        print(f"trained on {store.shape[0]} users x {store.shape[1]} items in "
              f"{model.fit_report_['total_seconds']} s: {model.fit_report_['stage_seconds']}")
        return model.fit_report_


if __name__ == "__main__":
    main()
