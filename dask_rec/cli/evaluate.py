"""``dask-rec evaluate STORE``: hold out users, train on the rest, report Recall/NDCG/coverage."""

from __future__ import annotations

import json
import time

from . import add_cluster_arguments, cluster_from_args
from ._model_options import add_model_arguments, config_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="offline evaluation (strong generalization) against a popularity baseline",
        description="Strong generalization: hold out users, train SANSA on the others, and rank each "
        "held-out user's hidden items (20%% of its interactions) from the rest. Prints Recall@k, NDCG@k "
        "and coverage of SANSA and of a most-popular baseline.",
    )
    p.add_argument("store", help="store written by 'dask-rec ingest'")
    p.add_argument("--test-users", type=int, default=None, help="held-out users (default: 10%%, at most 10,000)")
    p.add_argument("--target-fraction", type=float, default=0.2, help="share of each held-out user's items to hide")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--k", default="20,100", help="cut-offs, comma-separated (default: 20,100)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_model_arguments(p)
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dask_rec.store import open_store

    ks = _parse_ks(args.k)
    config = config_from_args(args)
    store = open_store(args.store)
    with cluster_from_args(args) as client:
        results = evaluate_store(store, config, ks=ks, test_users=args.test_users, seed=args.seed,
                                 target_fraction=args.target_fraction, client=client)
    if args.json:
        print(json.dumps(results))
    else:
        print(format_results(results))
    return 0


def evaluate_store(store, config, *, ks, test_users=None, seed=0, target_fraction=0.2, client=None) -> dict:
    """Split ``store``, fit on the training users, evaluate SANSA and popularity on the held-out users."""
    from dask_rec import SANSA
    from dask_rec.evaluation import PopularityBaseline, evaluate, split_strong_generalization

    X = store.to_scipy()
    n_test = test_users or max(1, min(10_000, X.shape[0] // 10))
    split = split_strong_generalization(X, n_test_users=n_test, seed=seed, target_fraction=target_fraction)
    t0 = time.perf_counter()
    model = SANSA(config).fit(split.train, client=client, progress=False)
    fit_seconds = time.perf_counter() - t0
    sansa = evaluate(model, split.test_history, split.test_targets, ks=ks, client=client)
    popular = evaluate(PopularityBaseline().fit(split.train), split.test_history, split.test_targets, ks=ks,
                       client=client)
    return {"n_train_users": int(split.train.shape[0]), "n_test_users": int(split.test_history.shape[0]),
            "n_items": int(X.shape[1]), "fit_seconds": round(fit_seconds, 2),
            "sansa": sansa, "popularity": popular}


def format_results(results: dict) -> str:
    keys = [k for k in results["sansa"] if "@" in k]
    lines = [f"{results['n_test_users']} held-out users, {results['n_train_users']} training users, "
             f"{results['n_items']} items; fit {results['fit_seconds']} s",
             f"{'metric':<14}{'SANSA':>10}{'popularity':>12}"]
    for key in keys:
        lines.append(f"{key:<14}{results['sansa'][key]:>10.4f}{results['popularity'][key]:>12.4f}")
    return "\n".join(lines)


def _parse_ks(text: str) -> tuple:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--k must be comma-separated positive integers; got {text!r}") from None
    if not ks or min(ks) <= 0:
        raise ValueError(f"--k must be comma-separated positive integers; got {text!r}")
    return ks
