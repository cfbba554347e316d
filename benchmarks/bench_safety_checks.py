"""Cost of the safety checks (issue 13): bounds checks at kernel entry and checked model loading.

Side by side in one process: ``recommend_block`` on user blocks with the bounds check (as shipped)
and with it bypassed; ``SANSA.load`` (chunk presence, CRC-32, CSR structure) against reading the same
arrays with plain zarr. Synthetic weights, so the figures depend only on sizes.

    PYTHONPATH=. python benchmarks/bench_safety_checks.py --items 20000 --nnz-per-row 200 --users 4096
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def _random_csr(rng, n_rows, n_cols, per_row):
    indptr = np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int64)
    indices = np.sort(rng.integers(0, n_cols, (n_rows, per_row)), axis=1).reshape(-1).astype(np.int32)
    M = sp.csr_matrix((rng.random(indices.size, dtype=np.float32), indices, indptr), shape=(n_rows, n_cols))
    M.sum_duplicates()
    return M


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--nnz-per-row", type=int, default=200)
    p.add_argument("--users", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()

    import dask_rec.kernels.scoring as scoring
    import dask_rec.kernels.topk as topk
    from dask_rec import SANSA

    rng = np.random.default_rng(0)
    W1 = _random_csr(rng, a.items, a.items, a.nnz_per_row)
    W2 = _random_csr(rng, a.items, a.items, a.nnz_per_row)
    X = _random_csr(rng, a.users, a.items, 20)
    scoring.recommend_block(X, W1, W2, 20)  # compile; also marks W1, W2 checked
    checked = _best(lambda: scoring.recommend_block(X.copy(), W1, W2, 20), a.repeat)
    original = topk.check_bounds
    topk.check_bounds = lambda A, name: None
    try:
        unchecked = _best(lambda: scoring.recommend_block(X.copy(), W1, W2, 20), a.repeat)
    finally:
        topk.check_bounds = original
    first = _best(lambda: topk.check_bounds(W1.copy(), "W1"), a.repeat)  # a new weight matrix: full check
    print(f"recommend_block {a.users} users x {a.items} items, W nnz {W1.nnz:,}: checked {checked * 1e3:.1f} ms, "
          f"unchecked {unchecked * 1e3:.1f} ms (ratio {checked / unchecked:.3f}); first check of one W "
          f"{first * 1e3:.1f} ms")

    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        model = SANSA().load_weights((W1, W2))
        model.save(Path(tmp) / "m.zarr")
        load = _best(lambda: SANSA.load(Path(tmp) / "m.zarr"), a.repeat)

        def plain():
            root = zarr.open_group(str(Path(tmp) / "m.zarr"), mode="r")
            for g in ("W1", "W2"):
                attrs = dict(root[g].attrs)
                sp.csr_matrix((root[g]["data"][:], root[g]["indices"][:], root[g]["indptr"][:]), shape=attrs["shape"])

        raw = _best(plain, a.repeat)
    print(f"SANSA.load (checked) {load * 1e3:.1f} ms, plain zarr read {raw * 1e3:.1f} ms (ratio {load / raw:.2f})")


if __name__ == "__main__":
    main()
