"""Offline evaluation: the strong-generalization split, ranking metrics as user-block tasks.

Protocol (Liang et al. 2018, as in the SANSA paper): a set of *held-out users* is removed from
training entirely; each of them reveals part of its history to the model (the input) and the
rest (the *targets*, 20% by default) is what the model should rank at the top. Metrics are
Recall@k, NDCG@k and catalog coverage (:mod:`dask_rec.kernels.metrics`).

:func:`evaluate` scores one block of held-out users per task, in process or on a cluster, and
reduces the blocks' small partial sums; the model travels to the workers once per call (see
:mod:`dask_rec.serving.scorers`; the blocks are :mod:`dask_rec.stages.user_blocks`').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dask_rec.executor import executor_for, is_future
from dask_rec.kernels.metrics import METRICS, finalize_metrics, merge_metric_sums, metric_sums
from dask_rec.kernels.scoring import popularity_order, popularity_topk_block
from dask_rec.serving.scorers import realign, resolve_scorer, share
from dask_rec.stages.user_blocks import block_bounds, is_store, load_rows, row_payloads, task_threads

__all__ = ["StrongGeneralizationSplit", "split_strong_generalization", "evaluate", "PopularityBaseline"]


@dataclass
class StrongGeneralizationSplit:
    """Result of :func:`split_strong_generalization`; unpacks as ``train, history, targets``.

    Attributes
    ----------
    train : scipy.sparse.csr_matrix, shape (n_train_users, n_items)
        Rows of the training users (held-out users removed), in their original order.
    test_history : scipy.sparse.csr_matrix, shape (n_test_users, n_items)
        The model's input for each held-out user.
    test_targets : scipy.sparse.csr_matrix, shape (n_test_users, n_items)
        The held-out items of each held-out user (disjoint from its history).
    train_users, test_users : numpy.ndarray of int64
        Row indices in the input matrix of the training and held-out users (sorted).
    """

    train: sp.csr_matrix
    test_history: sp.csr_matrix
    test_targets: sp.csr_matrix
    train_users: np.ndarray
    test_users: np.ndarray

    def __iter__(self):
        return iter((self.train, self.test_history, self.test_targets))


def split_strong_generalization(X, n_test_users: int | None = None, test_fraction: float | None = None,
                                target_fraction: float = 0.2, seed: int = 0,
                                min_items: int = 2) -> StrongGeneralizationSplit:
    """Hold out users, and a random share of each held-out user's items as targets.

    Parameters
    ----------
    X : scipy.sparse matrix or InteractionStore, shape (n_users, n_items)
        All interactions (a store is loaded into memory with ``to_scipy``). Values are kept.
    n_test_users : int, optional
        How many users to hold out. Exactly one of ``n_test_users`` and ``test_fraction``.
    test_fraction : float, optional
        Share of the eligible users to hold out (rounded to the nearest count).
    target_fraction : float, default 0.2
        Share of each held-out user's items that become targets: ``round(target_fraction·n)``
        clipped to ``[1, n − 1]``, so every held-out user has at least one target and one
        history item.
    seed : int, default 0
        Seed of the random choices; the split is a deterministic function of ``X`` and ``seed``.
    min_items : int, default 2
        Only users with at least this many items (and never fewer than 2) can be held out; the
        others always train.

    Returns
    -------
    StrongGeneralizationSplit
        Unpacks as ``train, test_history, test_targets``.
    """
    if is_store(X):
        X = X.to_scipy()
    if not sp.issparse(X):
        raise TypeError(f"X must be a scipy.sparse matrix or a store; got {type(X).__name__}")
    X = sp.csr_matrix(X, copy=True)
    X.sum_duplicates()
    if not 0.0 < target_fraction < 1.0:
        raise ValueError(f"target_fraction must be in (0, 1); got {target_fraction!r}")
    n_users = X.shape[0]
    lengths = np.diff(X.indptr)
    eligible = np.flatnonzero(lengths >= max(2, int(min_items)))
    if (n_test_users is None) == (test_fraction is None):
        raise ValueError("give exactly one of n_test_users and test_fraction")
    if test_fraction is not None:
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1]; got {test_fraction!r}")
        n_test_users = int(np.floor(test_fraction * eligible.size + 0.5))
    n_test_users = int(n_test_users)
    if not 0 <= n_test_users <= eligible.size:
        raise ValueError(f"n_test_users must be in [0, {eligible.size}] (users with >= {max(2, min_items)} items)")

    rng = np.random.default_rng(seed)
    test_users = np.sort(rng.choice(eligible, size=n_test_users, replace=False)).astype(np.int64)
    is_test = np.zeros(n_users, bool)
    is_test[test_users] = True
    train_users = np.flatnonzero(~is_test).astype(np.int64)

    held = X[test_users]
    n = np.diff(held.indptr)
    n_targets = np.clip(np.floor(target_fraction * n + 0.5).astype(np.int64), 1, np.maximum(n - 1, 1))
    # rank the entries of each row by a random key; the first n_targets of each row are targets
    row = np.repeat(np.arange(held.shape[0]), n)
    order = np.lexsort((rng.random(held.nnz), row))
    rank = np.empty(held.nnz, np.int64)
    rank[order] = np.arange(held.nnz) - held.indptr[row[order]]
    is_target = rank < n_targets[row]
    return StrongGeneralizationSplit(
        train=X[train_users],
        test_history=_select_entries(held, ~is_target),
        test_targets=_select_entries(held, is_target),
        train_users=train_users,
        test_users=test_users,
    )


def _select_entries(A: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    row = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    indptr = np.r_[0, np.cumsum(np.bincount(row[keep], minlength=A.shape[0]))]
    return sp.csr_matrix((A.data[keep], A.indices[keep], indptr), shape=A.shape)


class PopularityBaseline:
    """Recommend the most popular items the user has not seen: the baseline of every table.

    Parameters
    ----------
    item_counts : array-like of int, shape (n_items,), optional
        Interactions per item; or call :meth:`fit`.
    """

    def __init__(self, item_counts=None) -> None:
        self.item_counts = item_counts
        self._order = None

    def fit(self, X) -> "PopularityBaseline":
        """Count each item's interactions in ``X`` (a sparse matrix or a store)."""
        if is_store(X):
            counts = np.asarray(X.item_counts, dtype=np.int64)
        else:
            X = sp.csr_matrix(X)
            counts = np.bincount(X.indices, minlength=X.shape[1]).astype(np.int64)
        self.item_counts = counts
        self._order = popularity_order(counts)
        return self

    @property
    def n_items(self) -> int:
        if self.item_counts is None:
            raise RuntimeError("PopularityBaseline is not fitted")
        return int(np.asarray(self.item_counts).shape[0])

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` per user (see :func:`dask_rec.kernels.scoring.popularity_topk_block`).

        ``n_threads`` is accepted for the scorer interface and ignored (this is cheap).
        """
        if self._order is None or allowed is not None:
            order = popularity_order(np.asarray(self.item_counts), allowed=allowed)
            if allowed is None:
                self._order = order
        else:
            order = self._order
        return popularity_topk_block(X_block, self.item_counts, k, exclude_seen=exclude_seen, order=order)


def _evaluate_task(history, targets, shared, k_max, ks, metrics, exclude_seen, n_threads):
    scorer = realign(shared[0])
    X = load_rows(history)
    T = load_rows(targets)
    has = np.diff(T.indptr) > 0
    X, T = X[has], T[has]
    ids, _ = scorer.topk_block(X, k_max, exclude_seen=exclude_seen, n_threads=n_threads)
    return metric_sums(ids, T, ks, metrics)


def evaluate(model_or_weights, history, targets, ks=(20, 100), metrics=METRICS, client=None,
             users_per_block: int | None = None, exclude_seen: bool = True, *, k=None) -> dict:
    """Ranking metrics of a model on held-out users, one task per block of users.

    Parameters
    ----------
    model_or_weights : tuple (W1, W2), model, scorer or future
        SANSA weights, a fitted model with a ``.weights`` attribute, a scorer such as
        :class:`PopularityBaseline`, or a ``distributed`` future of ``(W1, W2)``.
    history, targets : scipy.sparse matrix or InteractionStore, shape (n_users, n_items)
        Row-aligned inputs and held-out items of the evaluated users (e.g. the ``test_history``
        and ``test_targets`` of :func:`split_strong_generalization`).
    ks : int or sequence of int, default (20, 100)
        Cut-offs; the top ``max(ks)`` is computed once per user.
    metrics : sequence of str, default ("recall", "ndcg", "coverage")
        Which metrics to report.
    client : distributed.Client, optional
        Run the block tasks on this cluster; in this process when None.
    users_per_block : int, optional
        Users per task (default: as :func:`dask_rec.serving.recommend.recommend_users`).
    exclude_seen : bool, default True
        Leave the users' history items out of their rankings.
    k : int or sequence of int, optional
        Alias of ``ks``.

    Returns
    -------
    dict
        ``{"recall@20": ..., "ndcg@20": ..., "coverage@20": ..., ..., "n_users": ...}``: means
        over the users with at least one target (users without targets are left out, coverage
        included; ``n_users`` counts the users kept). Coverage is the share of the catalog
        recommended to at least one of them.
    """
    if k is not None:
        if ks != (20, 100):
            raise TypeError("give ks or its alias k, not both")
        ks = k
    ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not ks or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in ks):
        raise ValueError(f"ks must be integers >= 1; got {ks!r}")
    ks = tuple(int(c) for c in ks)
    metrics = tuple(metrics)
    if set(metrics) - set(METRICS):
        raise ValueError(f"unknown metrics {sorted(set(metrics) - set(METRICS))}; choose from {METRICS}")
    for name, M in (("history", history), ("targets", targets)):
        if not (is_store(M) or sp.issparse(M)):
            raise TypeError(f"{name} must be a scipy.sparse matrix or a store; got {type(M).__name__}")
    if is_future(model_or_weights):  # weights left on the cluster by a fit: checked there
        scorer, n_items = model_or_weights, history.shape[1]
    else:
        scorer = resolve_scorer(model_or_weights)
        n_items = scorer.n_items
    for name, M in (("history", history), ("targets", targets)):
        if M.shape[1] != n_items:
            raise ValueError(f"{name} has {M.shape[1]} items; the model has {n_items}")
    if history.shape[0] != targets.shape[0]:
        raise ValueError(f"history has {history.shape[0]} users, targets {targets.shape[0]}")
    if not is_store(history):
        history = sp.csr_matrix(history)
    if not is_store(targets):
        targets = sp.csr_matrix(targets)

    bounds = block_bounds(history, users_per_block)
    executor = executor_for(client)
    if bounds.shape[0] < 2:  # no users at all
        empty = sp.csr_matrix((0, n_items), dtype=np.float32)
        return finalize_metrics(metric_sums(np.zeros((0, max(ks)), np.int64), empty, ks, metrics))
    shared = share(executor, scorer)
    handles = executor.map(_evaluate_task, row_payloads(history, bounds), row_payloads(targets, bounds),
                           shared=shared, k_max=max(ks), ks=ks, metrics=metrics,
                           exclude_seen=exclude_seen, n_threads=task_threads(executor),
                           key="dask-rec-evaluate")
    total = executor.tree_reduce(merge_metric_sums, handles, key="dask-rec-evaluate-merge")
    result = executor.gather(total)
    ordered = {}
    for c in ks:
        for m in metrics:
            ordered[f"{m}@{c}"] = None
    ordered.update(finalize_metrics(result))
    return ordered
