"""Batch recommendation as one task per block of users.

:func:`recommend_users` splits the users into blocks; each block is one task (in process, or on a
``distributed`` cluster through :mod:`dask_rec.executor`) that loads its rows, scores them with the
sparse-accumulator kernel :func:`dask_rec.kernels.scoring.recommend_block` and keeps the top
``k``. Nothing of size users × items is ever built: a task holds its block of interactions, its
``b × k`` result and a few item-length scratch arrays.

Sending the model to the workers
--------------------------------
The weights travel once per job (:func:`dask_rec.serving.scorers.share`): the client submits one task that
returns them (``executor.submit(identity, model)``) and every block task takes that future as an argument, so
each worker fetches them from a peer at most once (typically) instead of every task embedding a
copy. Unlike ``client.scatter``, the future has lineage: if the worker holding the weights dies,
the scheduler recomputes them from the task (the scheduler keeps that pickled copy for the job's
duration, which is the price of this choice).

Blocks of a store are read inside the tasks (a store pickles as its path), so the client never
holds them; blocks of an in-memory matrix are sliced in the client and shipped with their task
(:mod:`dask_rec.stages.user_blocks`).

Threads
-------
On a cluster every task runs the single-threaded kernel (the workers' threads already run tasks
side by side: no nested thread pools). In process, each block is split over
``dask_rec.recommend.threads`` Python threads (default: all cores), which the ``nogil`` kernel
uses in parallel (:func:`dask_rec.stages.user_blocks.task_threads`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dask_rec.data.vocabulary import as_vocabulary
from dask_rec.executor import executor_for, is_future
from dask_rec.kernels.scoring import popularity_order
from dask_rec.serving.scorers import realign, resolve_scorer, share
from dask_rec.stages.user_blocks import StoreRows, block_bounds, is_store, load_rows, row_payloads, take_rows, task_threads
from dask_rec.validation import check_int

__all__ = ["recommend_users"]

_UNKNOWN_POLICIES = ("error", "drop", "popular")


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
    from dask_rec.data.vocabulary import UnknownIDError  # a KeyError

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
    scorer, item_ids, fallback = realign(shared, depth=3)
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


def _all_rows(source, user_vocab, users_per_block):
    """Every row of a matrix or store, in blocks: (payloads, user-id arrays)."""
    all_ids = user_vocab.ids if user_vocab is not None else np.arange(source.shape[0])
    bounds = block_bounds(source, users_per_block)
    return row_payloads(source, bounds), [all_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _requested(users, user_vocab, n_rows: int, unknown: str):
    """The requested users and their row codes (−1: unknown, an error with ``unknown='error'``)."""
    users = np.asarray(users)
    codes = _codes(users, user_vocab, n_rows, "user")
    if unknown == "error" and (codes < 0).any():
        _unknown_error(users, codes, "user")
    return users, codes


def _plan_matrix(X, users, user_vocab, unknown, users_per_block):
    X = sp.csr_matrix(X)
    if users is None:
        return _all_rows(X, user_vocab, users_per_block)
    users, codes = _requested(users, user_vocab, X.shape[0], unknown)
    if unknown == "drop":
        users, codes = users[codes >= 0], codes[codes >= 0]
    sub = take_rows(X, codes)
    bounds = block_bounds(sub, users_per_block)
    return row_payloads(sub, bounds), [users[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _plan_store(store, users, user_vocab, unknown, users_per_block):
    if users is None:
        return _all_rows(store, user_vocab, users_per_block)
    users, codes = _requested(users, user_vocab, store.shape[0], unknown)
    missing = codes < 0
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
        ``topk_block`` method (e.g. :class:`dask_rec.serving.evaluation.PopularityBaseline`), or a
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
        :mod:`dask_rec.data.item_alignment`), and a store sharing no item ID with the model is refused.
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
        config value or :data:`dask_rec.stages.user_blocks.DEFAULT_USERS_PER_BLOCK`.
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
    k = check_int(k, "k")
    if is_future(weights):  # checked on the workers, where the weights are
        weights_arg, n_items = weights, None
    else:
        weights_arg = resolve_scorer(weights)
        n_items = weights_arg.n_items
    store = histories if is_store(histories) else None
    if store is not None:
        user_vocabulary = user_vocabulary if user_vocabulary is not None else store.user_vocabulary
        if item_vocabulary is not None:  # the model's items: the store's columns are mapped onto them by ID
            from dask_rec.data.item_alignment import align_store

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

    from dask_rec.data.atomic import atomic_directory

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
