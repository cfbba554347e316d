"""From the factor's inverse to the two weight matrices of SANSA.

With M ≈ L⁻¹ (columns in the factor's item order p) and A_p ≈ L·D·Lᵀ:

    W  = M[:, p⁻¹]                       (columns back in item order; rows stay latent)
    W1 = Wᵀ                              (items x latent)
    W2 = D⁻¹·W·diag(−1 / diag(Wᵀ·D⁻¹·W)) (latent x items)

so that (x·W1)·W2 = −x·P̂·diagMat(1/diag P̂) with P̂ = Wᵀ·D⁻¹·W ≈ A⁻¹: EASE's x·B off the
diagonal when nothing is pruned and L is inverted exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["weights_from_inverse", "inverse_diagonal"]


def inverse_diagonal(M_block: sp.csc_matrix, d: np.ndarray) -> np.ndarray:
    """diag(Mᵀ·D⁻¹·M) for the columns of ``M_block``: Σ_i M_ij² / d_i."""
    M_block = M_block.tocsc()
    sq = M_block.data.astype(np.float64) ** 2 / d[M_block.indices]
    out = np.zeros(M_block.shape[1])
    cols = np.repeat(np.arange(M_block.shape[1]), np.diff(M_block.indptr))
    np.add.at(out, cols, sq)
    return out


def weights_from_inverse(M_blocks: list, d: np.ndarray, p: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Assemble ``(W1, W2)`` (CSR float32, items x items) from the column blocks of M."""
    M = M_blocks[0].tocsc() if len(M_blocks) == 1 else sp.hstack(M_blocks, format="csc")
    d = np.asarray(d, dtype=np.float64)
    diag = inverse_diagonal(M, d)
    if np.any(diag <= 0):
        raise FloatingPointError("diag(Wᵀ D⁻¹ W) has non-positive entries: the inverse lost its diagonal")
    inv_p = np.argsort(p)
    W = M[:, inv_p].tocsc()
    W1 = W.T.tocsr().astype(np.float32)
    W2 = (sp.diags(1.0 / d) @ W @ sp.diags(-1.0 / diag[inv_p])).tocsr().astype(np.float32)
    W1.sort_indices()
    W2.sort_indices()
    return W1, W2
