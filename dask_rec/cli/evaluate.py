"""``dask-rec evaluate STORE``: hold out users, train on the rest, report Recall/NDCG/coverage."""

from __future__ import annotations

import json
import time

from . import add_cluster_arguments, cluster_from_args


def add_parser(subparsers) -> None:
    from dask_rec.models.registry import MODELS

    p = subparsers.add_parser(
        "evaluate", help="offline evaluation (strong generalization) of models side by side",
        description="Strong generalization: hold out users, train each model of --models on the others, and "
        "rank each held-out user's hidden items (20% of its interactions) from the rest. Prints one table of "
        "Recall@k, NDCG@k and coverage (rows) per model (columns), plus each model's fit seconds, all on "
        "the same split.",
    )
    p.add_argument("store", help="store written by 'dask-rec ingest'")
    p.add_argument("--models", default="sansa,pop",
                   help=f"comma-separated models to compare, from {', '.join(MODELS)} (default: sansa,pop)")
    p.add_argument("--test-users", type=int, default=None, help="held-out users (default: 10%%, at most 10,000)")
    p.add_argument("--target-fraction", type=float, default=0.2, help="share of each held-out user's items to hide")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--k", default="20,100", help="cut-offs, comma-separated (default: 20,100)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    for entry in MODELS.values():
        entry.add_options(p)
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from dask_rec.models.registry import get
    from dask_rec.data.store import open_store

    ks = _parse_ks(args.k)
    names = _parse_models(args.models)
    configs = {name: get(name).config(args) for name in names}
    store = open_store(args.store)
    with cluster_from_args(args) as client:
        results = evaluate_store(store, configs.get("sansa"), ks=ks, test_users=args.test_users, seed=args.seed,
                                 target_fraction=args.target_fraction, client=client, models=names,
                                 configs=configs)
    if args.json:
        print(json.dumps(results))
    else:
        print(format_results(results))
    return 0


def _parse_models(text: str) -> tuple:
    from dask_rec.models.registry import get

    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not names:
        raise ValueError(f"--models must name at least one model; got {text!r}")
    for name in names:
        get(name)  # unknown names: one error listing the known ones
    return names


#: Result keys of models whose key predates the registry.
_RESULT_KEYS = {"pop": "popularity"}


def evaluate_store(store, config=None, *, ks, test_users=None, seed=0, target_fraction=0.2, client=None,
                   models=("sansa", "pop"), configs=None) -> dict:
    """Split ``store`` once, fit each of ``models`` on the training users, evaluate them on the held-out users.

    ``config`` is SANSA's config; ``configs`` maps other model names to theirs (default configs
    otherwise). Returns the split's sizes, ``models`` (names in order), ``fit_seconds`` per
    model and each model's metrics under its name (``"popularity"`` for ``pop``).
    """
    from dask_rec.serving.evaluation import evaluate, split_strong_generalization
    from dask_rec.jsonable import to_jsonable
    from dask_rec.models.registry import get

    configs = dict(configs or {})
    if config is not None:
        configs["sansa"] = config
    X = store.to_scipy()
    n_test = test_users or max(1, min(10_000, X.shape[0] // 10))
    split = split_strong_generalization(X, n_test_users=n_test, seed=seed, target_fraction=target_fraction)
    results = {"n_train_users": int(split.train.shape[0]), "n_test_users": int(split.test_history.shape[0]),
               "n_items": int(X.shape[1]), "models": list(models), "fit_seconds": {}}
    for name in models:
        model = get(name).load_class()(configs.get(name))
        t0 = time.perf_counter()
        if name == "sansa":
            model.fit(split.train, client=client, progress=False)
        else:
            model.fit(split.train, client=client)
        results["fit_seconds"][name] = round(time.perf_counter() - t0, 2)
        report = getattr(model, "fit_report_", None)
        if report:
            results.setdefault("fit_reports", {})[name] = to_jsonable(report)
        exclude_seen = not getattr(model, "recommends_seen", False)  # UserPopRec ranks the user's own items
        t0 = time.perf_counter()
        results[_RESULT_KEYS.get(name, name)] = evaluate(model, split.test_history, split.test_targets, ks=ks,
                                                         client=client, exclude_seen=exclude_seen)
        results.setdefault("evaluate_seconds", {})[name] = round(time.perf_counter() - t0, 2)
    return results


def format_results(results: dict) -> str:
    """One table: rows = metrics at the cut-offs and fit seconds, columns = models."""
    names = results["models"]
    columns = [results[_RESULT_KEYS.get(n, n)] for n in names]
    keys = [k for k in columns[0] if "@" in k]
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"{results['n_test_users']} held-out users, {results['n_train_users']} training users, "
             f"{results['n_items']} items",
             f"{'metric':<14}" + "".join(f"{n:>{width}}" for n in names)]
    for key in keys:
        lines.append(f"{key:<14}" + "".join(f"{c[key]:>{width}.4f}" for c in columns))
    lines.append(f"{'fit seconds':<14}" + "".join(f"{results['fit_seconds'][n]:>{width}.2f}" for n in names))
    return "\n".join(lines)


def _parse_ks(text: str) -> tuple:
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--k must be comma-separated positive integers; got {text!r}") from None
    if not ks or min(ks) <= 0:
        raise ValueError(f"--k must be comma-separated positive integers; got {text!r}")
    return ks
