"""``dask-rec generate OUT``: write a synthetic interaction log (Parquet) with planted structure."""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="write a synthetic interaction log",
        description="Write a synthetic interaction log as a Parquet dataset: Zipf item popularity, lognormal "
                    "user activity and planted taste groups, generated chunk by chunk in bounded memory.")
    p.add_argument("out", help="directory to create (Parquet files part-NNNNN.parquet)")
    p.add_argument("--users", type=int, default=100_000, help="number of users (default: %(default)s)")
    p.add_argument("--items", type=int, default=20_000, help="number of items (default: %(default)s)")
    p.add_argument("--interactions", type=int, default=5_000_000,
                   help="approximate number of rows (default: %(default)s)")
    p.add_argument("--groups", type=int, default=None, help="planted taste groups (default: items/100, 2..1000)")
    p.add_argument("--affinity", type=float, default=0.7,
                   help="probability a draw comes from the user's group (default: %(default)s)")
    p.add_argument("--popularity-exponent", type=float, default=1.0,
                   help="Zipf exponent of item popularity: weight 1/(rank+1)**x (default: %(default)s)")
    p.add_argument("--activity-sigma", type=float, default=1.0,
                   help="sigma of the lognormal user activity (default: %(default)s)")
    p.add_argument("--rows-per-file", type=int, default=2_000_000, help="rows per file (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a directory this command wrote before")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dask_rec.data.synthetic import generate_interactions, read_generator_info

    started = time.perf_counter()
    path = generate_interactions(args.out, args.users, args.items, args.interactions, n_groups=args.groups,
                                 group_affinity=args.affinity, popularity_exponent=args.popularity_exponent,
                                 activity_sigma=args.activity_sigma, seed=args.seed, rows_per_file=args.rows_per_file,
                                 overwrite=args.overwrite)
    info = read_generator_info(path)
    print(f"{path}: {info['rows']:,} interactions of {args.users:,} users and {args.items:,} items "
          f"({info['n_groups']} taste groups) in {info['files']} files; {time.perf_counter() - started:.1f} s")
    return 0
