"""Shared helpers of the benchmarks: datasets, the split, subprocess runs with peak memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def load_matrix(name: str) -> sp.csr_matrix:
    """Binary users x items matrix of a shared dataset (or a .npz file path)."""
    import pandas as pd

    if name.endswith(".npz"):
        return sp.load_npz(name).tocsr()
    path = SHARED_DATASETS / name / "interactions.parquet"
    if not path.exists():
        sys.exit(f"dataset {name!r} not found at {path}")
    df = pd.read_parquet(path, columns=["user_id", "item_id"])
    users = np.unique(df["user_id"].to_numpy(), return_inverse=True)[1]
    items = np.unique(df["item_id"].to_numpy(), return_inverse=True)[1]
    X = sp.csr_matrix((np.ones(len(df), np.float32), (users, items)))
    X.data[:] = 1.0
    return X


def write_split(X, split_dir: str, test_users: int | None = None) -> int:
    """Save the strong-generalization split of ``X`` (seed 0) as train/history/targets.npz; held-out users."""
    import os

    from dask_rec.serving.evaluation import split_strong_generalization

    n_test = test_users or min(10_000, X.shape[0] // 10)
    split = split_strong_generalization(X, n_test_users=n_test, seed=0)
    for name, matrix in (("train", split.train), ("history", split.test_history), ("targets", split.test_targets)):
        sp.save_npz(os.path.join(split_dir, f"{name}.npz"), matrix)
    return n_test


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_json_subprocess(args: list[str], timeout: float | None = None) -> dict:
    """Run ``python args...`` in a fresh process; its last stdout line is a JSON result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed (exit code {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)
