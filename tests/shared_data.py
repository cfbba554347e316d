"""Access to the shared real datasets (``../shared/datasets``), for tests and benchmarks only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def dataset_path(name: str) -> Path:
    path = SHARED_DATASETS / name / "interactions.parquet"
    if not path.exists():
        pytest.skip(f"shared dataset {name!r} not found at {path} (clone the project with ../shared beside it)")
    return path


@lru_cache(maxsize=None)
def _matrix(name: str) -> sp.csr_matrix:
    import pandas as pd

    df = pd.read_parquet(dataset_path(name), columns=["user_id", "item_id"])
    users = np.unique(df["user_id"].to_numpy(), return_inverse=True)[1]
    items = np.unique(df["item_id"].to_numpy(), return_inverse=True)[1]
    X = sp.csr_matrix((np.ones(len(df), np.float32), (users, items)))
    X.data[:] = 1.0  # binarize repeated interactions
    return X


def interaction_matrix(name: str) -> sp.csr_matrix:
    """Binary users x items CSR of a shared dataset (IDs in sorted order)."""
    return _matrix(name).copy()


def interaction_matrix_in_file_order(name: str) -> sp.csr_matrix:
    """Binary users x items CSR (float64) of a shared dataset, IDs numbered in order of first
    appearance in the file (the order some kernel tests were written against)."""
    import pandas as pd

    df = pd.read_parquet(dataset_path(name), columns=["user_id", "item_id"])
    users, _ = pd.factorize(df["user_id"])
    items, _ = pd.factorize(df["item_id"])
    X = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(users.max() + 1, items.max() + 1))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X
