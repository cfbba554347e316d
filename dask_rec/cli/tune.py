"""``dask-rec tune STORE --l2 1,10,100 --density 1e-4,5e-4,2e-3``: choose a model's hyper-parameters.

Thin over :func:`dask_rec.tune`: holds out ``--test-users`` first (never looked at), tunes on
validation users carved from the rest, prints the trials (or ``--json``), draws ``--plot``, writes
the best config (``--config-out``, read by ``dask-rec fit --config``) and with ``--refit`` trains
it on all the data and saves it.
"""

from __future__ import annotations

import json
import sys

from . import add_cluster_arguments, cluster_from_args

#: space parameter -> (option, value type)
_OPTIONS = {
    "l2": ("--l2", float), "density": ("--density", float), "nnz_per_item": ("--nnz-per-item", float),
    "k": ("--knn-k", int), "shrinkage": ("--knn-shrinkage", float), "similarity": ("--knn-similarity", str),
}


def add_parser(subparsers) -> None:
    from dask_rec.tuning.space import TUNABLE

    p = subparsers.add_parser(
        "tune", help="choose a model's hyper-parameters on validation users (SANSA trials share one Gramian)",
        description="Hold out --test-users (never looked at), carve validation users from the other users "
        "(strong generalization, as 'dask-rec evaluate'), fit one model per point of the space on the rest "
        "and rank them by --metric on the validation users. Lists are comma-separated.",
    )
    p.add_argument("store", help="store written by 'dask-rec ingest'")
    p.add_argument("--model", default="sansa", help=f"which model: {', '.join(TUNABLE)} (default: sansa)")
    space = p.add_argument_group("space (comma-separated values; the model's defaults when none is given)")
    for name, (option, _) in _OPTIONS.items():
        space.add_argument(option, dest=f"space_{name}", default=None, metavar="V1,V2,...",
                           help=f"values of {name}")
    space.add_argument("--space", dest="space_items", action="append", default=[], metavar="NAME=V1,V2,...",
                       help="values of any parameter of the model's space (repeatable), e.g. --space k=50,100")
    p.add_argument("--search", choices=("grid", "tpe"), default="grid",
                   help="grid: every combination; tpe: Optuna's TPE within each list's range (needs optuna)")
    p.add_argument("--trials", type=int, default=None, help="trials of a TPE search (default: 20)")
    p.add_argument("--patience", type=int, default=None,
                   help="TPE: stop after this many trials without improvement")
    p.add_argument("--metric", default="ndcg@100", help="recall@K, ndcg@K or coverage@K to maximise (default: ndcg@100)")
    p.add_argument("--test-users", type=int, default=None,
                   help="users held out first, as 'dask-rec evaluate' does (same seed, same users); never looked at")
    p.add_argument("--validation-users", type=int, default=None,
                   help="validation users taken from the others (default: 10%%, at most 10,000)")
    p.add_argument("--target-fraction", type=float, default=0.2, help="share of each held-out user's items to hide")
    p.add_argument("--seed", type=int, default=0, help="seed of both splits (default: 0)")
    p.add_argument("--concurrency", type=int, default=None, help="trials at a time (default: one per worker)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--plot", metavar="PNG", default=None, help="plot the metric against the density, one line per λ")
    p.add_argument("--config-out", metavar="JSON", default=None, help="write the best config (for 'dask-rec fit --config')")
    p.add_argument("--refit", metavar="MODEL", default=None,
                   help="train the best config on all the data (all users of the store) and save it here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --refit model directory")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def parse_space(args, model: str) -> dict | None:
    """The space given by the options of ``args`` (None when no option was given)."""
    from dask_rec.tuning.space import tunable

    entry = tunable(model)
    space = {}
    for name, (option, kind) in _OPTIONS.items():
        text = getattr(args, f"space_{name}", None)
        if text is None:
            continue
        if name not in entry.params:
            raise ValueError(f"{option} does not apply to --model {model}; it takes "
                             + ", ".join(_OPTIONS[n][0] for n in entry.params if n in _OPTIONS))
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"{option} must be comma-separated {kind.__name__} values; got {text!r}") from None
        if not values:
            raise ValueError(f"{option} needs at least one value; got {text!r}")
        space[name] = values
    for item in getattr(args, "space_items", None) or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in entry.params:
            raise ValueError(f"--space takes NAME=V1,V2,... with NAME one of {', '.join(entry.params)} "
                             f"(--model {model}); got {item!r}")
        kind = {"int": int, "choice": str}.get(entry.params[name][1], float)
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--space {name} must be comma-separated {kind.__name__} values; got {text!r}") from None
        if not values or name in space:
            raise ValueError(f"--space {name}: give its values once, at least one; got {item!r}")
        space[name] = values
    return space or None


def run(args) -> int:
    from pathlib import Path

    from dask_rec.data.store import open_store
    from dask_rec.tuning.search import tune
    from dask_rec.tuning.result import config_file_dict, write_json_atomically

    space = parse_space(args, args.model)
    if not getattr(args, "verbose", 0):  # one line per trial, not every stage of every trial
        import logging

        for name in ("dask_rec.models.sansa.training", "dask_rec.models.sansa.model"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.refit and Path(args.refit).exists() and not args.overwrite:
        raise FileExistsError(f"model {args.refit!r} already exists; pass --overwrite to replace it")
    store = open_store(args.store)
    X = store.to_scipy()
    if args.search == "tpe":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ValueError("--search tpe needs Optuna: pip install optuna (or use --search grid)") from None
    with cluster_from_args(args) as client:
        result = tune(X, space, model=args.model, client=client, metric=args.metric, search=args.search,
                      n_trials=args.trials, test_users=args.test_users, validation_users=args.validation_users,
                      target_fraction=args.target_fraction, seed=args.seed, concurrency=args.concurrency,
                      patience=args.patience, progress=None if not args.json else False)
        refit = _refit(result, store, args, client) if args.refit else None
    if args.plot:
        result.plot(args.plot)
    if args.config_out:
        write_json_atomically(config_file_dict(result.model, result.best_config), args.config_out)
    if args.json:
        out = result.to_dict()
        out.update({"plot": args.plot, "config_out": args.config_out, "refit": refit})
        print(json.dumps(out, default=str))
    else:
        print(result.table())
        print(f"best config: {json.dumps(config_file_dict(result.model, result.best_config))}")
        for what, path in (("plot", args.plot), ("config", args.config_out), ("refitted model", refit)):
            if path:
                print(f"{what} written to {path}")
    return 0


def _refit(result, store, args, client) -> str:
    from dask_rec.models.registry import get

    model = get(result.model).load_class()(result.best_config)
    if result.model == "sansa":
        model.fit(store, client=client, progress=False)
    else:
        model.fit(store, client=client)
    print(f"[dask_rec tune] refitted {result.model} on all {store.shape[0]} users", file=sys.stderr)
    return model.save(args.refit, overwrite=args.overwrite)
