"""``dask-rec demo``: the whole job end to end on a synthetic log, on a LocalCluster (or --scheduler).

generate → ingest → evaluate (held-out users, SANSA vs most-popular) → fit on everyone → save →
recommend for every user (Parquet). Prints each stage's time and where everything was written.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import add_cluster_arguments, cluster_from_args

#: The embedded default: a few minutes on 2 cores.
DEFAULTS = {"users": 30_000, "items": 10_000, "interactions": 1_500_000}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run generate -> ingest -> evaluate -> fit -> recommend on a synthetic log",
        description="End-to-end demo on a synthetic interaction log with planted taste groups. "
        "Everything is written under --workdir.",
    )
    p.add_argument("--workdir", default="demo-output", help="where to write the log, store, model and "
                   "recommendations (default: ./demo-output)")
    p.add_argument("--users", type=int, default=DEFAULTS["users"], help="synthetic users (default: %(default)s)")
    p.add_argument("--items", type=int, default=DEFAULTS["items"], help="synthetic items (default: %(default)s)")
    p.add_argument("--interactions", type=int, default=DEFAULTS["interactions"],
                   help="synthetic interactions, approximately (default: %(default)s)")
    p.add_argument("-k", type=int, default=20, help="recommendations per user (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator and of the split")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dask_rec import SANSA, SANSAConfig, UMRUnitLowerTriangleInverterConfig, ingest
    from dask_rec.data.synthetic import generate_interactions

    from .evaluate import evaluate_store, format_results

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    log, store_path, model_path, recs = (work / "log", work / "store.zarr", work / "model.zarr",
                                         work / "recommendations")
    config = SANSAConfig(l2=20.0, weight_matrix_density=5e-3,
                         lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(scans=3, finetune_steps=10))
    times = {}

    def stage(name):
        times[name] = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)

    def done(name, message):
        times[name] = time.perf_counter() - times[name]
        print(f"[demo] {name}: {message} ({times[name]:.1f} s)", flush=True)

    stage("generate")
    generate_interactions(log, args.users, args.items, args.interactions, seed=args.seed, overwrite=True)
    done("generate", f"synthetic log in {log}")
    with cluster_from_args(args) as client:
        if client.dashboard_link:
            print(f"[demo] Dask dashboard: {client.dashboard_link}")
        stage("ingest")
        store = ingest(log, store_path, min_user_interactions=2, overwrite=True, client=client)
        done("ingest", f"{store.shape[0]:,} users x {store.shape[1]:,} items, {store.nnz:,} interactions, "
                       f"{store.n_blocks} blocks in {store_path}")
        stage("evaluate")
        results = evaluate_store(store, config, ks=(20, 100), seed=args.seed, client=client)
        done("evaluate", "held-out users, SANSA against most popular")
        print(format_results(results))
        stage("fit")
        model = SANSA(config).fit(store, client=client, progress=False)
        model.save(model_path, overwrite=True)
        done("fit", f"model of {store.shape[1]:,} items saved to {model_path}; stages "
                    f"{model.fit_report_['stage_seconds']}")
        stage("recommend")
        model.recommend_users(store, k=args.k, output=recs, overwrite=True, client=client)
        rate = store.shape[0] / (time.perf_counter() - times["recommend"])
        done("recommend", f"top-{args.k} for {store.shape[0]:,} users written to {recs} ({rate:.0f} users/s)")
    print(f"[demo] done. Recommendations (user_id, item_id, score, rank): {recs.resolve()}")
    print(f"[demo] read them with: pandas.read_parquet({str(recs)!r})")
    return 0
