"""Benchmark: this checkout against an earlier revision: same weights? fit time in process and on a cluster.

The revision is checked out into a temporary git worktree; every fit runs in its own process on the
whole dataset (ICF, popularity order, l2 10, 3 scans, 10 finetune steps), old and new interleaved,
``--repeats`` each, in process and on a 2-worker LocalCluster, after one warm-up fit per version (numba
compiles each checkout's kernels once). The weights are compared by SHA-256.

    python benchmarks/bench_versions.py --rev 03d1c61
    python benchmarks/bench_versions.py --rev HEAD~3 --datasets yelp2020:2e-3 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[4])
from _common import load_matrix
import dask_rec as m
name, density, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
X = load_matrix(name)
cfg = m.SANSAConfig(l2=10.0, weight_matrix_density=density,
    gramian_factorizer_config=m.ICFGramianFactorizerConfig(reordering_method="popularity"),
    lower_triangle_inverter_config=m.UMRUnitLowerTriangleInverterConfig(scans=3, finetune_steps=10))
if mode == "inprocess":
    t0 = time.perf_counter(); model = m.SANSA(cfg).fit(X); W = model.weights; secs = time.perf_counter() - t0
else:
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50) as c, Client(c) as cl:
        t0 = time.perf_counter(); model = m.SANSA(cfg).fit(X, client=cl, progress=False); W = model.weights
        secs = time.perf_counter() - t0
h = hashlib.sha256()
for w in W:
    for a in (w.indptr, w.indices, w.data):
        h.update(a.tobytes())
print(json.dumps({"seconds": round(secs, 2), "sha256": h.hexdigest()[:16]}))
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the earlier revision (git rev)")
    p.add_argument("--datasets", default="gowalla:1e-3,amazon-book-kgat:1e-3,yelp2020:2e-3",
                   help="name:density, comma-separated")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.rev], check=True,
                       capture_output=True)
        try:
            rows = run(args, {"old": old, "new": ROOT})
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    ok = all(len({r["sha256"] for r in rows if r["dataset"] == d}) == 1 for d in {r["dataset"] for r in rows})
    print("weights identical for every dataset" if ok else "weights DIFFER")
    return 0 if ok else 1


def run(args, versions: dict) -> list:
    for path in versions.values():  # compile (and cache) each version's numba kernels before timing
        subprocess.run([sys.executable, "-c", CHILD, "ml-100k", "2e-3", "inprocess", str(ROOT / "benchmarks")],
                       env=dict(os.environ, PYTHONPATH=str(path)), capture_output=True, cwd=tempfile.gettempdir())
    rows = []
    for spec in args.datasets.split(","):
        name, density = spec.split(":")
        for mode in ("inprocess", "cluster"):
            for rep in range(args.repeats):
                order = list(versions.items()) if rep % 2 == 0 else list(reversed(versions.items()))
                for version, path in order:
                    env = dict(os.environ, PYTHONPATH=str(path))
                    out = subprocess.run([sys.executable, "-c", CHILD, name, density, mode, str(ROOT / "benchmarks")],
                                         env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
                    if out.returncode:
                        sys.exit(out.stderr[-3000:])
                    row = {"dataset": name, "mode": mode, "version": version, **json.loads(out.stdout.splitlines()[-1])}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
