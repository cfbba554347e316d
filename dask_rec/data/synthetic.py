"""Synthetic interaction logs with known structure, for tests, demos and benchmarks.

The generative model:

- **items** have Zipf-like popularity: the item of popularity rank ``r`` (ranks shuffled over
  item IDs) has weight ``1 / (r + 1) ** popularity_exponent``;
- **users** have heavy-tailed activity: lognormal with ``sigma = activity_sigma``, scaled so the
  log has about ``n_interactions`` rows (every user has at least one);
- **taste groups** are planted: items and users are split evenly at random into ``n_groups``
  groups (see :func:`planted_groups`); each of a user's draws comes with probability ``group_affinity`` from their group's
  items (by popularity within the group), otherwise from all items (by popularity).

Users in one group therefore share far more items than users of different groups, and an
item-item model (EASE, SANSA) beats a popularity ranking on held-out items by a wide margin.
Draws are with replacement, so a (user, item) pair can repeat (as in a real event log).

The log is generated chunk by chunk (each chunk a set of users spread over the whole ID range,
about ``rows_per_file`` rows) and each chunk is written as one Parquet file, so memory stays bounded by
one chunk plus per-user and per-item arrays. A given ``seed`` and set of parameters always
gives the same log. Columns: ``user_id``, ``item_id``, ``timestamp`` (seconds, all int64).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["generate_interactions", "make_interactions", "planted_groups", "read_generator_info"]

DEFAULT_ROWS_PER_FILE = 2_000_000
_START_TIME = 1_500_000_000
_TIME_SPAN = 3 * 365 * 24 * 3600


def _default_groups(n_items: int) -> int:
    return int(max(2, min(1000, n_items // 100)))


def _check(n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent, activity_sigma,
           rows_per_file) -> int:
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_interactions", n_interactions),
                    ("rows_per_file", rows_per_file)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    n_groups = _default_groups(n_items) if n_groups is None else n_groups
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not 1 <= n_groups <= n_items:
        raise ValueError(f"n_groups must be an integer in 1..n_items ({n_items}); got {n_groups!r}")
    if not 0.0 <= group_affinity <= 1.0:
        raise ValueError(f"group_affinity must be in [0, 1]; got {group_affinity!r}")
    if not popularity_exponent >= 0:
        raise ValueError(f"popularity_exponent must be >= 0; got {popularity_exponent!r}")
    if not activity_sigma >= 0:
        raise ValueError(f"activity_sigma must be >= 0; got {activity_sigma!r}")
    return int(n_groups)


def planted_groups(n_users: int, n_items: int, n_groups: int | None = None, *, seed: int = 0):
    """The taste groups a log generated with these arguments was drawn from.

    Returns
    -------
    user_group, item_group : numpy.ndarray of int64
        Group of each user ID ``0..n_users-1`` and item ID ``0..n_items-1``.
    """
    n_groups = _default_groups(n_items) if n_groups is None else int(n_groups)
    rng = np.random.default_rng([seed, 10])
    item_group = rng.permutation(n_items) % n_groups
    user_group = rng.permutation(n_users) % n_groups
    return user_group.astype(np.int64), item_group.astype(np.int64)


class _Model:
    """The per-user and per-item arrays of the generative model (O(n_users + n_items) memory)."""

    def __init__(self, n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent,
                 activity_sigma, seed) -> None:
        self.seed = seed
        self.n_groups = n_groups
        self.affinity = float(group_affinity)
        self.user_group, item_group = planted_groups(n_users, n_items, n_groups, seed=seed)
        rng = np.random.default_rng([seed, 11])
        rank = rng.permutation(n_items)
        weight = 1.0 / (rank + 1.0) ** popularity_exponent
        self.global_cdf = np.cumsum(weight) / weight.sum()
        # items sorted by group; within-group CDF offset by the group number, so one searchsorted
        # on (group + u) draws from the right group
        self.group_items = np.argsort(item_group, kind="stable")
        w = weight[self.group_items]
        g = item_group[self.group_items]
        self.group_start = np.searchsorted(g, np.arange(n_groups + 1))
        totals = np.add.reduceat(w, self.group_start[:-1])
        within = np.cumsum(w) - np.repeat(np.cumsum(totals) - totals, np.diff(self.group_start))
        self.group_cdf = g + within / np.repeat(totals, np.diff(self.group_start))
        # user IDs are a random permutation of the generation order, so every file holds users
        # from all over the ID range (as a time-ordered log would)
        self.user_ids = np.random.default_rng([seed, 14]).permutation(n_users).astype(np.int64)
        rng = np.random.default_rng([seed, 12])
        activity = rng.lognormal(0.0, activity_sigma, n_users)
        expected = activity / activity.sum() * n_interactions
        counts = np.floor(expected) + (rng.random(n_users) < expected - np.floor(expected))
        self.counts = np.maximum(counts, 1).astype(np.int64)

    def chunk(self, index: int, u0: int, u1: int):
        """The rows of users ``u0:u1`` (chunk number ``index``): user, item and timestamp arrays."""
        rng = np.random.default_rng([self.seed, 13, index])
        counts = self.counts[u0:u1]
        n = int(counts.sum())
        users = np.repeat(self.user_ids[u0:u1], counts)
        items = np.empty(n, dtype=np.int64)
        from_group = rng.random(n) < self.affinity
        k = int(from_group.sum())
        groups = self.user_group[users[from_group]]
        pos = np.searchsorted(self.group_cdf, groups + rng.random(k), side="right")
        pos = np.clip(pos, self.group_start[groups], self.group_start[groups + 1] - 1)
        items[from_group] = self.group_items[pos]
        pos = np.searchsorted(self.global_cdf, rng.random(n - k), side="right")
        items[~from_group] = np.minimum(pos, len(self.global_cdf) - 1)
        timestamps = _START_TIME + rng.integers(0, _TIME_SPAN, n, dtype=np.int64)
        order = rng.permutation(n)
        return users[order], items[order], timestamps[order]


def _chunks(n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent, activity_sigma,
            seed, rows_per_file):
    from dask_rec.data.store_writer import block_bounds_for

    n_groups = _check(n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent,
                      activity_sigma, rows_per_file)
    model = _Model(n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent,
                   activity_sigma, seed)
    bounds = block_bounds_for(model.counts, block_nnz=int(rows_per_file))
    for index in range(len(bounds) - 1):
        yield model.chunk(index, int(bounds[index]), int(bounds[index + 1]))


def make_interactions(n_users: int, n_items: int, n_interactions: int, *, n_groups: int | None = None,
                      group_affinity: float = 0.7, popularity_exponent: float = 1.0, activity_sigma: float = 1.0,
                      seed: int = 0, rows_per_file: int = DEFAULT_ROWS_PER_FILE):
    """An in-memory synthetic log (a pandas DataFrame); the same rows :func:`generate_interactions` writes.

    Parameters are those of :func:`generate_interactions`.
    """
    import pandas as pd

    parts = list(_chunks(n_users, n_items, n_interactions, n_groups, group_affinity, popularity_exponent,
                         activity_sigma, seed, rows_per_file))
    return pd.DataFrame({
        "user_id": np.concatenate([p[0] for p in parts]),
        "item_id": np.concatenate([p[1] for p in parts]),
        "timestamp": np.concatenate([p[2] for p in parts]),
    })


def generate_interactions(path, n_users: int, n_items: int, n_interactions: int, *, n_groups: int | None = None,
                          group_affinity: float = 0.7, popularity_exponent: float = 1.0,
                          activity_sigma: float = 1.0, seed: int = 0, rows_per_file: int = DEFAULT_ROWS_PER_FILE,
                          overwrite: bool = False) -> Path:
    """Write a synthetic interaction log as a Parquet dataset (one file per chunk of users).

    Parameters
    ----------
    path : str or os.PathLike
        Directory to create; it gets ``part-NNNNN.parquet`` files and ``_generator.json``
        (the parameters and row count; ignored by Parquet readers).
    n_users, n_items : int
        Sizes of the ID spaces (IDs ``0..n-1``); rarely drawn items may not appear.
    n_interactions : int
        Approximate number of rows.
    n_groups : int, optional
        Number of planted taste groups (default ``max(2, min(1000, n_items // 100))``: about
        100 items per group).
    group_affinity : float
        Probability that a draw comes from the user's group rather than from all items.
    popularity_exponent : float
        Zipf exponent of item popularity.
    activity_sigma : float
        Sigma of the lognormal user activity.
    seed : int
        Random seed; the same seed and parameters always give the same log.
    rows_per_file : int
        About this many rows per file (and per generated chunk).
    overwrite : bool
        Replace an existing directory written by this function.

    Returns
    -------
    pathlib.Path
        The dataset directory (pass it to :func:`dask_rec.data.ingestion`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dask_rec.data.atomic import atomic_directory

    started = time.perf_counter()
    n_rows = n_files = 0
    with atomic_directory(path, overwrite, marker="_generator.json") as tmp:
        for users, items, ts in _chunks(n_users, n_items, n_interactions, n_groups, group_affinity,
                                        popularity_exponent, activity_sigma, seed, rows_per_file):
            table = pa.table({"user_id": users, "item_id": items, "timestamp": ts})
            pq.write_table(table, tmp / f"part-{n_files:05d}.parquet", row_group_size=min(len(users), 1 << 20))
            n_rows += len(users)
            n_files += 1
        info = {
            "generator": "dask_rec.data.synthetic.generate_interactions",
            "n_users": int(n_users), "n_items": int(n_items), "n_interactions": int(n_interactions),
            "n_groups": int(_default_groups(n_items) if n_groups is None else n_groups),
            "group_affinity": group_affinity, "popularity_exponent": popularity_exponent,
            "activity_sigma": activity_sigma, "seed": seed, "rows_per_file": rows_per_file,
            "rows": int(n_rows), "files": int(n_files),
            "seconds": round(time.perf_counter() - started, 3),
        }
        (tmp / "_generator.json").write_text(json.dumps(info, indent=2))
    from dask_rec.data.atomic import local_path

    return local_path(path)


def read_generator_info(path) -> dict:
    """The ``_generator.json`` of a directory written by :func:`generate_interactions`."""
    return json.loads((Path(path) / "_generator.json").read_text())

