"""Shared test fixtures: the shared datasets, a seeded RNG and a small local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: ``shared/datasets`` next to the repository (``/work/shared/datasets`` for ``/work/main``).
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _dataset_path(name: str) -> Path:
    path = DATASETS / name / "interactions.parquet"
    if not path.exists():
        pytest.skip(f"shared dataset {name!r} not found at {path}")
    return path


def _load_dataset(name: str):
    """The shared dataset ``name`` as a pandas DataFrame (skips the test when it is absent)."""
    import pandas as pd

    return pd.read_parquet(_dataset_path(name))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared datasets directory; skips when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets directory not found at {DATASETS}")
    return DATASETS


@pytest.fixture(name="load_dataset", scope="session")
def load_dataset_fixture():
    """``load_dataset(name) -> pandas.DataFrame`` of a shared dataset (skips when it is absent)."""
    return _load_dataset


@pytest.fixture(name="dataset_path", scope="session")
def dataset_path_fixture():
    """``dataset_path(name) -> Path`` of a shared dataset's Parquet file (skips when it is absent)."""
    return _dataset_path


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator (the same numbers every run)."""
    return np.random.default_rng(20260523)


def _cluster(n_workers: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit="2GiB", silence_logs=40)
    return cluster, Client(cluster, set_as_default=False)


@pytest.fixture(scope="session")
def local_client():
    """A ``distributed.Client`` on a LocalCluster of 2 single-threaded worker processes.

    Not set as the default client, so code under test only uses it when given it.
    """
    pytest.importorskip("distributed")
    cluster, client = _cluster(2)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def single_worker_client():
    """A ``distributed.Client`` on a LocalCluster of 1 single-threaded worker process."""
    pytest.importorskip("distributed")
    cluster, client = _cluster(1)
    yield client
    client.close()
    cluster.close()
