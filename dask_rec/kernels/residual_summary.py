"""Residual summaries of blocks of ``M ≈ L⁻¹``: what the UMR driver logs and finetunes by.

A block's summary holds the largest and the summed squared residual norm ``‖e_j − L m_j‖``, its
entry count and its top-``k`` columns by ``‖r_j‖ / sqrt(n − j)`` (the columns finetune steps
update); summaries of blocks merge by a tree reduction (:func:`merge_residual_summaries`).
No Dask here: :mod:`dask_rec.models.sansa.invert` schedules these as tasks.
"""

from __future__ import annotations

import math

import numpy as np

from dask_rec.kernels.umr import changed_columns, residual_norms

__all__ = ["residual_summary", "top_columns", "merge_residual_summaries"]


def residual_summary(L, M, start, k, prev_M=None, prev=None):
    """Residual statistics of one block and its top-``k`` columns by ``‖r_j‖ / sqrt(n − j)``.

    With ``prev`` (this block's summary when it was ``prev_M``), only the columns that differ
    from ``prev_M`` are recomputed; the others keep their norms, which are the same numbers (a
    column's norm depends on that column and ``L`` only).
    """
    n = L.shape[0]
    if prev is None:
        norms = residual_norms(L, M, start)
    else:
        norms = prev["norms"].copy()
        cols = np.flatnonzero(changed_columns(M, prev_M))
        if cols.size:
            norms[cols] = residual_norms(L, M, start, cols)
    cols = np.arange(start, start + norms.shape[0], dtype=np.int64)
    scores = norms / np.sqrt(n - cols)
    return top_columns(
        {
            "k": int(k),
            "max": float(norms.max(initial=0.0)),
            "sumsq": float(np.dot(norms, norms)),
            "nnz": int(M.nnz),
            "cols": cols,
            "scores": scores,
            "norms": norms,  # all of the block's, for the next incremental summary
        },
        k,
    )


def top_columns(summary, k=None):
    """Keep the ``k`` columns of largest score (ties by column index, so independent of blocking)."""
    k = summary["k"] if k is None else k
    # largest score first, ties by column index: independent of how columns are blocked
    order = np.lexsort((summary["cols"], -summary["scores"]))[:k]
    summary["cols"] = summary["cols"][order]
    summary["scores"] = summary["scores"][order]
    return summary


def merge_residual_summaries(parts):
    """One summary of several blocks' (the tree-reduction step; the worst columns kept)."""
    return top_columns(
        {
            "k": parts[0]["k"],
            "max": max(p["max"] for p in parts),
            "sumsq": math.fsum(p["sumsq"] for p in parts),
            "nnz": sum(p["nnz"] for p in parts),
            "cols": np.concatenate([p["cols"] for p in parts]),
            "scores": np.concatenate([p["scores"] for p in parts]),
        }
    )
