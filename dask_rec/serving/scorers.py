"""What scores a block of users: the scorer contract of the user-block stages.

A *scorer* is any picklable object with ``n_items`` and
``topk_block(X_block, k, exclude_seen=True, allowed=None, n_threads=1) -> (ids, scores)``
following the top-k block contract of :mod:`dask_rec.models.base` (``b × k`` arrays, best first,
padded with id −1 and score −inf). :class:`WeightsScorer` is the scorer of SANSA-style weights
``(W1, W2)``; :func:`resolve_scorer` turns weights, a fitted model or a scorer into one, and
:func:`share` sends it to the block tasks once per job, and :func:`realign` (called by each block
task) copies the arrays that arrived misaligned in a worker's memory.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dask_rec.executor import identity, is_future
from dask_rec.kernels.scoring import recommend_block

__all__ = ["WeightsScorer", "resolve_scorer", "share", "realign", "ALIGNMENT"]

#: Byte alignment :func:`realign` restores (what NumPy's own allocations give).
ALIGNMENT = 16


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
    :class:`dask_rec.serving.evaluation.PopularityBaseline`).
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


def _bundle(weights, *rest):
    """Runs on a worker: the scorer of weights that live on the cluster, plus the rest."""
    return (resolve_scorer(weights), *rest)


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


def _aligned_array(a: np.ndarray) -> np.ndarray:
    return a.copy() if a.ctypes.data % ALIGNMENT else a


def realign(obj, depth: int = 2):
    """Give ``obj``'s NumPy arrays (its attributes, sparse matrices and tuples among them, ``depth``
    levels down) a start aligned to :data:`ALIGNMENT` bytes, copying only those that lack it; in
    place where it can, and returns ``obj``.

    A worker rebuilds the arrays it receives as views into the message's buffer, at whatever
    offset they came: an ALS scorer's item factors arrived 1 byte off, which made its matrix
    products and scans 1.7× slower. Block tasks call this on the shared scorer; the worker keeps
    the fixed object, so only its first task there pays for the copies.
    """
    if isinstance(obj, np.ndarray):
        return _aligned_array(obj)
    if sp.issparse(obj) and obj.format in ("csr", "csc"):
        obj.data, obj.indices, obj.indptr = (_aligned_array(a) for a in (obj.data, obj.indices, obj.indptr))
        return obj
    if depth <= 0:
        return obj
    if isinstance(obj, tuple):
        return tuple(realign(v, depth - 1) for v in obj)
    if isinstance(obj, list):
        obj[:] = [realign(v, depth - 1) for v in obj]
        return obj
    attrs = getattr(obj, "__dict__", None)
    if attrs is not None and not isinstance(obj, type):
        for name, value in list(attrs.items()):
            fixed = realign(value, depth - 1)
            if fixed is not value:
                attrs[name] = fixed
    return obj
