"""Benchmark: out-of-core ingest of a large synthetic log on a memory-capped LocalCluster.

Generates (or reuses) a synthetic Parquet log, ingests it with :func:`dask_rec.data.ingestion` on a
LocalCluster whose per-worker memory limit is below the log's in-memory size, samples each
worker's resident memory while it runs, and compares rows/s with a plain pandas -> scipy build
on a size that baseline can hold in memory (run in a child process so its peak memory is its own).

Full size (about 3 minutes on 2 cores, half of it generating the log; ``--keep`` reuses it)::

    python benchmarks/bench_ingest.py --interactions 100000000 --memory-limit 1GiB

Smoke test::

    python benchmarks/bench_ingest.py --interactions 1000000 --baseline-rows 500000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interactions", type=int, default=100_000_000, help="rows of the synthetic log")
    p.add_argument("--users", type=int, default=None, help="default: interactions / 50")
    p.add_argument("--items", type=int, default=None, help="default: interactions / 250, at most 1,000,000")
    p.add_argument("--groups", type=int, default=None, help="planted taste groups (default: items / 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the log and the store go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (the log is reused by later runs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1GiB", help="per-worker memory limit")
    p.add_argument("--baseline-rows", type=int, default=5_000_000,
                   help="rows for the in-memory pandas -> scipy baseline (0 to skip)")
    p.add_argument("--sample-interval", type=float, default=0.25, help="seconds between memory samples")
    return p.parse_args(argv)


class WorkerMemory:
    """Sample every worker's RSS (and the client's) in a background thread; keep the peaks."""

    def __init__(self, client, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.peaks: dict = {}
        self.client_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _rss() -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                for addr, rss in self.client.run(self._rss).items():
                    self.peaks[addr] = max(self.peaks.get(addr, 0), rss)
            except Exception:
                pass
            self.client_peak = max(self.client_peak, me.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def generate(workdir: Path, args) -> tuple[Path, dict]:
    from dask_rec.data.synthetic import _default_groups, generate_interactions, read_generator_info

    path = workdir / "log"
    groups = args.groups or _default_groups(args.items)
    wanted = {"n_users": args.users, "n_items": args.items, "n_interactions": args.interactions, "seed": args.seed,
              "n_groups": groups}
    if (path / "_generator.json").exists():
        info = read_generator_info(path)
        if all(info.get(k) == v for k, v in wanted.items()):
            print(f"reusing {path} ({info['rows']:,} rows)")
            return path, info
    t = time.perf_counter()
    generate_interactions(path, args.users, args.items, args.interactions, n_groups=groups, seed=args.seed,
                          overwrite=True)
    info = read_generator_info(path)
    print(f"generated {info['rows']:,} rows in {info['files']} files in {time.perf_counter() - t:.1f} s")
    return path, info


def _baseline_child(files: list, n_rows: int, queue) -> None:
    """pandas -> scipy in one process: read, factorize, build the binarized CSR."""
    import pandas as pd
    import scipy.sparse as sp

    t = time.perf_counter()
    frames, total = [], 0
    for f in files:
        df = pd.read_parquet(f, columns=["user_id", "item_id"])
        frames.append(df)
        total += len(df)
        if total >= n_rows:
            break
    df = pd.concat(frames, ignore_index=True).iloc[:n_rows]
    users, u = np.unique(df.user_id.to_numpy(), return_inverse=True)
    items, i = np.unique(df.item_id.to_numpy(), return_inverse=True)
    X = sp.csr_matrix((np.ones(len(df), dtype=np.float32), (u, i)), shape=(len(users), len(items)))
    X.sum_duplicates()
    X.data[:] = 1.0
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({"rows": int(len(df)), "seconds": seconds, "nnz": int(X.nnz), "peak_rss": peak})


def baseline(log: Path, n_rows: int) -> dict:
    files = sorted(str(p) for p in log.glob("*.parquet"))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_baseline_child, args=(files, n_rows, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def ingest_on_cluster(log: Path, out: Path, args) -> dict:
    from distributed import Client, LocalCluster

    from dask_rec.data.ingestion import ingest

    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
                           processes=True, dashboard_address=":0")
    client = Client(cluster)
    try:
        client.run(lambda: None)  # workers up and imported
        with WorkerMemory(client, args.sample_interval) as mem:
            t = time.perf_counter()
            store = ingest(log, out, client=client, overwrite=True)
            seconds = time.perf_counter() - t
        limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
    finally:
        client.close()
        cluster.close()
    t = time.perf_counter()
    nnz = sum(block.nnz for block in store.iter_blocks())
    read_seconds = time.perf_counter() - t
    assert nnz == store.nnz == int(store.item_counts.sum())
    return {"store": store, "seconds": seconds, "worker_peaks": sorted(mem.peaks.values()),
            "client_peak": mem.client_peak, "memory_limit": limit, "read_seconds": read_seconds}


def main(argv=None) -> int:
    import logging

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("dask_rec").setLevel(logging.INFO)  # per-pass timings of the ingest
    args.users = args.users or max(1, args.interactions // 50)
    args.items = args.items or max(1, min(1_000_000, args.interactions // 250))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        log, info = generate(workdir, args)
        rows = info["rows"]
        in_memory = rows * 3 * 8  # user_id, item_id, timestamp as int64
        on_disk = sum(f.stat().st_size for f in log.glob("*.parquet"))
        print(f"log: {rows:,} rows, {in_memory / 2**30:.2f} GiB in memory, {on_disk / 2**30:.2f} GiB Parquet")

        r = ingest_on_cluster(log, workdir / "store.zarr", args)
        s = r["store"]
        gib = 2**30
        md = s.metadata
        print(f"dask_rec ingest: {rows:,} rows in {r['seconds']:.1f} s = {rows / r['seconds']:,.0f} rows/s "
              f"on {args.workers} workers x 1 thread, memory limit {r['memory_limit'] / gib:.2f} GiB each")
        print(f"  store: {s.shape[0]:,} users x {s.shape[1]:,} items, {s.nnz:,} entries, {s.n_blocks} blocks, "
              f"{md['shuffle_buckets']} shuffle buckets, {md['input_partitions']} input partitions; "
              f"{md['dropped']['duplicate_rows']:,} duplicate rows merged")
        print("  peak RSS per worker: " + ", ".join(f"{p / gib:.2f} GiB" for p in r["worker_peaks"])
              + f"; client {r['client_peak'] / gib:.2f} GiB")
        print(f"  read back all blocks: {r['read_seconds']:.1f} s ({s.nnz / r['read_seconds']:,.0f} entries/s)")
        results = {"rows": rows, "log_bytes_in_memory": in_memory, "parquet_bytes": on_disk,
                   "ingest_seconds": r["seconds"], "rows_per_second": rows / r["seconds"],
                   "workers": args.workers, "memory_limit": r["memory_limit"], "worker_peak_rss": r["worker_peaks"],
                   "client_peak_rss": r["client_peak"], "read_seconds": r["read_seconds"],
                   "n_users": s.shape[0], "n_items": s.shape[1], "nnz": s.nnz, "n_blocks": s.n_blocks}
        if args.baseline_rows:
            b = baseline(log, min(args.baseline_rows, rows))
            print(f"pandas -> scipy baseline: {b['rows']:,} rows in {b['seconds']:.1f} s = "
                  f"{b['rows'] / b['seconds']:,.0f} rows/s in one process, peak RSS {b['peak_rss'] / gib:.2f} GiB "
                  f"(~{b['peak_rss'] / b['rows'] * rows / gib:.1f} GiB at {rows:,} rows, extrapolated linearly)")
            results["baseline"] = b
        (workdir / "results.json").write_text(json.dumps(results, indent=2, default=int))
        print(f"results: {workdir / 'results.json'}")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(workdir / "store.zarr", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
