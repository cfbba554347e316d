"""Slow, obviously-correct reference computations used as test oracles."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def ease_weights(X, l2: float) -> np.ndarray:
    """Exact EASE: B = I − P·diagMat(1/diag P) with P = (XᵀX + λI)⁻¹ (dense float64)."""
    X = sp.csr_matrix(X, dtype=np.float64)
    G = (X.T @ X).toarray()
    P = np.linalg.inv(G + l2 * np.eye(G.shape[0]))
    return np.eye(G.shape[0]) - P / np.diag(P)[None, :]


def offdiagonal_relative_error(B_hat: np.ndarray, B: np.ndarray) -> float:
    """‖offdiag(B_hat − B)‖_F / ‖offdiag(B)‖_F."""
    mask = ~np.eye(B.shape[0], dtype=bool)
    return float(np.linalg.norm((B_hat - B)[mask]) / np.linalg.norm(B[mask]))


def random_interactions(rng, n_users: int, n_items: int, density: float) -> sp.csr_matrix:
    """A binary matrix where every user and every item has at least one interaction."""
    X = (rng.random((n_users, n_items)) < density).astype(np.float32)
    X[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1
    X[rng.integers(0, n_users, n_items), np.arange(n_items)] = 1
    return sp.csr_matrix(X)
