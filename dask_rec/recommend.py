"""Batch recommendation as one task per block of users.

:func:`recommend_users` splits the users into blocks; each block is one task (in process, or on a
``distributed`` cluster through :mod:`dask_rec.executor`) that loads its rows, scores them with the
sparse-accumulator kernel :func:`dask_rec.kernels.scoring.recommend_block` and keeps the top
``k``. Nothing of size users × items is ever built: a task holds its block of interactions, its
``b × k`` result and a few item-length scratch arrays.

Sending the model to the workers
--------------------------------
The weights travel once per job: the client submits one task that returns them
(``executor.submit(identity, model)``) and every block task takes that future as an argument, so
each worker fetches them from a peer at most once (typically) instead of every task embedding a
copy. Unlike ``client.scatter``, the future has lineage: if the worker holding the weights dies,
the scheduler recomputes them from the task (the scheduler keeps that pickled copy for the job's
duration, which is the price of this choice).

Blocks of a store are read inside the tasks (a store pickles as its path), so the client never
holds them; blocks of an in-memory matrix are sliced in the client and shipped with their task.

Threads
-------
On a cluster every task runs the single-threaded kernel (the workers' threads already run tasks
side by side: no nested thread pools). In process, each block is split over
``dask_rec.recommend.threads`` Python threads (default: all cores), which the ``nogil`` kernel
uses in parallel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dask_rec.executor import executor_for, identity
from dask_rec import settings
from dask_rec.kernels.scoring import popularity_order, recommend_block
from dask_rec.vocabulary import as_vocabulary

__all__ = ["recommend_users", "WeightsScorer", "DEFAULT_USERS_PER_BLOCK"]

#: Users per task when neither ``users_per_block`` nor the ``dask_rec.recommend.users-per-block``
#: config key is set and the histories are not a store (whose own row blocks are used then).
DEFAULT_USERS_PER_BLOCK = 4096

_UNKNOWN_POLICIES = ("error", "drop", "popular")


# --------------------------------------------------------------------------------------------
# what scores a block: SANSA weights, or anything with a ``topk_block`` method
# --------------------------------------------------------------------------------------------


class WeightsScorer:
    """Scores of an item-based model with weights ``(W1, W2)``: ``(x · W1) · W2``.

    Parameters
    ----------
    W1, W2 : scipy.sparse.csr_matrix
        The weights (n_items × n_items each).
    """

    def __init__(self, W1, W2) -> None:
        self.W1 = W1
        self.W2 = W2

    @property
    def n_items(self) -> int:
        return self.W1.shape[0]

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of a block of users (see :func:`dask_rec.kernels.scoring.recommend_block`)."""
        return recommend_block(X_block, self.W1, self.W2, k, exclude_seen=exclude_seen,
                               allowed=allowed, n_threads=n_threads)


def _weights_csr(W, name: str) -> sp.csr_matrix:
    if not sp.issparse(W):
        raise TypeError(f"{name} must be a scipy.sparse matrix; got {type(W).__name__}")
    W = sp.csr_matrix(W)
    if W.dtype not in (np.float32, np.float64):
        W = W.astype(np.float32)
    return W


def resolve_scorer(model):
    """A block scorer for ``model``: ``(W1, W2)``, an object with ``.weights``, or a scorer.

    A scorer is any picklable object with ``topk_block(X_block, k, exclude_seen, n_threads=1)``
    returning ``(ids, scores)`` per the recommend contract and an ``n_items`` attribute (e.g.
    :class:`dask_rec.evaluation.PopularityBaseline`).
    """
    if isinstance(model, (tuple, list)) and len(model) == 2:
        W1, W2 = model
    elif getattr(model, "weights", None) is not None:
        W1, W2 = model.weights
    elif hasattr(model, "topk_block"):
        return model
    else:
        raise TypeError(
            "expected weights (W1, W2), a fitted model with a .weights attribute, or a scorer "
            f"with a topk_block method; got {type(model).__name__}"
        )
    W1, W2 = _weights_csr(W1, "W1"), _weights_csr(W2, "W2")
    if W1.shape[0] != W2.shape[1] or W1.shape[1] != W2.shape[0]:
        raise ValueError(f"weights do not form an item-item model: W1 {W1.shape}, W2 {W2.shape}")
    return WeightsScorer(W1, W2)


def is_future(obj) -> bool:
    """Whether ``obj`` is a ``distributed`` future (e.g. weights that a fit left on the cluster)."""
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "key") and hasattr(obj, "result")


def _bundle(weights, *rest):
    """Runs on a worker: the scorer of weights that live on the cluster, plus the rest."""
    return (resolve_scorer(weights), *rest)


def task_threads(executor) -> int:
    """Threads a block task may use: 1 on a cluster (workers run tasks side by side), else the
    ``dask_rec.recommend.threads`` config value or all cores (1 when already inside a task)."""
    if executor.client is not None:
        return 1
    configured = settings.get("recommend.threads")
    if configured:
        return int(configured)
    try:
        from distributed import get_worker

        get_worker()
        return 1
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def share(executor, model, *rest):
    """``(scorer, *rest)`` where the block tasks can use it, sent once per job.

    In process: the tuple itself. On a cluster: the future of a task that returns it
    (lineage-safe, unlike ``scatter``); weights already on the cluster (a future) are turned into
    a scorer there, never through the client.
    """
    if is_future(model):
        if executor.client is None:
            model = model.result()
        else:
            return executor.submit(_bundle, model, *rest, key="dask-rec-shared")
    bundle = (resolve_scorer(model), *rest)
    if executor.client is None:
        return bundle
    import dask

    # The one large argument of the job is sent on purpose; the warning is meant for graphs that
    # embed data in every task.
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "64GB"}):
        return executor.submit(identity, bundle, key="dask-rec-shared")


# --------------------------------------------------------------------------------------------
# blocks of users
# --------------------------------------------------------------------------------------------


def is_store(obj) -> bool:
    """Whether ``obj`` behaves like a :class:`dask_rec.store.InteractionStore`."""
    return hasattr(obj, "read_block") and hasattr(obj, "block_bounds")


class StoreRows:
    """A picklable reference to rows ``start:stop`` of a store (optionally a subset of them)."""

    def __init__(self, store, start: int, stop: int, rows=None, block: int | None = None) -> None:
        self.store = store
        self.start = int(start)
        self.stop = int(stop)
        self.rows = rows
        self.block = block

    def load(self) -> sp.csr_matrix:
        if self.block is not None:
            X = self.store.read_block(self.block)
        else:
            X = self.store.read_rows(self.start, self.stop)
        X = sp.csr_matrix(X)
        return X if self.rows is None else X[self.rows]


def load_rows(payload) -> sp.csr_matrix:
    """The CSR rows a block task was given (a matrix, or a :class:`StoreRows` to read)."""
    if isinstance(payload, StoreRows):
        return payload.load()
    return sp.csr_matrix(payload)


def block_bounds(source, users_per_block: int | None) -> np.ndarray:
    """Row offsets of the blocks of ``source`` (a store's own blocks unless a size is given)."""
    if users_per_block is None:
        if is_store(source):
            return np.asarray(source.block_bounds, dtype=np.int64)
        users_per_block = settings.get("recommend.users-per-block") or DEFAULT_USERS_PER_BLOCK
    users_per_block = int(users_per_block)
    if users_per_block < 1:
        raise ValueError(f"users_per_block must be >= 1; got {users_per_block}")
    n = source.shape[0]
    return np.unique(np.r_[np.arange(0, n, users_per_block, dtype=np.int64), n])


def row_payloads(source, bounds: np.ndarray) -> list:
    """One payload per block: CSR slices of a matrix, or :class:`StoreRows` of a store."""
    if is_store(source):
        native = np.array_equal(bounds, np.asarray(source.block_bounds, dtype=np.int64))
        return [
            StoreRows(source, a, b, block=i if native else None)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
    return [source[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def take_rows(X: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows ``rows`` of ``X``, an empty row wherever ``rows`` is −1."""
    rows = np.asarray(rows, dtype=np.int64)
    known = rows >= 0
    sub = X[rows[known]]
    lengths = np.zeros(rows.shape[0], np.int64)
    lengths[known] = np.diff(sub.indptr)
    indptr = np.r_[0, np.cumsum(lengths)]
    return sp.csr_matrix((sub.data, sub.indices, indptr), shape=(rows.shape[0], X.shape[1]))


# --------------------------------------------------------------------------------------------
# vocabularies
# --------------------------------------------------------------------------------------------


def _codes(ids, vocab, n: int, what: str) -> np.ndarray:
    """Indices of ``ids`` (−1 when unknown) through ``vocab``, or ``ids`` themselves as indices."""
    if vocab is not None:
        return np.asarray(vocab.index(ids, unknown="missing"), dtype=np.int64)
    ids = np.asarray(ids)
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"{what} IDs must be integer indices when no {what} vocabulary is given")
    codes = ids.astype(np.int64)
    return np.where((codes >= 0) & (codes < n), codes, -1)


def unique_users(users) -> np.ndarray:
    """``users`` with repeats dropped (first occurrence kept, order kept); a ``DaskRecWarning`` says how many.

    Each user is recommended once: a repeated ID would otherwise get a second set of ranks 1..k.
    """
    users = np.asarray(users)
    if users.ndim != 1:
        raise ValueError(f"users must be a 1-D list of IDs; got shape {users.shape}")
    unique = pd.unique(pd.Series(users, dtype=object if users.dtype == object else None)).astype(users.dtype)
    if unique.shape[0] < users.shape[0]:
        import warnings

        from dask_rec.exceptions import DaskRecWarning

        counts = pd.Series(users).value_counts()
        repeated = counts[counts > 1].index[:5].tolist()
        warnings.warn(f"users lists {len(counts[counts > 1])} ID(s) more than once (e.g. {repeated}); "
                      "each user is recommended once", DaskRecWarning, stacklevel=3)
    return unique
    return unique


def _unknown_error(ids, codes, what: str):
    from dask_rec.vocabulary import UnknownIDError  # a KeyError

    bad = np.asarray(ids)[codes < 0]
    raise UnknownIDError(f"{bad.size} unknown {what} ID(s), e.g. {bad[:5].tolist()}")


# --------------------------------------------------------------------------------------------
# the block task
# --------------------------------------------------------------------------------------------


def _frame(user_ids, ids, scores, item_ids) -> pd.DataFrame:
    rows, cols = np.nonzero(ids >= 0)
    items = ids[rows, cols]
    return pd.DataFrame({
        "user_id": np.asarray(user_ids)[rows],
        "item_id": items if item_ids is None else item_ids[items],
        "score": scores[rows, cols],
        "rank": (cols + 1).astype(np.int32),
    })


def _recommend_task(payload, user_ids, part_path, shared, k, exclude_seen, schema, n_threads):
    scorer, item_ids, fallback = shared
    X = load_rows(payload)
    ids, scores = scorer.topk_block(X, k, exclude_seen=exclude_seen, n_threads=n_threads)
    if fallback is not None:
        empty = np.diff(X.indptr) == 0
        if empty.any():
            ids[empty], scores[empty] = fallback
    df = _frame(user_ids, ids, scores, item_ids)
    if part_path is None:
        return df
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), part_path)
    return len(df)


def _fallback(item_counts, k: int, n_items: int):
    counts = np.asarray(item_counts)
    if counts.shape != (n_items,):
        raise ValueError(f"item_counts must have shape ({n_items},); got {counts.shape}")
    order, top = popularity_order(counts)
    ids = np.full(k, -1, np.int64)
    scores = np.full(k, -np.inf, np.float32)
    m = min(k, order.shape[0])
    ids[:m], scores[:m] = order[:m], top[:m]
    return ids, scores


# --------------------------------------------------------------------------------------------
# inputs -> (list of payloads, list of user-id arrays)
# --------------------------------------------------------------------------------------------


def _plan_matrix(X, users, user_vocab, unknown, users_per_block):
    X = sp.csr_matrix(X)
    all_ids = user_vocab.ids if user_vocab is not None else np.arange(X.shape[0])
    if users is None:
        bounds = block_bounds(X, users_per_block)
        return row_payloads(X, bounds), [all_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    users = np.asarray(users)
    codes = _codes(users, user_vocab, X.shape[0], "user")
    if (codes < 0).any():
        if unknown == "error":
            _unknown_error(users, codes, "user")
        if unknown == "drop":
            users, codes = users[codes >= 0], codes[codes >= 0]
    sub = take_rows(X, codes)
    bounds = block_bounds(sub, users_per_block)
    return row_payloads(sub, bounds), [users[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _plan_store(store, users, user_vocab, unknown, users_per_block):
    all_ids = user_vocab.ids if user_vocab is not None else np.arange(store.shape[0])
    if users is None:
        bounds = block_bounds(store, users_per_block)
        return row_payloads(store, bounds), [all_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    users = np.asarray(users)
    codes = _codes(users, user_vocab, store.shape[0], "user")
    missing = codes < 0
    if missing.any() and unknown == "error":
        _unknown_error(users, codes, "user")
    payloads, user_ids = [], []
    order = np.argsort(codes[~missing], kind="stable")
    known_codes, known_users = codes[~missing][order], users[~missing][order]
    bounds = np.asarray(store.block_bounds, dtype=np.int64)
    # group the requested users by the store block holding them; each task reads its block once
    block_of = np.searchsorted(bounds, known_codes, side="right") - 1
    for blk in np.unique(block_of):
        sel = block_of == blk
        a, b = bounds[blk], bounds[blk + 1]
        payloads.append(StoreRows(store, a, b, rows=known_codes[sel] - a, block=int(blk)))
        user_ids.append(known_users[sel])
    if missing.any() and unknown == "popular":
        n_missing = int(missing.sum())
        payloads.append(sp.csr_matrix((n_missing, store.shape[1]), dtype=np.float32))
        user_ids.append(users[missing])
    return payloads, user_ids


def _plan_frame(frame, users, item_vocab, unknown, n_items, users_per_block, user_col, item_col):
    for col in (user_col, item_col):
        if col not in frame.columns:
            raise KeyError(f"histories has no column {col!r}")
    user_codes, uniq = pd.factorize(frame[user_col], sort=False)
    item_ids = frame[item_col].to_numpy()
    items = _codes(item_ids, item_vocab, n_items, "item")
    if unknown == "error" and (items < 0).any():
        _unknown_error(item_ids, items, "item")
    if users is None:
        out_users = np.asarray(uniq)
        rows = user_codes
    else:
        out_users = np.asarray(users)  # unique: recommend_users dropped repeats
        row_of = pd.Index(out_users).get_indexer(uniq)  # frame's user -> output row, or -1
        rows = np.where(user_codes >= 0, row_of[np.maximum(user_codes, 0)], -1)
    keep = (items >= 0) & (rows >= 0)
    X = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], items[keep])),
        shape=(out_users.shape[0], n_items),
    )
    X.sum_duplicates()
    X.data[:] = 1.0
    bounds = block_bounds(X, users_per_block)
    return row_payloads(X, bounds), [out_users[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------------
# output directory, written atomically
# --------------------------------------------------------------------------------------------


def _schema(user_ids, item_ids):
    import pyarrow as pa

    sample_users = next((u[:1] for u in user_ids if len(u)), np.zeros(1, np.int64))
    sample = _frame(sample_users, np.zeros((1, 1), np.int64), np.zeros((1, 1), np.float32), item_ids)
    return pa.Schema.from_pandas(sample, preserve_index=False)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def recommend_users(weights, histories, k: int = 10, exclude_seen: bool = True, output=None,
                    users=None, user_vocabulary=None, item_vocabulary=None, unknown: str = "error",
                    item_counts=None, client=None, users_per_block: int | None = None,
                    overwrite: bool = False, user_col: str = "user_id", item_col: str = "item_id"):
    """Top-``k`` recommendations for many users, one task per block of users.

    Parameters
    ----------
    weights : tuple (W1, W2), model, scorer or future
        SANSA weights, a fitted model with a ``.weights`` attribute, a scorer with a
        ``topk_block`` method (e.g. :class:`dask_rec.evaluation.PopularityBaseline`), or a
        ``distributed`` future of ``(W1, W2)`` (weights a fit left on the cluster).
    histories : InteractionStore, scipy.sparse matrix or pandas.DataFrame
        The users' interactions: a store (its row blocks and vocabularies are used), a matrix
        (rows = users, columns = item indices), or a frame of ``(user_col, item_col)`` rows whose
        items are mapped through ``item_vocabulary`` (values are ignored: binary histories).
    k : int, default 10
        Items per user.
    exclude_seen : bool, default True
        Never recommend a user's own items.
    output : str or path, optional
        Write a Parquet dataset (a directory of ``part-*.parquet``, one per block, each written
        by its task) there instead of returning a frame. The parts go into a temporary sibling
        directory that is renamed into place when all tasks have succeeded; on failure it is
        removed and nothing at ``output`` changes. On a cluster the path must be on a file system
        that the workers share.
    users : array-like, optional
        Recommend for these users only (original IDs when a user vocabulary is known, else row
        indices; for a frame, its user IDs). Default: every user of ``histories``. A repeated ID
        is recommended once (its first occurrence; a ``DaskRecWarning`` says how many repeats
        were dropped).
    user_vocabulary, item_vocabulary : Vocabulary or array of IDs, optional
        Map between original IDs and indices (default: the store's). Without them the output
        holds indices. ``item_vocabulary`` is the model's (models pass their own): with a store
        whose item IDs differ, the store's columns are mapped onto the model's by ID (see
        :mod:`dask_rec.item_alignment`), and a store sharing no item ID with the model is refused.
    unknown : {"error", "drop", "popular"}, default "error"
        Unknown item IDs in a frame, or unknown users in ``users``: raise ``KeyError``
        (``"error"``), or leave them out (``"drop"`` and ``"popular"``). With ``"popular"``
        every user whose history is empty (no known items, or an unknown user) gets the most
        popular items by ``item_counts`` instead, their counts as scores; otherwise such users
        get no rows (an item-based model has nothing to score them by).
    item_counts : array-like of int, optional
        Popularity of each item for ``unknown="popular"`` (default: the store's ``item_counts``).
    client : distributed.Client, optional
        Run the block tasks on this cluster (one thread per task). In this process when None,
        each block spread over the ``dask_rec.recommend.threads`` config value or all cores.
    users_per_block : int, optional
        Users per task. Default: a store's own blocks, else the ``dask_rec.recommend.users-per-block``
        config value or :data:`DEFAULT_USERS_PER_BLOCK`.
    overwrite : bool, default False
        Replace an existing ``output``.
    user_col, item_col : str
        Column names of a frame ``histories``.

    Returns
    -------
    pandas.DataFrame or str
        Columns ``user_id, item_id, score, rank`` (rank 1 = best; rows of a user are consecutive,
        best first), in original IDs when vocabularies are known; or the ``output`` path. Users
        with fewer than ``k`` candidates have fewer rows: the −1/−inf padding of the array API
        (:func:`dask_rec.kernels.scoring.recommend_block`) is dropped. Users appear block by
        block: in row order of a matrix or store, in the order of ``users`` for a matrix or a
        frame, grouped by store block for a store with ``users`` (then unknown users last).
    """
    if unknown not in _UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {_UNKNOWN_POLICIES}; got {unknown!r}")
    if users is not None:
        users = unique_users(users)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    k = int(k)
    if is_future(weights):  # checked on the workers, where the weights are
        weights_arg, n_items = weights, None
    else:
        weights_arg = resolve_scorer(weights)
        n_items = weights_arg.n_items
    store = histories if is_store(histories) else None
    if store is not None:
        user_vocabulary = user_vocabulary if user_vocabulary is not None else store.user_vocabulary
        if item_vocabulary is not None:  # the model's items: the store's columns are mapped onto them by ID
            from dask_rec.item_alignment import align_store

            model_ids = as_vocabulary(item_vocabulary).ids
            histories = store = align_store(store, model_ids, len(model_ids) if n_items is None else n_items)
        else:
            item_vocabulary = store.item_vocabulary
        if item_counts is None and unknown == "popular":
            item_counts = store.item_counts
    user_vocab = as_vocabulary(user_vocabulary)
    item_vocab = as_vocabulary(item_vocabulary)
    if n_items is None:
        if item_vocab is not None:
            n_items = len(item_vocab.ids)
        elif not isinstance(histories, pd.DataFrame):
            n_items = histories.shape[1]
        else:
            raise ValueError("weights on the cluster with a frame of histories need item_vocabulary")
    if isinstance(histories, pd.DataFrame):
        payloads, user_ids = _plan_frame(histories, users, item_vocab, unknown, n_items,
                                         users_per_block, user_col, item_col)
    else:
        if store is None and not sp.issparse(histories):
            raise TypeError(
                "histories must be an InteractionStore, a scipy.sparse matrix or a DataFrame; "
                f"got {type(histories).__name__}"
            )
        if histories.shape[1] != n_items:
            raise ValueError(f"histories have {histories.shape[1]} items; the model has {n_items}")
        plan = _plan_store if store is not None else _plan_matrix
        payloads, user_ids = plan(histories, users, user_vocab, unknown, users_per_block)

    fallback = None
    if unknown == "popular":
        if item_counts is None:
            raise ValueError("unknown='popular' needs item_counts (or a store as histories)")
        fallback = _fallback(item_counts, k, n_items)
    item_ids = np.asarray(item_vocab.ids) if item_vocab is not None else None

    if item_ids is not None and item_ids.shape[0] != n_items:
        raise ValueError(f"item_vocabulary has {item_ids.shape[0]} IDs; the model has {n_items} items")
    executor = executor_for(client)
    shared = share(executor, weights_arg, item_ids, fallback)
    if output is None:
        handles = executor.map(_recommend_task, payloads, user_ids, [None] * len(payloads),
                               shared=shared, k=k, exclude_seen=exclude_seen, schema=None,
                               n_threads=task_threads(executor), key="dask-rec-recommend")
        frames = executor.gather(handles)
        if not frames:
            return _frame(np.zeros(0, np.int64), np.zeros((0, k), np.int64),
                          np.zeros((0, k), np.float32), item_ids)
        return pd.concat(frames, ignore_index=True)

    from .store import atomic_directory

    path = Path(output).absolute()  # workers may run in another directory
    schema = _schema(user_ids, item_ids)
    with atomic_directory(path, overwrite, marker="part-000000.parquet") as tmp:
        parts = [str(tmp / f"part-{i:06d}.parquet") for i in range(len(payloads))]
        handles = []
        try:
            if not payloads:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist([], schema=schema), tmp / "part-000000.parquet")
            handles = executor.map(_recommend_task, payloads, user_ids, parts, shared=shared, k=k,
                                   exclude_seen=exclude_seen, schema=schema,
                                   n_threads=task_threads(executor), key="dask-rec-recommend")
            executor.gather(handles)
        except BaseException:
            try:  # let tasks still running finish (and stop writing) before their directory is removed
                executor.wait(handles)
            except Exception:
                pass
            raise
    return str(path)
