"""``dask-rec ingest SOURCE STORE``: build an interaction store from a log (Parquet or CSV)."""

from __future__ import annotations

import argparse
import time

from dask_rec.cli import add_cluster_arguments, cluster_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest", help="build an interaction store from an interaction log",
        description="Read an interaction log (Parquet file/directory/glob, CSV, or any fsspec URL) on Dask and "
                    "write it as a row-blocked CSR interaction store (a Zarr directory).")
    p.add_argument("source", help="the log: a Parquet file, directory or glob, or a CSV file or glob")
    p.add_argument("store", help="directory of the store to create")
    p.add_argument("--user-col", default="user_id", help="user ID column (default: %(default)s)")
    p.add_argument("--item-col", default="item_id", help="item ID column (default: %(default)s)")
    p.add_argument("--value-col", default=None, help="interaction strength column (default: none, binarize)")
    p.add_argument("--timestamp-col", default=None, help="timestamp column ordering duplicates for --duplicates last")
    values = p.add_mutually_exclusive_group()
    values.add_argument("--binarize", dest="binarize", action="store_true", default=None,
                        help="store 1 for every (user, item) pair seen (default without --value-col)")
    values.add_argument("--keep-values", dest="binarize", action="store_false",
                        help="store the values of --value-col (default with --value-col)")
    p.add_argument("--duplicates", choices=("sum", "max", "last"), default="sum",
                   help="how repeated (user, item) rows are merged when values are kept (default: %(default)s)")
    p.add_argument("--min-user-interactions", type=int, default=1, metavar="N",
                   help="drop users with fewer distinct items, iterated with the item minimum (default: 1)")
    p.add_argument("--min-item-interactions", type=int, default=1, metavar="N",
                   help="drop items with fewer distinct users, iterated with the user minimum (default: 1)")
    p.add_argument("--rows-per-block", type=int, default=None, metavar="N",
                   help="users per row block (default: blocks of about 1,000,000 entries)")
    p.add_argument("--on-invalid", choices=("error", "drop"), default="error",
                   help="rows with null IDs or invalid values: fail, or drop and count them (default: %(default)s)")
    p.add_argument("--format", choices=("parquet", "csv"), default=None,
                   help="format of SOURCE (default: from its extension, else Parquet)")
    p.add_argument("--sep", default=None, help="CSV field separator (default: ',')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store (once the new one is complete)")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dask_rec.data.ingestion import ingest

    binarize = args.binarize
    if binarize is False and args.value_col is None:
        raise ValueError("--keep-values needs --value-col")
    read_options = {"sep": args.sep} if args.sep else None
    started = time.perf_counter()
    with cluster_from_args(args) as client:
        store = ingest(
            args.source, args.store, user_col=args.user_col, item_col=args.item_col, value_col=args.value_col,
            timestamp_col=args.timestamp_col, binarize=binarize, duplicates=args.duplicates,
            min_user_interactions=args.min_user_interactions, min_item_interactions=args.min_item_interactions,
            rows_per_block=args.rows_per_block, on_invalid=args.on_invalid, format=args.format,
            read_options=read_options, overwrite=args.overwrite, client=client)
    seconds = time.perf_counter() - started
    md = store.metadata
    dropped = md.get("dropped", {})
    invalid = dropped.get("null_ids", 0) + dropped.get("invalid_values", 0) + dropped.get("invalid_timestamps", 0)
    n_users, n_items = store.shape
    print(f"{store.path}: {n_users:,} users, {n_items:,} items, {store.nnz:,} interactions in {store.n_blocks:,} "
          f"blocks from {md.get('source_rows', 0):,} rows; dropped {invalid:,} invalid rows, "
          f"{dropped.get('duplicate_rows', 0):,} duplicates, {dropped.get('filtered_entries', 0):,} filtered "
          f"interactions ({dropped.get('filtered_users', 0):,} users, {dropped.get('filtered_items', 0):,} items); "
          f"{seconds:.1f} s")
    return 0
