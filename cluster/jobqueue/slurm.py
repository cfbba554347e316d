#!/usr/bin/env python
"""Train a dask_rec model on a SLURM cluster with dask-jobqueue.

Starts a Dask scheduler in this process, submits ``--jobs`` ordinary worker jobs
(``SLURMCluster``) and one big-memory worker job advertising ``--resources bigmem=1`` (where
dask_rec runs the factorization), fits SANSA on a store through ``Client(cluster)``, writes the
model, and cancels the jobs. Run it on a login node (or inside an allocation) with dask_rec and
dask-jobqueue installed on a shared file system::

    python cluster/jobqueue/slurm.py /shared/store /shared/model.zarr \\
        --queue normal --bigmem-queue bigmem --account myproject --jobs 8 --memory 8GiB --bigmem-memory 128GiB

    python cluster/jobqueue/slurm.py STORE MODEL --dry-run      # print both job scripts, submit nothing

The store is made beforehand, e.g. on the same cluster with ``dask-rec ingest ... --scheduler``
or with ``dask_rec.ingest(..., client=client)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def make_cluster(args, **extra):
    """The ``SLURMCluster`` of the ordinary workers (nothing submitted yet)."""
    dask_jobqueue = _common.import_jobqueue()
    return dask_jobqueue.SLURMCluster(**_common.cluster_kwargs(args, **extra))


def bigmem_options(args) -> dict:
    """SLURM specifics of the bigmem job: the whole memory of the node it lands on is its own."""
    return {"job_extra_directives": ["--exclusive"]}


def main(argv=None) -> int:
    return _common.main(make_cluster, bigmem_options, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
