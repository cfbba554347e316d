"""ALS on a large store (e.g. the million-item log of issue 12) on a 2-worker LocalCluster.

Reports the fit's seconds, the objective after each iteration, the blocks, and the peak resident
memory of each worker process and of the client (sampled every 0.5 s), against the workers'
memory limit. Run it under the heavy lock::

    flock /tmp/dask_rec_heavy.lock -c 'PYTHONPATH=. python benchmarks/bench_als_scale.py STORE \
        --factors 64 --iterations 5 --memory-limit 4GiB'
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--regularization", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=39.0, help="ours (implicit's minus one)")
    p.add_argument("--memory-limit", default="4GiB", help="per worker")
    args = p.parse_args(argv)

    import psutil
    from distributed import Client, LocalCluster

    import dask_rec
    from dask_rec.data.store import open_store

    store = open_store(args.store)
    peaks: dict = {}
    done = threading.Event()

    def watch():
        me = psutil.Process()
        while not done.is_set():
            for proc in [me, *me.children(recursive=True)]:
                try:
                    peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    config = dask_rec.ALSConfig(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                                iterations=args.iterations)
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory_limit, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        model = dask_rec.ALS(config).fit(store, client=client)
        seconds = time.perf_counter() - t0
        pids = client.run(os.getpid)
    done.set()
    print(json.dumps({
        "store": repr(store), "seconds": round(seconds, 1), "objective": model.fit_report_["objective"],
        "blocks": [model.fit_report_["n_user_blocks"], model.fit_report_["n_item_blocks"]],
        "worker_peak_gib": {addr: round(peaks.get(pid, 0) / 2**30, 2) for addr, pid in pids.items()},
        "client_peak_gib": round(peaks.get(os.getpid(), 0) / 2**30, 2), "memory_limit": args.memory_limit,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
