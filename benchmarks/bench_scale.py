"""Benchmark: SANSA on synthetic catalogs of 200k, 500k and 1M items, end to end on a LocalCluster.

For each size: ``dask-rec generate`` a log (planted taste groups, Zipf popularity, lognormal user
activity), ``dask-rec ingest`` it, then ``dask-rec evaluate --models sansa,pop --json`` on a
2-worker LocalCluster with default memory limits (split, fit on the training users, score the
held-out users), while a sampler records every process's resident memory (the client and each
worker). Prints one row per size: interactions, the Gramian's non-zeros, each stage's seconds,
the whole evaluate's wall time, each process's peak memory, and Recall@20 / NDCG@100 of SANSA and
of popularity.

Full run (about 25 minutes here; run it alone on the machine)::

    python benchmarks/bench_scale.py --workdir /tmp/dask_rec_scale

One size, or a smoke test::

    python benchmarks/bench_scale.py --sizes 1m --workdir /tmp/dask_rec_scale
    python benchmarks/bench_scale.py --sizes tiny

The streamed route against the assembled one (the whole Gramian in one process, as every fit was
before the streamed route), in process, same weights bit for bit (about 10 minutes at 200k items)::

    python benchmarks/bench_scale.py --identical 200k --workdir /tmp/dask_rec_scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import format_table

#: name -> (users, items, rows drawn); Zipf popularity exponent 0.8 (``--popularity-exponent``):
#: the 1M log has 42M distinct interactions and a Gramian of about 1.4 billion non-zeros.
SIZES = {
    "tiny": (20_000, 5_000, 200_000),
    "200k": (1_000_000, 200_000, 24_000_000),
    "500k": (1_500_000, 500_000, 36_000_000),
    "1m": (2_000_000, 1_000_000, 48_000_000),
}
POPULARITY_EXPONENT = 0.8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="200k,500k,1m", help=f"comma-separated, from {', '.join(SIZES)}")
    p.add_argument("--workdir", default="/tmp/dask_rec_scale", help="logs and stores (reused when present)")
    p.add_argument("--nnz-per-item", type=float, default=50.0, help="SANSA's budget per item")
    p.add_argument("--l2", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json-out", default=None, help="also write the rows as JSON here")
    p.add_argument("--identical", default=None, metavar="SIZE",
                   help="instead: fit SIZE in process by the streamed and the assembled route, compare weights")
    p.add_argument("--route", choices=("streamed", "assembled"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def fit_route(store: Path, route: str, nnz_per_item: float, l2: float) -> dict:
    """One in-process fit of ``store`` by ``route``; the weights' SHA-256 and the fit's figures."""
    import hashlib
    import resource

    import dask

    import dask_rec
    from dask_rec.models.sansa import training

    if route == "assembled":
        training.uses_streamed_gramian = lambda config, compute_gramian=True: False
    config = dask_rec.SANSAConfig(l2=l2, nnz_per_item=nnz_per_item)
    t0 = time.perf_counter()
    with dask.config.set({"dask_rec.gramian.storage": "disk" if route == "streamed" else "auto"}):
        model = dask_rec.SANSA(config).fit(dask_rec.open_store(store).to_scipy(), client=None)
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256()
    for w in model.weights:
        for a in (w.indptr, w.indices, w.data):
            digest.update(a.tobytes())
    return {"route": model.fit_report_["gramian"]["route"], "fit_s": round(seconds, 1), "sha256": digest.hexdigest(),
            "gramian_nnz": model.fit_report_["factor"].get("gramian_nnz"),
            "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def identical(args, workdir: Path) -> int:
    store, _ = prepare(args.identical, workdir)
    rows = []
    for route in ("streamed", "assembled"):
        out = subprocess.run([sys.executable, __file__, "--identical", args.identical, "--route", route,
                              "--workdir", str(workdir), "--nnz-per-item", str(args.nnz_per_item), "--l2", str(args.l2)],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    same = rows[0]["sha256"] == rows[1]["sha256"]
    print(f"{args.identical}: weights {'identical' if same else 'DIFFER'} (streamed {rows[0]['fit_s']} s, "
          f"{rows[0]['peak_mib']} MiB; assembled {rows[1]['fit_s']} s, {rows[1]['peak_mib']} MiB)")
    return 0 if same else 1


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "dask_rec.cli", *map(str, args)]


class PeakSampler(threading.Thread):
    """Samples the resident memory of a process and its descendants every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.total = 0
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    if proc.pid not in self.names:
                        cmd = " ".join(proc.cmdline())
                        self.names[proc.pid] = ("client" if proc.pid == self.root.pid else
                                                "worker" if "spawn_main" in cmd else "other")
                except psutil.Error:
                    continue
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
                total += rss
            self.total = max(self.total, total)
            self.stop.wait(0.2)

    def summary(self) -> dict:
        mib = {pid: round(v / 2**20) for pid, v in self.peaks.items()}
        workers = sorted((v for pid, v in mib.items() if self.names.get(pid) == "worker"), reverse=True)
        client = max((v for pid, v in mib.items() if self.names.get(pid) == "client"), default=0)
        return {"client_mib": client, "worker_mib": workers, "largest_mib": max([client, *workers]),
                "total_mib": round(self.total / 2**20)}


def run_measured(cmd: list[str], log_path: Path) -> tuple[subprocess.CompletedProcess, float, dict]:
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        sampler = PeakSampler(proc.pid)
        sampler.start()
        out, _ = proc.communicate()
        sampler.stop.set()
    seconds = time.perf_counter() - t0
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, log_path.read_text())
    return result, seconds, sampler.summary()


def prepare(name: str, workdir: Path) -> tuple[Path, dict]:
    users, items, rows = SIZES[name]
    log, store = workdir / f"log-{name}", workdir / f"store-{name}"
    times = {}
    if not log.exists():
        t0 = time.perf_counter()
        subprocess.run(_cli("generate", log, "--users", users, "--items", items, "--interactions", rows,
                            "--popularity-exponent", POPULARITY_EXPONENT), check=True, capture_output=True)
        times["generate_s"] = round(time.perf_counter() - t0, 1)
    if not store.exists():
        t0 = time.perf_counter()
        subprocess.run(_cli("ingest", log, store, "--workers", 2), check=True, capture_output=True)
        times["ingest_s"] = round(time.perf_counter() - t0, 1)
    return store, times


def measure(name: str, args, workdir: Path) -> dict:
    from dask_rec.data.store import open_store

    store, times = prepare(name, workdir)
    shape, nnz = open_store(store).shape, open_store(store).nnz
    cmd = _cli("evaluate", store, "--models", "sansa,pop", "--nnz-per-item", args.nnz_per_item, "--l2", args.l2,
               "--workers", args.workers, "--json")
    result, seconds, memory = run_measured(cmd, workdir / f"evaluate-{name}.log")
    row = {"size": name, "users": shape[0], "items": shape[1], "interactions": nnz, **times,
           "evaluate_s": round(seconds, 1), **memory}
    if result.returncode != 0:
        row["error"] = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        row["restarts"] = result.stderr.count("Restarting worker")
        return row
    out = json.loads(result.stdout.strip().splitlines()[-1])
    report = out["fit_reports"]["sansa"]
    row.update({
        "gramian_nnz": report["factor"].get("gramian_nnz"),
        "gramian_blocks": report["gramian"].get("blocks"),
        "on_disk": report["gramian"].get("on_disk"),
        "L_nnz": report["factor"].get("L_nnz"),
        **{f"{stage}_s": round(v, 1) for stage, v in report["stage_seconds"].items()},
        "fit_s": out["fit_seconds"]["sansa"],
        "score_s": out.get("evaluate_seconds", {}).get("sansa"),
        "sansa_recall@20": out["sansa"]["recall@20"], "sansa_ndcg@100": out["sansa"]["ndcg@100"],
        "pop_recall@20": out["popularity"]["recall@20"], "pop_ndcg@100": out["popularity"]["ndcg@100"],
        "restarts": result.stderr.count("Restarting worker"),
    })
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.route:  # the child of --identical
        print(json.dumps(fit_route(workdir / f"store-{args.identical}", args.route, args.nnz_per_item, args.l2)))
        return 0
    if args.identical:
        return identical(args, workdir)
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        sys.exit(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    rows = []
    for name in names:
        rows.append(measure(name, args, workdir))
        print(json.dumps(rows[-1]), flush=True)
    columns = ["size", "items", "interactions", "gramian_nnz", "read_s", "gramian_s", "factorize_s", "invert_s",
               "weights_s", "fit_s", "score_s", "evaluate_s", "largest_mib", "worker_mib", "client_mib",
               "sansa_recall@20", "pop_recall@20", "sansa_ndcg@100", "pop_ndcg@100", "restarts"]
    print(format_table(rows, columns))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
