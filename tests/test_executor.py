"""The executor: one interface, the same reduction in process and on a cluster."""

from __future__ import annotations

import pytest

from dask_rec.executor import DaskExecutor, InProcessExecutor, executor_for, identity, is_future


def _nest(parts):
    return tuple(parts)


def test_tree_reduce_groups_by_fan_in_in_order():
    ex = InProcessExecutor()
    # 10 leaves, fan-in 3: groups (0,1,2) (3,4,5) (6,7,8) (9,), then those four in groups of three
    got = ex.tree_reduce(_nest, list(range(10)), fan_in=3)
    assert got == (((0, 1, 2), (3, 4, 5), (6, 7, 8)), ((9,),))
    assert ex.tree_reduce(sum, list(range(100)), fan_in=8) == sum(range(100))
    assert ex.tree_reduce(_nest, [7], fan_in=2) == 7  # a single handle is the result itself


def test_tree_reduce_refuses_bad_arguments():
    ex = InProcessExecutor()
    with pytest.raises(ValueError, match="fan_in must be >= 2"):
        ex.tree_reduce(sum, [1, 2], fan_in=1)
    with pytest.raises(ValueError, match="nothing to reduce"):
        ex.tree_reduce(sum, [], fan_in=2)


def test_in_process_submit_map_gather():
    ex = executor_for(None)
    assert isinstance(ex, InProcessExecutor) and ex.client is None
    assert ex.submit(pow, 2, 10, key="pow") == 1024
    assert ex.map(pow, [2, 3], [3, 2], key="pow") == [8, 9]
    assert ex.gather([1, 2]) == [1, 2]
    value = object()
    assert identity(value) is value and not is_future(value)


@pytest.mark.cluster
def test_cluster_reduction_equals_the_in_process_one(local_client):
    ex = executor_for(local_client)
    assert isinstance(ex, DaskExecutor)
    leaves = ex.map(identity, list(range(10)), key="leaf")
    assert all(is_future(h) for h in leaves)
    assert ex.gather(ex.tree_reduce(_nest, leaves, fan_in=3, key="nest")) == \
        InProcessExecutor().tree_reduce(_nest, list(range(10)), fan_in=3)
    assert ex.gather(ex.submit(pow, 3, 4, key="pow")) == 81


def _rows_times(df, i, factor=1):
    return (i, int(len(df)) * factor)


def _partitions():
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame({"a": range(10)})
    return dd.from_pandas(frame, npartitions=3, sort=False).to_delayed()


def test_map_partitions_runs_one_call_per_partition_in_process():
    ex = InProcessExecutor()
    parts = _partitions()
    got = ex.map_partitions(_rows_times, parts, range(len(parts)), factor=ex.scatter(2))
    assert [i for i, _ in got] == [0, 1, 2] and sum(n for _, n in got) == 20
    assert ex.n_workers == 1 and ex.persist(parts) is parts


@pytest.mark.cluster
def test_map_partitions_on_a_cluster_reads_partitions_in_the_tasks(local_client):
    ex = executor_for(local_client)
    parts = _partitions()
    factor = ex.scatter(2)  # a broadcast future as a keyword argument
    handles = ex.map_partitions(_rows_times, parts, range(len(parts)), factor=factor)
    assert all(is_future(h) for h in handles)
    assert ex.gather(handles) == InProcessExecutor().map_partitions(_rows_times, parts, range(len(parts)), factor=2)
    assert ex.n_workers == 2
