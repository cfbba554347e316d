"""``dask-rec recommend MODEL STORE OUTPUT``: top-k for every user of a store, written as Parquet."""

from __future__ import annotations

import time

from . import add_cluster_arguments, cluster_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "recommend", help="batch top-k recommendations for the users of a store",
        description="Write the top-k items of every user of STORE (or of --users) as a Parquet dataset "
        "with columns user_id, item_id, score, rank, in the store's original IDs. "
        "Each user block is scored and written by its own task.",
    )
    p.add_argument("model", help="model directory written by 'dask-rec fit'")
    p.add_argument("store", help="store with the users' histories")
    p.add_argument("output", help="output Parquet directory")
    p.add_argument("-k", type=int, default=20, help="items per user (default: 20)")
    p.add_argument("--users", default=None, help="file with one user ID per line (default: every user)")
    p.add_argument("--include-seen", action="store_true", help="allow items the user already interacted with")
    p.add_argument("--unknown", choices=("error", "drop", "popular"), default="error",
                   help="users of --users not in the store: fail, skip, or give them the most popular items")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from dask_rec.data.atomic import check_target
    from dask_rec.data.item_alignment import align_store
    from dask_rec.models.registry import load_model_directory
    from dask_rec.data.store import open_store

    check_target(Path(args.output).absolute(), args.overwrite, kind="recommendations")
    model = load_model_directory(args.model)  # any saved kind (root attr "kind")
    store = open_store(args.store)
    vocabulary = model.item_vocabulary
    align_store(store, None if vocabulary is None else vocabulary.ids, model.n_items, log=False)  # before a cluster
    users = None
    if args.users:
        users = _read_users(args.users, store)
    t0 = time.perf_counter()
    with cluster_from_args(args) as client:
        model.recommend_users(store, k=args.k, exclude_seen=not args.include_seen, output=args.output,
                              users=users, unknown=args.unknown, client=client, overwrite=args.overwrite)
    seconds = time.perf_counter() - t0
    print(_summary(args, store, users, model.n_items, seconds))
    return 0


def _summary(args, store, users, n_items: int, seconds: float) -> str:
    """What was written, truthfully: users served (and dropped), rows, and ``-k`` against the catalog."""
    import glob
    import os

    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(os.path.join(args.output, "part-*.parquet")))
    requested = store.shape[0] if users is None else len(users)
    unknown = 0 if users is None else int((store.user_vocabulary.index(users, unknown="missing") < 0).sum())
    served = requested - unknown if args.unknown == "drop" else requested
    notes = []
    if unknown:
        notes.append(f"{unknown} unknown user(s) " + ("dropped" if args.unknown == "drop" else "given popular items"))
    if args.k > n_items:
        notes.append(f"-k {args.k} exceeds the model's {n_items} items: at most {n_items} per user")
    if served and rows < served * min(args.k, n_items):
        notes.append(f"{served * min(args.k, n_items) - rows} fewer rows than {min(args.k, n_items)} per user "
                     "(users with fewer candidates, their own items excluded)")
    note = f" ({'; '.join(notes)})" if notes else ""
    if served == 0:
        return f"no recommendations: none of the {requested} requested users is in the store{note}; wrote an empty " \
               f"output to {args.output}"
    return (f"recommended {min(args.k, n_items)} items for {served} users in {seconds:.1f} s "
            f"({served / max(seconds, 1e-9):.0f} users/s): {rows} rows{note}; written to {args.output}")


def _read_users(path, store):
    import numpy as np

    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    if len(set(lines)) < len(lines):
        import logging

        logging.getLogger(__name__).warning("--users %s lists %d user(s) more than once; each is recommended once",
                                            path, len(lines) - len(set(lines)))
        lines = list(dict.fromkeys(lines))
    ids = store.user_vocabulary.ids
    if np.asarray(ids).dtype.kind in "iu":
        try:
            return np.asarray([int(x) for x in lines], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"--users {path!r}: the store's user IDs are integers; {exc}") from None
    return np.asarray(lines, dtype=object)
