"""Exact global magnitude pruning, computable from per-block summaries.

Keeping the ``keep`` entries of largest magnitude across a matrix split into blocks needs one
threshold for all blocks. It is found exactly, without gathering values, from two rounds of
fixed-size histograms:

1. Each non-negative float32 magnitude is mapped to its 32-bit pattern (``key``), which orders
   like the value itself. Round one counts keys by their top 16 bits (65,536 bins); the bins are
   summed over blocks and the bin holding the ``keep``-th largest key is found.
2. Round two counts, inside that bin only, the low 16 bits; again summed over blocks.

Together they give the exact ``keep``-th largest key ``T``; every entry with ``key >= T`` is kept
(ties at ``T`` are all kept, so the result never depends on how the matrix is blocked). The
in-process helper :func:`prune_to_nnz` runs the same steps on a single block.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "N_BINS",
    "magnitude_keys",
    "coarse_histogram",
    "fine_histogram",
    "locate_threshold",
    "threshold_key",
    "prune_by_key",
    "prune_to_nnz",
    "offdiagonal_mask",
    "NO_BINS",
    "sparse_histogram",
    "dense_histogram",
    "counts_part",
    "merge_histogram_parts",
]

N_BINS = 1 << 16
_SHIFT = 16
_LOW = np.uint32(N_BINS - 1)


def magnitude_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of ``|values|`` (as float32)."""
    mags = np.abs(np.asarray(values, dtype=np.float32))
    return mags.view(np.uint32)


def offdiagonal_mask(matrix: sp.csc_matrix, col_offset: int = 0) -> np.ndarray:
    """Boolean mask over ``matrix.data``: True where the entry is off the global diagonal.

    ``matrix`` is a CSC column block whose first column is global column ``col_offset``.
    """
    matrix = _as_csc(matrix)
    cols = np.repeat(np.arange(matrix.shape[1], dtype=np.int64) + col_offset, np.diff(matrix.indptr))
    return matrix.indices != cols


def _candidate_keys(matrix, protect_diagonal: bool, col_offset: int) -> np.ndarray:
    keys = magnitude_keys(matrix.data)
    if protect_diagonal:
        keys = keys[offdiagonal_mask(matrix, col_offset)]
    return keys


def coarse_histogram(matrix, protect_diagonal: bool = False, col_offset: int = 0) -> np.ndarray:
    """Round one: counts of the block's magnitude keys by their top 16 bits (int64, N_BINS)."""
    keys = _candidate_keys(_as_csc(matrix), protect_diagonal, col_offset)
    return np.bincount(keys >> _SHIFT, minlength=N_BINS).astype(np.int64)


def fine_histogram(matrix, coarse_bin: int, protect_diagonal: bool = False, col_offset: int = 0) -> np.ndarray:
    """Round two: counts, inside ``coarse_bin``, of the keys' low 16 bits (int64, N_BINS)."""
    keys = _candidate_keys(_as_csc(matrix), protect_diagonal, col_offset)
    inside = keys[(keys >> _SHIFT) == coarse_bin]
    return np.bincount(inside & _LOW, minlength=N_BINS).astype(np.int64)


def locate_threshold(histogram: np.ndarray, keep: int) -> tuple[int, int] | None:
    """The bin holding the ``keep``-th largest key, and how many keys lie in higher bins.

    Returns ``None`` when the histogram holds ``keep`` keys or fewer (nothing to prune).
    """
    total = int(histogram.sum())
    if keep >= total:
        return None
    if keep <= 0:
        return (N_BINS, total)  # sentinel: prune everything
    above = np.cumsum(histogram[::-1])[::-1]  # above[b] = count of keys in bins >= b
    # the largest b with above[b] >= keep
    b = int(np.nonzero(above >= keep)[0][-1])
    higher = int(above[b] - histogram[b])
    return b, higher


def threshold_key(coarse: np.ndarray, fine_for_bin, keep: int) -> int | None:
    """Exact key ``T`` of the ``keep``-th largest magnitude; ``None`` if nothing is pruned.

    Parameters
    ----------
    coarse : ndarray
        Round-one histogram summed over all blocks.
    fine_for_bin : callable
        ``fine_for_bin(coarse_bin) -> ndarray``: round-two histogram for that bin, summed over
        all blocks (a second pass over the blocks on a cluster).
    keep : int
        How many entries to keep.
    """
    first = locate_threshold(coarse, keep)
    if first is None:
        return None
    coarse_bin, higher = first
    if coarse_bin >= N_BINS:
        return 0xFFFFFFFF  # keep nothing (NaN-free float32 magnitudes never reach this key)
    fine = fine_for_bin(coarse_bin)
    second = locate_threshold(fine, keep - higher)
    low = 0 if second is None else second[0]
    return (coarse_bin << _SHIFT) | low


def prune_by_key(matrix, key: int | None, protect_diagonal: bool = False, col_offset: int = 0) -> sp.csc_matrix:
    """Keep the entries whose magnitude key is ``>= key`` (and, if asked, the diagonal)."""
    matrix = _as_csc(matrix)
    if key is None:
        return matrix
    keep = magnitude_keys(matrix.data) >= np.uint32(key)
    if protect_diagonal:
        keep |= ~offdiagonal_mask(matrix, col_offset)
    return _filter_entries(matrix, keep)


def prune_to_nnz(matrix, nnz: int, protect_diagonal: bool = False, col_offset: int = 0) -> sp.csc_matrix:
    """Keep about ``nnz`` entries of largest magnitude of a single matrix (ties at the cut kept).

    With ``protect_diagonal`` the diagonal is always kept and counts towards ``nnz``.
    """
    matrix = _as_csc(matrix)
    keep = int(nnz)
    if protect_diagonal:
        keep -= int((~offdiagonal_mask(matrix, col_offset)).sum())
    coarse = coarse_histogram(matrix, protect_diagonal, col_offset)
    key = threshold_key(coarse, lambda b: fine_histogram(matrix, b, protect_diagonal, col_offset), max(keep, 0))
    return prune_by_key(matrix, key, protect_diagonal, col_offset)


def _filter_entries(matrix: sp.csc_matrix, keep: np.ndarray) -> sp.csc_matrix:
    cols = np.repeat(np.arange(matrix.shape[1], dtype=np.int64), np.diff(matrix.indptr))
    counts = np.bincount(cols[keep], minlength=matrix.shape[1])
    indptr = np.zeros(matrix.shape[1] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    out = sp.csc_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)
    out.has_sorted_indices = matrix.has_sorted_indices
    return out


def _as_csc(matrix) -> sp.csc_matrix:
    if not sp.issparse(matrix):
        raise TypeError(f"expected a scipy sparse matrix; got {type(matrix).__name__}")
    return matrix if matrix.format == "csc" else matrix.tocsc()


# ---------------------------------------------------------------------------------------------
# histogram parts of many blocks: (coarse, fine, changed-count) with histograms as (bins, counts)
# ---------------------------------------------------------------------------------------------

#: An empty sparse histogram ``(bins, counts)``.
NO_BINS = (np.array([], dtype=np.int32), np.array([], dtype=np.int64))


def sparse_histogram(hist: np.ndarray):
    """A histogram as (non-zero bins, their counts)."""
    bins = np.flatnonzero(hist).astype(np.int32)
    return bins, hist[bins]


def counts_part(counts):
    """The changed-column counts of an update, as a histogram part that carries only them."""
    return NO_BINS, NO_BINS, int(sum(counts))


def merge_histogram_parts(parts):
    """Sum parts ``(coarse, fine, changed)`` of several blocks (histograms as sparse (bins, counts)):
    the tree-reduction step of a global prune; integer sums, so exact in any order."""
    coarse = np.zeros(N_BINS, dtype=np.int64)
    fine = np.zeros(N_BINS, dtype=np.int64)
    for (cb, cc), (fb, fc), _ in parts:
        coarse[cb] += cc
        fine[fb] += fc
    return sparse_histogram(coarse), sparse_histogram(fine), sum(p[2] for p in parts)


def dense_histogram(part) -> np.ndarray:
    """A sparse histogram ``(bins, counts)`` as a dense array of :data:`N_BINS` counts."""
    dense = np.zeros(N_BINS, dtype=np.int64)
    dense[part[0]] = part[1]
    return dense
