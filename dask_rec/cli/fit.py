"""``dask-rec fit STORE MODEL [--model NAME]``: train a model on a store, save it as a Zarr directory."""

from __future__ import annotations

import json
import time

from . import add_cluster_arguments, cluster_from_args


def add_parser(subparsers) -> None:
    from dask_rec.models.registry import MODELS

    p = subparsers.add_parser(
        "fit", help="train a model (SANSA by default) on an ingested store",
        description="Train a model on a store written by 'dask-rec ingest' and save it (a Zarr directory).",
    )
    p.add_argument("store", help="store written by 'dask-rec ingest'")
    p.add_argument("model", help="output model directory (e.g. model.zarr)")
    p.add_argument("--model", dest="model_name", default=None, metavar="NAME",
                   help=f"which model: {', '.join(MODELS)} (default: sansa, or the model of --config)")
    p.add_argument("--config", metavar="JSON", default=None,
                   help="the model's config from a JSON file (as 'dask-rec tune --config-out' writes); "
                        "replaces the model options")
    for entry in MODELS.values():
        entry.add_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    p.add_argument("--performance-report", metavar="HTML", default=None,
                   help="write a Dask performance report of the fit to this HTML file (SANSA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from dask_rec.models.registry import get
    from dask_rec.data.store import open_store

    from dask_rec.data.atomic import check_target

    if args.config:
        entry, model = model_from_config_file(args.config, args.model_name)
    else:
        entry = get(args.model_name or "sansa")
        model = entry.build(args)
    check_target(Path(args.model).absolute(), args.overwrite, kind="model")  # before the fit, not after
    store = open_store(args.store)
    t0 = time.perf_counter()
    with cluster_from_args(args) as client:
        if entry.name == "sansa":
            model.fit(store, client=client, progress=False if args.no_progress else None,
                      performance_report=args.performance_report)
        else:
            model.fit(store, client=client)
        model.save(args.model, overwrite=args.overwrite)
    seconds = time.perf_counter() - t0
    stages = json.dumps(model.fit_report_.get("stage_seconds", {}))
    print(f"fitted {entry.name} on {store.shape[1]} items from {store.shape[0]} users in {seconds:.1f} s; "
          f"stages: {stages}; model written to {args.model}")
    return 0


def model_from_config_file(path, model_name=None):
    """``(registry entry, unfitted model)`` from a config JSON: SANSA's ``config_to_dict``, or
    ``{"model": NAME, "config": {...}}`` for another model."""
    from dask_rec.config import config_from_dict
    from dask_rec.models.registry import get

    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path!r} must hold a JSON object; got {type(data).__name__}")
    name = data.get("model", "sansa")
    if model_name is not None and model_name != name:
        raise ValueError(f"--config {path!r} holds a {name} config, but --model is {model_name}")
    entry = get(name)
    cls = entry.load_class()
    try:
        if name == "sansa":
            config = config_from_dict({k: v for k, v in data.items() if k != "model"})
        else:
            config = type(cls().config)(**data["config"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"--config {path!r} is not a {name} config: {exc}") from None
    return entry, cls(config)
