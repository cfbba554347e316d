"""The stages of a distributed ALS fit (orchestration only; the maths is in :mod:`dask_rec.kernels.als`).

Data layout
-----------
The users x items matrix comes as row blocks (:mod:`dask_rec.data.blocks`; a store's blocks are read
by the tasks). The item-major copy is built once on the workers and kept there for the fit: each
user block is split by item block (one task per user block), and one task per item block stacks
its pieces side by side (users in order), giving the rows ``X[:, a:b].T`` of that item block.
Item blocks hold about as many interactions each as the user blocks (balanced on the item counts).

One iteration
-------------
* ``Y^T Y``: one task per item-factor block (its k x k Gramian, float64), summed by a tree
  reduction and passed, with the list of item-factor blocks, to...
* one task per user block: stacks the item-factor blocks (each worker fetches the blocks it lacks
  once) and solves its new user factors (:func:`dask_rec.kernels.als.solve_rows`,
  warm-started from its previous factors for CG);
* the same from the other side for the item blocks, with ``X^T X`` and the full ``X``;
* one task per item block adds the stored pairs' share of the objective
  (:func:`dask_rec.kernels.factors.observed_losses`), summed by a tree reduction; the rest of the
  exact objective comes from the two Gramians (``sum_ui (x_u . y_i)^2 = sum(X^T X * Y^T Y)``,
  ``|X|^2 = trace(X^T X)``).

Every iteration is submitted without waiting; only the per-iteration loss sums and the k x k
Gramians reach the client, then the item factors at the end (the user factors only on request). Each task's result depends only on its
rows and on the (deterministically reduced) Gramian, so the factors are the same on any number
of workers, and equal up to float round-off in the Gramian sums for any other blocking.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.als import solve_rows
from dask_rec.kernels.factors import factor_gramian, init_factors, observed_losses

__all__ = ["item_block_bounds", "run_als"]

_USERS, _ITEMS = 0, 1  # init streams


def item_block_bounds(item_counts, n_blocks: int) -> np.ndarray:
    """Item offsets splitting ``item_counts`` into ``n_blocks`` blocks of about equal interactions."""
    counts = np.asarray(item_counts, dtype=np.int64)
    n_items = counts.shape[0]
    n_blocks = max(1, min(int(n_blocks), n_items))
    cum = np.cumsum(counts)
    targets = cum[-1] * np.arange(1, n_blocks) / n_blocks if n_items else np.zeros(0)
    inner = np.searchsorted(cum, targets, side="left") + 1
    return np.unique(np.r_[0, np.clip(inner, 0, n_items), n_items]).astype(np.int64)


# ------------------------------------------------------------------------------ task functions


def _split_by_items(X_block, bounds):
    """The transposed pieces ``X_block[:, a:b].T`` (CSR, items x rows) of each item block."""
    C = sp.csc_matrix(X_block)
    C.sort_indices()
    T = sp.csr_matrix((C.data, C.indices, C.indptr), shape=(C.shape[1], C.shape[0]))
    return tuple(T[a:b] for a, b in zip(bounds[:-1], bounds[1:]))


def _pick(pieces, j):
    return pieces[j]


def _stack_side_by_side(*pieces):
    M = sp.hstack(pieces, format="csr")
    M.sort_indices()
    return M


def _concat(*blocks):
    return np.concatenate(blocks, axis=0)


def _sum(parts):
    total = parts[0].copy() if isinstance(parts[0], np.ndarray) else parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _init(start, stop, factors, seed, stream):
    return init_factors(int(start), int(stop), factors, seed, stream)


def _solve(X_block, previous, others, gramian, regularization, alpha, solver, cg_steps, n_threads):
    return solve_rows(X_block, _concat(*others), gramian, regularization, alpha, solver=solver, cg_steps=cg_steps,
                      previous=previous, n_threads=n_threads)


def _observed_loss(X_block, F, others, alpha):
    return observed_losses(X_block, F, _concat(*others), alpha)


# ------------------------------------------------------------------------------ stages


def _item_major(executor, user_blocks, bounds):
    split = executor.map(_split_by_items, user_blocks, bounds=bounds, key="als-split")
    n_item_blocks = len(bounds) - 1
    blocks = []
    for j in range(n_item_blocks):
        pieces = executor.map(_pick, split, [j] * len(split), key="als-pick")
        blocks.append(executor.submit(_stack_side_by_side, *pieces, key="als-item-block"))
        executor.release(*pieces)
    executor.release(*split)
    return blocks


def _gramian(executor, blocks, key):
    return executor.tree_reduce(_sum, executor.map(factor_gramian, blocks, key=key), key=f"{key}-sum")


def _solve_blocks(executor, row_blocks, previous, other_blocks, gramian, config, key):
    from dask_rec.stages.user_blocks import task_threads  # 1 on a cluster, all cores in process

    return executor.map(_solve, row_blocks, previous, others=list(other_blocks), gramian=gramian,
                        regularization=config.regularization, alpha=config.alpha, solver=config.solver,
                        cg_steps=config.cg_steps, n_threads=task_threads(executor), key=key)


def _objective(observed, UtU, YtY, regularization) -> float:
    """The objective from its parts: ``sum_ui (x_u . y_i)^2 = sum(UtU * YtY)``, ``|U|^2 = trace(UtU)``."""
    return float(observed) + float(np.sum(UtU * YtY)) + regularization * float(np.trace(UtU) + np.trace(YtY))


def check_memory(executor, n_users: int, n_items: int, factors: int) -> None:
    """Refuse up front when a solve task cannot hold the other side's full factors twice."""
    from dask_rec.memory_plan import memory_limits, require

    need = 2 * max(n_users, n_items) * factors * 4
    require("als-solve", need, memory_limits(executor).per_task,
            f"the factors of {max(n_users, n_items)} rows x {factors} (held twice by a solve task)",
            "use fewer factors or give each worker thread more memory")


def run_als(source, executor, config, item_counts, keep_user_factors: bool = False) -> dict:
    """Fit ALS on the row blocks of ``source`` with ``executor``.

    Returns ``{"user_factors", "item_factors", "objective", ...}``: the factors as float32 arrays
    (user factors None unless ``keep_user_factors``) and the objective after each iteration.
    """
    n_users, n_items = (int(n) for n in source.shape)
    check_memory(executor, n_users, n_items, config.factors)
    user_bounds = np.asarray(source.bounds, dtype=np.int64)
    item_bounds = item_block_bounds(item_counts, source.n_blocks)
    user_blocks = source.block_handles(executor)
    item_blocks = _item_major(executor, user_blocks, item_bounds)
    k, seed = config.factors, config.seed
    U = executor.map(_init, user_bounds[:-1], user_bounds[1:], factors=k, seed=seed, stream=_USERS,
                     key="als-init-users")
    Y = executor.map(_init, item_bounds[:-1], item_bounds[1:], factors=k, seed=seed, stream=_ITEMS,
                     key="als-init-items")
    YtY = _gramian(executor, Y, "als-gram-items-init")
    checks = []
    for it in range(config.iterations):
        U_new = _solve_blocks(executor, user_blocks, U, Y, YtY, config, f"als-users-{it}-solve")
        executor.release(*U)
        U = U_new
        UtU = _gramian(executor, U, f"als-gram-users-{it}")
        Y_new = _solve_blocks(executor, item_blocks, Y, U, UtU, config, f"als-items-{it}-solve")
        executor.release(*Y)
        Y = Y_new
        YtY = _gramian(executor, Y, f"als-gram-items-{it}")
        observed = executor.map(_observed_loss, item_blocks, Y, others=list(U), alpha=config.alpha,
                                key=f"als-loss-{it}")
        checks.append((executor.tree_reduce(_sum, observed, key=f"als-loss-sum-{it}"), UtU, YtY))
    values = executor.gather([h for parts in checks for h in parts])
    objective = [_objective(*values[3 * i:3 * i + 3], config.regularization) for i in range(len(checks))]
    user_factors = None
    if keep_user_factors:
        user_factors = np.concatenate(executor.gather(U), axis=0) if U else np.zeros((0, k), np.float32)
    item_factors = np.concatenate(executor.gather(Y), axis=0) if Y else np.zeros((0, k), np.float32)
    executor.release(*U, *Y, *item_blocks, *user_blocks, *[h for parts in checks for h in parts])
    if not checks:
        executor.release(YtY)
    return {"user_factors": user_factors, "item_factors": item_factors, "objective": objective,
            "n_user_blocks": len(user_bounds) - 1, "n_item_blocks": len(item_bounds) - 1}
