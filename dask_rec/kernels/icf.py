"""ICF factorizer: incomplete Cholesky with a non-zero budget (left-looking, numba).

After Lin & Moré's icfm, as the design doc (section 3) describes it. Column ``j`` of ``L̂``:

1. gather the strictly lower part of ``A_p[:, j]`` into a dense work vector ``w`` (only the
   touched rows are tracked, in a pattern list);
2. subtract ``L̂[i, k]·L̂[j, k]`` (rows ``i > j``) for every earlier column ``k`` with a stored
   ``L̂[j, k] ≠ 0``. Those columns are found without any search: each finished column ``k``
   sits in a linked list keyed by the row of its next stored entry below the current column
   (``head``/``nxt``/``pos``), so each stored entry is visited once per column it updates;
3. the pivot is the running diagonal ``dd[j]``, which started at ``A_p[j, j] + shift`` and has
   lost ``L̂[j, k]²`` for *every computed* entry of row ``j`` in earlier columns, kept or dropped.
   If it is not ``> 0`` the attempt fails; otherwise ``L̂[j, j] = sqrt(dd[j])`` and
   ``L̂[i, j] = w[i] / L̂[j, j]``;
4. every computed ``L̂[i, j]`` (kept or dropped) updates ``dd[i] -= L̂[i, j]²``;
5. of the non-zero ``L̂[i, j]`` keep the ``budget_j`` largest in magnitude (ties: the smaller row
   index first); exact zeros are never stored.

Budget: with ``off_so_far`` off-diagonal entries stored in columns ``0..j-1``,
``budget_j = floor((max_nnz - n - off_so_far) / (n - j))`` off-diagonal entries. This is the
design doc's ``(max_nnz - nnz_so_far)/(n - j)`` with the n diagonal entries set aside first, so
the factor never exceeds ``max_nnz`` (diagonal included) and unused budget rolls forward to
later columns. ``max_nnz`` below ``n`` gives a diagonal factor.

If a pivot fails, the factorization restarts from scratch with ``A_p + shift·I``, ``shift =
shift_step * shift_multiplier**attempt`` for ``attempt = 0, 1, ...`` (the regularisation λ is
already in ``A_p``); after ``max_attempts`` restarts it gives up.

Memory: the factor's storage (at most ``max_nnz - n`` off-diagonal entries: int32 row index +
float64 value each, grown on demand) plus a dozen arrays of length n. Nothing is O(n²) except
the budget itself; sizes and offsets are int64.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from dask_rec.kernels.cholesky import NotPositiveDefiniteError, check_budget, square_csc

__all__ = ["icf_ldlt", "icf_ldlt_streamed"]

log = logging.getLogger(__name__)

_KERNELS: dict = {}


def _kernels():
    """Compile (or load from the on-disk cache) the numba kernels on first use."""
    if _KERNELS:
        return _KERNELS
    import numba

    @numba.njit(nogil=True, cache=True)
    def icf_block(j0, j1, aptr, aind, aval, n, off_budget, off, lptr, lind, lval, pivots, dd, w, mark, pat,
                  head, nxt, pos, mags, vals, rows):
        """Columns ``j0:j1`` of one attempt; returns ``(failed_column or -1, off, lind, lval)``.

        ``aptr/aind/aval``: the columns ``j0:j1`` of ``A_p`` (column ``j`` is
        ``aptr[j - j0]:aptr[j - j0 + 1]``, rows sorted; only rows ``> j`` are read). Everything
        else is the attempt's state, carried from one block of columns to the next:
        ``lptr/lind/lval`` the strictly lower part of L̂ so far (CSC, ``off`` entries; ``lind``
        and ``lval`` are grown here and returned), ``pivots = diag(L̂)²``, ``dd`` the running
        diagonal, and work arrays of length n.

        The work vector ``w`` is all zeros between columns, and a row joins the column's pattern
        list when it is touched while ``w[i] == 0`` — so the hot update loop touches one random
        location (``w[i]``) per multiply-add, not two. A row whose sum returns to exactly zero
        and is touched again is listed twice; the ``mark`` pass after the updates drops repeats
        (and the list is compacted the same way should it ever fill up).
        """
        pat_cap = pat.shape[0]
        for j in range(j0, j1):
            # 1. gather the strictly lower part of A[:, j]
            m = 0
            for p in range(aptr[j - j0], aptr[j - j0 + 1]):
                i = aind[p]
                if i > j:
                    if w[i] == 0.0:
                        pat[m] = i
                        m += 1
                    w[i] += aval[p]
            # 2. left-looking updates from the columns k with a stored L[j, k]
            k = head[j]
            head[j] = -1
            while k != -1:
                k_next = nxt[k]
                p0 = pos[k]  # lind[p0] == j
                ljk = lval[p0]
                end = lptr[k + 1]
                if m + (end - p0) > pat_cap:  # rare: drop repeated rows from the list
                    mm = 0
                    for t in range(m):
                        i = pat[t]
                        if mark[i] != j:
                            mark[i] = j
                            pat[mm] = i
                            mm += 1
                    m = mm
                    for t in range(m):
                        mark[pat[t]] = -1
                for p in range(p0 + 1, end):  # the hot loop: branch-free
                    i = lind[p]
                    wi = w[i]
                    pat[m] = i
                    m += wi == 0.0
                    w[i] = wi - lval[p] * ljk
                if p0 + 1 < end:
                    pos[k] = p0 + 1
                    r = lind[p0 + 1]
                    nxt[k] = head[r]
                    head[r] = k
                k = k_next
            # 3. pivot from the running diagonal
            pivot = dd[j]
            if not pivot > 0.0:  # also catches NaN
                return j, off, lind, lval
            pivots[j] = pivot
            ljj = np.sqrt(pivot)
            # 4. scale; every computed entry updates the diagonal of its row; clear w
            nz = 0
            for t in range(m):
                i = pat[t]
                if mark[i] == j:  # listed twice
                    continue
                mark[i] = j
                v = w[i] / ljj
                w[i] = 0.0
                dd[i] -= v * v
                if v != 0.0:
                    rows[nz] = i
                    vals[nz] = v
                    mags[nz] = abs(v)
                    nz += 1
            # 5. keep the budget_j largest (ties: smaller row first)
            budget = (off_budget - off) // (n - j)
            keep = nz
            if nz > budget:
                keep = budget
                if budget > 0:
                    thr = np.partition(mags[:nz], nz - budget)[nz - budget]
                    above = 0
                    for t in range(nz):
                        if mags[t] > thr:
                            above += 1
                    ties_needed = budget - above
                    # ties at the threshold: the smallest row indices
                    tie_rows = np.empty(nz - above, dtype=np.int64)
                    nt = 0
                    for t in range(nz):
                        if mags[t] == thr:
                            tie_rows[nt] = rows[t]
                            nt += 1
                    tie_rows = np.sort(tie_rows[:nt])
                    cut_row = tie_rows[ties_needed - 1]
                    c = 0
                    for t in range(nz):
                        if mags[t] > thr or (mags[t] == thr and rows[t] <= cut_row):
                            rows[c] = rows[t]
                            vals[c] = vals[t]
                            c += 1
            # 6. store column j (rows sorted) and queue it under its first row
            start = lptr[j]
            if keep > 0:
                if start + keep > lind.shape[0]:
                    new_cap = min(max(2 * lind.shape[0], start + keep), off_budget)
                    grown_ind = np.empty(new_cap, dtype=np.int32)
                    grown_val = np.empty(new_cap, dtype=np.float64)
                    grown_ind[:start] = lind[:start]
                    grown_val[:start] = lval[:start]
                    lind = grown_ind
                    lval = grown_val
                order = np.argsort(rows[:keep])
                for t in range(keep):
                    lind[start + t] = rows[order[t]]
                    lval[start + t] = vals[order[t]]
                pos[j] = start
                r = lind[start]
                nxt[j] = head[r]
                head[r] = j
            off += keep
            lptr[j + 1] = start + keep
        return -1, off, lind, lval

    @numba.njit(nogil=True, cache=True)
    def assemble_unit_lower(n, lptr, lind, lval, pivots):
        """Unit lower L = L̂·diag(1/diag L̂) with the diagonal first in each column (CSC)."""
        nnz = lptr[n] + n
        indptr = np.empty(n + 1, dtype=np.int64)
        ind = np.empty(nnz, dtype=np.int32)
        val = np.empty(nnz, dtype=np.float32)
        q = 0
        for j in range(n):
            indptr[j] = q
            ind[q] = j
            val[q] = 1.0
            q += 1
            ljj = np.sqrt(pivots[j])
            for p in range(lptr[j], lptr[j + 1]):
                ind[q] = lind[p]
                val[q] = lval[p] / ljj
                q += 1
        indptr[n] = q
        return indptr, ind, val

    _KERNELS.update(icf_block=icf_block, assemble_unit_lower=assemble_unit_lower)
    return _KERNELS


def icf_ldlt(
    A_p,
    max_nnz: int,
    shift_step: float = 1e-3,
    shift_multiplier: float = 2.0,
    max_attempts: int = 30,
):
    """Incomplete Cholesky of ``A_p`` with at most ``max_nnz`` non-zeros, as LDLᵀ.

    Parameters
    ----------
    A_p : scipy.sparse matrix, shape (n, n)
        Symmetric, already permuted (and, on the ICF path, scaled and regularised). Only the
        lower triangle (diagonal included) is read: pass the full symmetric matrix or its lower
        triangle. Symmetry is not checked. Converted to CSC float64 if needed.
    max_nnz : int
        Budget for L, the diagonal included (see the module notes for the per-column rule).
    shift_step, shift_multiplier : float
        Restart ``attempt`` (0, 1, ...) factors ``A_p + shift_step·shift_multiplier**attempt·I``.
    max_attempts : int
        Restarts allowed after the unshifted attempt fails.

    Returns
    -------
    L : scipy.sparse.csc_matrix, float32
        Unit lower triangular, unit diagonal stored explicitly (first in each column), sorted
        row indices.
    d : numpy.ndarray, float64
        Pivots ``diag(L̂)²``: ``A_p + shift·I ≈ L·diag(d)·Lᵀ``.
    stats : dict
        ``shift`` (0.0 if none was needed), ``attempts`` (restarts done, 0 if the first attempt
        succeeded), ``seconds`` (wall time, all attempts).

    Raises
    ------
    NotPositiveDefiniteError
        Still a non-positive pivot after ``max_attempts`` restarts.
    """
    A = square_csc(A_p, "A_p")
    n = A.shape[0]
    lower_nnz = (A.nnz - n) // 2 + n  # rough size of A's lower triangle

    def columns():
        yield 0, n, A.indptr, A.indices, A.data

    return icf_ldlt_streamed(columns, n, A.diagonal(), max_nnz, shift_step=shift_step,
                             shift_multiplier=shift_multiplier, max_attempts=max_attempts,
                             storage_hint=2 * lower_nnz)


def icf_ldlt_streamed(
    columns,
    n: int,
    diag,
    max_nnz: int,
    shift_step: float = 1e-3,
    shift_multiplier: float = 2.0,
    max_attempts: int = 30,
    storage_hint: int | None = None,
):
    """:func:`icf_ldlt` reading ``A_p`` one block of columns at a time.

    The factorization is left-looking: column ``j`` of ``L̂`` reads column ``j`` of ``A_p``
    once, and nothing after it. So ``A_p`` need never be in memory whole: ``columns`` yields it
    in order, block by block, and the result is the same, bit for bit, as :func:`icf_ldlt` on
    the assembled matrix (same arithmetic in the same order). Memory: the factor, the block
    being read and about 15 arrays of length ``n``.

    Parameters
    ----------
    columns : callable
        ``columns()`` returns an iterable of ``(j0, j1, indptr, indices, data)``, the columns
        ``j0:j1`` of ``A_p`` in CSC form (``indptr`` of length ``j1 - j0 + 1``, relative to
        ``indices``/``data``; rows sorted within a column), tiling ``0:n`` in order. Only the
        entries below the diagonal are read. Called once per attempt (a restart reads the
        columns again).
    n : int
        Order of ``A_p``.
    diag : array of float, shape (n,)
        The diagonal of ``A_p``.
    max_nnz, shift_step, shift_multiplier, max_attempts
        As in :func:`icf_ldlt`.
    storage_hint : int, optional
        First allocation of the factor's entries (grown on demand).

    Returns
    -------
    L, d, stats
        As in :func:`icf_ldlt`.
    """
    t0 = time.perf_counter()
    max_nnz = check_budget(max_nnz)
    if not (shift_step > 0 and np.isfinite(shift_step)):
        raise ValueError(f"shift_step must be a positive finite number; got {shift_step!r}")
    if not (shift_multiplier >= 1 and np.isfinite(shift_multiplier)):
        raise ValueError(f"shift_multiplier must be >= 1; got {shift_multiplier!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, (int, np.integer)) or max_attempts < 0:
        raise ValueError(f"max_attempts must be a non-negative integer; got {max_attempts!r}")
    n = int(n)
    diag = np.asarray(diag, dtype=np.float64)
    if diag.shape != (n,):
        raise ValueError(f"diag must have shape ({n},); got {diag.shape}")
    budget = max(max_nnz, n)
    # storage never needs more than the full strictly lower triangle (the per-column rule still
    # uses the unclipped budget)
    off_budget = min(budget - n, n * (n - 1) // 2)
    hint = 0 if storage_hint is None else int(storage_hint)
    cap0 = int(min(off_budget, max(hint, 1 << 16)))

    shift = 0.0
    attempt = 0
    while True:
        failed, lptr, lind, lval, pivots = _attempt(columns, n, diag, shift, budget, cap0)
        if failed < 0:
            break
        if attempt >= max_attempts:
            raise NotPositiveDefiniteError(
                f"incomplete Cholesky: pivot {failed} of {n} not positive with diagonal shift "
                f"{shift:g} after {attempt} restarts; raise l2, shift_step or max_attempts"
            )
        new_shift = float(shift_step) * float(shift_multiplier) ** attempt
        log.warning(
            "ICF: pivot %d of %d not positive (shift %g); restarting with diagonal shift %g (restart %d of %d)",
            failed, n, shift, new_shift, attempt + 1, max_attempts,
        )
        shift = new_shift
        attempt += 1

    indptr, ind, val = _kernels()["assemble_unit_lower"](n, lptr, lind, lval, pivots)
    del lind, lval
    L = sp.csc_matrix((val, ind, indptr), shape=(n, n))
    L.has_sorted_indices = True
    seconds = time.perf_counter() - t0
    stats = {"shift": shift, "attempts": attempt, "seconds": seconds}
    log.info("ICF: n=%d, nnz %d of max_nnz %d, shift %g after %d restarts, %.2fs", n, L.nnz, max_nnz, shift, attempt, seconds)
    return L, pivots, stats


def _attempt(columns, n: int, diag: np.ndarray, shift: float, budget: int, cap0: int):
    """One attempt over all blocks of ``columns()``: ``(failed, lptr, lind, lval, pivots)``."""
    kernel = _kernels()["icf_block"]
    off_budget = np.int64(budget - n)  # int64; >= 0
    cap = min(max(cap0, 1), max(int(off_budget), 1))
    lind = np.empty(cap, dtype=np.int32)
    lval = np.empty(cap, dtype=np.float64)
    lptr = np.zeros(n + 1, dtype=np.int64)
    pivots = np.zeros(n, dtype=np.float64)
    dd = diag + shift
    w = np.zeros(n, dtype=np.float64)
    mark = np.full(n, -1, dtype=np.int64)
    pat = np.empty(2 * n + 1, dtype=np.int64)
    head = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    pos = np.zeros(n, dtype=np.int64)
    mags = np.empty(n, dtype=np.float64)
    vals = np.empty(n, dtype=np.float64)
    rows = np.empty(n, dtype=np.int64)
    off = np.int64(0)
    expected = 0
    for j0, j1, aptr, aind, aval in columns():
        if j0 != expected or j1 < j0 or j1 > n or len(aptr) != j1 - j0 + 1:
            raise ValueError(f"column blocks must tile 0..{n} in order; got {j0}:{j1} after column {expected}")
        failed, off, lind, lval = kernel(
            np.int64(j0), np.int64(j1), aptr, aind, aval, np.int64(n), off_budget, off, lptr, lind, lval,
            pivots, dd, w, mark, pat, head, nxt, pos, mags, vals, rows,
        )
        if failed >= 0:
            return failed, lptr, lind[:0], lval[:0], pivots
        expected = j1
    if expected != n:
        raise ValueError(f"column blocks must tile 0..{n}; they stopped at {expected}")
    return -1, lptr, lind[:off], lval[:off], pivots
