"""``dask-rec fit STORE MODEL``: train a SANSA model on a store, save it as a Zarr directory."""

from __future__ import annotations

import json
import time

from . import add_cluster_arguments, cluster_from_args
from ._model_options import add_model_arguments, config_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="train a SANSA model on an ingested store",
        description="Train SANSA on a store written by 'dask-rec ingest' and save the model (a Zarr directory).",
    )
    p.add_argument("store", help="store written by 'dask-rec ingest'")
    p.add_argument("model", help="output model directory (e.g. model.zarr)")
    add_model_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--performance-report", metavar="HTML", default=None,
                   help="write a Dask performance report of the fit to this HTML file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from dask_rec import SANSA
    from dask_rec.store import open_store

    config = config_from_args(args)
    if Path(args.model).exists() and not args.overwrite:
        raise FileExistsError(f"model {args.model!r} already exists; pass --overwrite to replace it")
    store = open_store(args.store)
    t0 = time.perf_counter()
    with cluster_from_args(args) as client:
        model = SANSA(config).fit(store, client=client, progress=False if args.no_progress else None,
                                  performance_report=args.performance_report)
        model.save(args.model, overwrite=args.overwrite)
    seconds = time.perf_counter() - t0
    report = model.fit_report_
    print(f"fitted {report['n_items']} items from {report['n_users']} users in {seconds:.1f} s; "
          f"stages: {json.dumps(report['stage_seconds'])}; model written to {args.model}")
    return 0
