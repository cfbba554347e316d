"""Item orderings side by side (issue #7): accuracy, ordering and factorization time, memory, fill.

For each dataset, factorizer (ICF, CHOLMOD) and ordering (colamd, amd, popularity, natural), one
fit in its own fresh process (in-process executor, no cluster) on the same strong-generalization
split (held-out users, 20% of each held-out user's items as targets, seed 0). Per fit:

* ``recall@20``, ``ndcg@100`` of the held-out users;
* ``order_s`` (``fit_report_["factor"]["ordering_seconds"]``), ``factor_s`` (``factorization_seconds``),
  ``fit_s`` (the fit's wall time, ``total_seconds`` of the report);
* ``peak_mib``: the fit process's peak RSS, read right after the fit (before evaluation);
* ``fill``: CHOLMOD's exact factor non-zeros before pruning (``factor_nnz``; ICF prunes as it
  goes, so it has none) and ``L_nnz``, the factor kept.

Runs are sequential, one process at a time; a run past ``--timeout`` seconds is killed and
reported as ``timeout``. ``--skip`` leaves combinations out with a stated reason. The table is
printed as markdown and everything is written to ``--json``.

Full run (the README table)::

    python benchmarks/bench_orderings.py --json /tmp/bench_orderings.json

Part 4 of the issue, the ordering's share of a fit at 200k items (default ICF config, popularity
order, in process; then COLAMD's and AMD's ordering time on the same data, each with a timeout)::

    python benchmarks/bench_orderings.py --synthetic-items 200000 --json /tmp/bench_orderings_synth.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from _common import load_matrix, peak_rss_mib, run_json_subprocess

DATASETS = ("ml-100k", "ml-latest-small", "yelp2020", "amazon-book-kgat", "gowalla", "ciao")
FACTORIZERS = ("icf", "cholmod")
ORDERINGS = ("colamd", "amd", "popularity", "natural")

#: Per-(dataset, factorizer) density overrides of the full run, keeping CHOLMOD bounded on 2 cores.
#: The exact factor's fill and time do not depend on the density (only pruning and UMR do).
DEFAULT_DENSITY_FOR = ("ciao/icf=5e-4", "ciao/cholmod=5e-4", "gowalla/cholmod=5e-4")
#: Combinations left out of the full run, with the reason (measured beforehand, see the README).
DEFAULT_SKIP = (
    # measured on this machine (2 cores, 24 GiB), exact CHOLMOD factor, l2=10: COLAMD gives
    # amazon-book-kgat 250M non-zeros (78 s, 9.5 GiB peak), ciao 390M (126 s, 12.7 GiB), gowalla 523M
    # (223 s, 17 GiB). On yelp2020 the popularity order more than doubled the
    # fill (164M vs 73M) and took 4x as long (81 s vs 21 s); the natural order is worse still (201M).
    "gowalla/cholmod=COLAMD's exact factor has 523M non-zeros (223 s, 17 GiB peak, over the default 16 GiB cap); "
    "COLAMD and AMD ran separately with --datasets gowalla --factorizers cholmod --orderings colamd,amd --skip none "
    "--max-memory-gib 20 --timeout 1200; popularity and natural (about 2x the fill) would not fit",
    "amazon-book-kgat/cholmod/popularity=about 2x COLAMD's 250M fill (as on yelp2020): ~19 GiB, past the memory cap",
    "amazon-book-kgat/cholmod/natural=more fill than popularity order (yelp2020: 201M vs 164M vs 73M for COLAMD)",
    "ciao/cholmod/popularity=about 2x COLAMD's 390M fill (12.7 GiB): would not fit in memory",
    "ciao/cholmod/natural=more fill than popularity order: would not fit in memory",
)

COLUMNS = ["dataset", "factorizer", "ordering", "l2", "density", "recall@20", "ndcg@100", "order_s", "factor_s",
           "fit_s", "peak_mib", "fill", "L_nnz", "status"]


# --------------------------------------------------------------------------------------------
# workers (each runs in its own process and prints one JSON line)


def _config(spec: dict):
    import dask_rec as m

    fclass = m.ICFGramianFactorizerConfig if spec["factorizer"] == "icf" else m.CHOLMODGramianFactorizerConfig
    return m.SANSAConfig(
        l2=spec["l2"], weight_matrix_density=spec["density"],
        gramian_factorizer_config=fclass(reordering_method=spec["ordering"]),
        lower_triangle_inverter_config=m.UMRUnitLowerTriangleInverterConfig(
            scans=spec["scans"], finetune_steps=spec["finetune_steps"]),
    )


def worker_fit(spec: dict) -> dict:
    """One fit of one (dataset, factorizer, ordering), then its evaluation."""
    import logging
    import warnings

    from dask_rec import SANSA
    from dask_rec import evaluate

    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    split_dir = spec["split_dir"]
    train = sp.load_npz(os.path.join(split_dir, "train.npz")).tocsr()
    model = SANSA(_config(spec))
    t0 = time.perf_counter()
    model.fit(train)
    wall = time.perf_counter() - t0
    peak = peak_rss_mib()  # the fit's peak, before evaluation allocates anything
    rep = model.fit_report_
    f = rep["factor"]
    W1, W2 = model.weights
    history = sp.load_npz(os.path.join(split_dir, "history.npz")).tocsr()
    targets = sp.load_npz(os.path.join(split_dir, "targets.npz")).tocsr()
    metrics = evaluate((W1, W2), history, targets, ks=(20, 100))
    return {
        "recall@20": float(metrics["recall@20"]), "ndcg@100": float(metrics["ndcg@100"]),
        "order_s": f["ordering_seconds"], "factor_s": f["factorization_seconds"],
        "fit_s": rep["total_seconds"], "fit_wall_s": wall, "peak_mib": peak,
        "fill": f.get("factor_nnz"), "L_nnz": f["L_nnz"], "gramian_nnz": f["gramian_nnz"],
        "icf_shift": f.get("factor_shift"), "icf_restarts": f.get("factor_attempts"),
        "stage_seconds": rep["stage_seconds"], "density_used": rep["density"],
        "weights_nnz": int(W1.nnz + W2.nnz), "inverse": _jsonable(rep.get("inverse")),
        "status": "ok",
    }


def _synthetic_matrix(spec: dict) -> sp.csr_matrix:
    from dask_rec.data.synthetic import make_interactions

    df = make_interactions(spec["n_users"], spec["n_items"], spec["n_interactions"], seed=spec.get("seed", 0))
    X = sp.csr_matrix((np.ones(len(df), np.float32), (df["user_id"].to_numpy(), df["item_id"].to_numpy())),
                      shape=(spec["n_users"], spec["n_items"]))
    X.sum_duplicates()
    X.data[:] = 1.0  # binary, as the shared datasets
    return X


def worker_synthetic_fit(spec: dict) -> dict:
    """The default ICF config (popularity order) on the synthetic data, in process."""
    import logging
    import warnings

    from dask_rec import SANSA, SANSAConfig
    from dask_rec.config import config_to_dict

    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    X = _synthetic_matrix(spec)
    gen_s = time.perf_counter() - t
    config = SANSAConfig(weight_matrix_density=spec["density"])  # everything else: the defaults
    t0 = time.perf_counter()
    model = SANSA(config).fit(X)
    wall = time.perf_counter() - t0
    rep = model.fit_report_
    f = rep["factor"]
    return {
        "n_users": X.shape[0], "n_items": X.shape[1], "nnz": int(X.nnz),
        "items_with_interactions": int(np.count_nonzero(np.diff(X.tocsc().indptr))),
        "generate_s": gen_s, "config": _jsonable(config_to_dict(config)),
        "ordering": config.gramian_factorizer_config.reordering_method,
        "order_s": f["ordering_seconds"], "factor_s": f["factorization_seconds"], "fit_s": rep["total_seconds"],
        "fit_wall_s": wall, "order_share": f["ordering_seconds"] / rep["total_seconds"],
        "stage_seconds": rep["stage_seconds"], "gramian_nnz": f["gramian_nnz"], "L_nnz": f["L_nnz"],
        "peak_mib": peak_rss_mib(), "status": "ok",
    }


def worker_synthetic_ordering(spec: dict) -> dict:
    """One ordering alone on the synthetic data (COLAMD on X, or AMD on XᵀX's pattern)."""
    from dask_rec.kernels.ordering import item_ordering

    X = _synthetic_matrix(spec)
    t = time.perf_counter()
    p = item_ordering(spec["ordering"], X=X)
    seconds = time.perf_counter() - t
    assert p.shape == (X.shape[1],)
    return {"ordering": spec["ordering"], "order_s": seconds, "peak_mib": peak_rss_mib(), "status": "ok"}


def _cap_memory(spec: dict) -> None:
    """Address-space cap of this worker, so that a fill too large fails here, not the machine."""
    import resource

    gib = spec.get("max_memory_gib")
    if gib:
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


WORKERS = {"fit": worker_fit, "synthetic-fit": worker_synthetic_fit, "synthetic-ordering": worker_synthetic_ordering}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --------------------------------------------------------------------------------------------
# the driver


def _run(spec: dict, timeout: float) -> dict:
    t = time.perf_counter()
    try:
        out = run_json_subprocess([__file__, "--worker", json.dumps(spec)], timeout=timeout)
    except subprocess.TimeoutExpired:
        out = {"status": "timeout"}
    except RuntimeError as exc:
        out = {"status": "error", "error": str(exc)[-1500:]}
    out["run_s"] = time.perf_counter() - t
    return out


def _parse_pairs(items, what: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"{what} expects KEY=VALUE; got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _density_for(overrides: dict, dataset: str, factorizer: str, default: float) -> float:
    for key in (f"{dataset}/{factorizer}", dataset):
        if key in overrides:
            return float(overrides[key])
    return default


def _fmt(v, column: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if column in ("recall@20", "ndcg@100"):
            return f"{v:.4f}"
        if column.endswith("_s"):
            return f"{v:.3f}" if v < 1 else f"{v:.1f}"
        if column == "peak_mib":
            return f"{v:.0f}"
        return f"{v:g}"
    if isinstance(v, int) and column in ("fill", "L_nnz"):
        return f"{v / 1e6:.2f}M" if v >= 1e5 else str(v)
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def run_datasets(args) -> dict:
    from dask_rec import split_strong_generalization

    overrides = _parse_pairs(args.density_for, "--density-for")
    skips = _parse_pairs(args.skip, "--skip")
    l2s = [float(v) for v in args.l2.split(",")]
    icf_l2s = [float(v) for v in args.icf_extra_l2.split(",") if v.strip()]
    icf_extra = set(args.icf_extra_datasets.split(","))
    names = args.datasets.split(",")
    rows, data = [], {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_orderings_") as tmp:
        for name in names:  # the same split for every run on a dataset
            X = load_matrix(name)
            n_test = args.test_users or min(10_000, X.shape[0] // 10)
            split = split_strong_generalization(X, n_test_users=n_test, seed=0)
            data[name] = {"users": X.shape[0], "items": X.shape[1], "nnz": int(X.nnz), "test_users": n_test,
                          "split_dir": os.path.join(tmp, name)}
            os.makedirs(data[name]["split_dir"])
            sp.save_npz(os.path.join(data[name]["split_dir"], "train.npz"), split.train)
            sp.save_npz(os.path.join(data[name]["split_dir"], "history.npz"), split.test_history)
            sp.save_npz(os.path.join(data[name]["split_dir"], "targets.npz"), split.test_targets)
            print(f"# {name}: {X.shape[0]} users x {X.shape[1]} items, {X.nnz} interactions, "
                  f"{n_test} held-out users", file=sys.stderr, flush=True)
            del X, split
        for factorizer in args.factorizers.split(","):
            for name in names:
                density = _density_for(overrides, name, factorizer, args.density)
                extra = icf_l2s if factorizer == "icf" and name in icf_extra else []
                for l2 in l2s + [v for v in extra if v not in l2s]:
                    for ordering in args.orderings.split(","):
                        row = {"dataset": name, "factorizer": factorizer, "ordering": ordering, "l2": l2,
                               "density": density}
                        reason = skips.get(f"{name}/{factorizer}/{ordering}", skips.get(f"{name}/{factorizer}"))
                        if reason is not None:
                            row.update(status="skipped", reason=reason)
                        else:
                            spec = {"mode": "fit", "split_dir": data[name]["split_dir"], "factorizer": factorizer,
                                    "ordering": ordering, "l2": l2, "density": density, "scans": args.scans,
                                    "finetune_steps": args.finetune_steps, "max_memory_gib": args.max_memory_gib}
                            row.update(_run(spec, args.timeout))
                            if row["status"] == "timeout":
                                row["status"] = f"timeout ({args.timeout:g} s)"
                            elif row["status"] == "error" and "memory" in row["error"].lower():
                                row["status"] = f"out of memory (cap {args.max_memory_gib:g} GiB)"
                        rows.append(row)
                        brief = {k: row.get(k) for k in COLUMNS + ["run_s", "reason", "error"] if row.get(k) is not None}
                        print(time.strftime("%H:%M:%S"), json.dumps(brief), file=sys.stderr, flush=True)
                        if args.json:  # keep partial results if the run is stopped
                            _write_json(args.json, {"rows": rows, "datasets": data, "partial": True})
    return {"rows": rows, "datasets": data, "seconds": time.perf_counter() - t_all}


def run_synthetic(args) -> dict:
    spec = {"n_users": args.synthetic_users or args.synthetic_items, "n_items": args.synthetic_items,
            "n_interactions": args.synthetic_interactions, "seed": 0, "density": args.synthetic_density}
    spec["max_memory_gib"] = args.max_memory_gib
    fit = _run(dict(spec, mode="synthetic-fit"), args.timeout)
    print(json.dumps(fit), file=sys.stderr, flush=True)
    orderings = {}
    for method in [m for m in args.synthetic_orderings.split(",") if m.strip()]:
        orderings[method] = _run(dict(spec, mode="synthetic-ordering", ordering=method), args.synthetic_timeout)
        if orderings[method]["status"] == "timeout":
            orderings[method]["status"] = f"timeout ({args.synthetic_timeout:g} s)"
        print(json.dumps({method: orderings[method]}), file=sys.stderr, flush=True)
    return {"spec": spec, "fit": fit, "orderings": orderings}


def _write_json(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(_jsonable(payload), fh, indent=1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--factorizers", default=",".join(FACTORIZERS))
    p.add_argument("--orderings", default=",".join(ORDERINGS))
    p.add_argument("--l2", default="10", help="comma-separated l2 values, for every factorizer (default 10)")
    p.add_argument("--icf-extra-l2", default="30", help="further l2 values tried with ICF only (comma-separated)")
    p.add_argument("--icf-extra-datasets", default="yelp2020,amazon-book-kgat",
                   help="datasets on which --icf-extra-l2 is tried")
    p.add_argument("--density", type=float, default=2e-3)
    p.add_argument("--density-for", action="append", default=None, metavar="DATASET[/FACTORIZER]=DENSITY",
                   help=f"density override (repeatable; default {' '.join(DEFAULT_DENSITY_FOR)})")
    p.add_argument("--skip", action="append", default=None, metavar="DATASET/FACTORIZER/ORDERING=REASON",
                   help="leave a combination out, with the reason shown in the table (repeatable; "
                        "default: see DEFAULT_SKIP; --skip none runs everything)")
    p.add_argument("--scans", type=int, default=3)
    p.add_argument("--finetune-steps", type=int, default=10)
    p.add_argument("--test-users", type=int, default=None, help="held-out users (default: 10%%, at most 10,000)")
    p.add_argument("--timeout", type=float, default=480.0, help="seconds per fit before it is killed")
    p.add_argument("--max-memory-gib", type=float, default=16.0,
                   help="address-space cap of each run (a run over it fails as 'out of memory'); 0: none")
    p.add_argument("--json", default=None, help="write all results here")
    p.add_argument("--synthetic-items", type=int, default=None,
                   help="instead of the datasets: the ordering's share of a default ICF fit on synthetic data")
    p.add_argument("--synthetic-users", type=int, default=None, help="default: as many as items")
    p.add_argument("--synthetic-interactions", type=int, default=4_000_000)
    p.add_argument("--synthetic-density", type=float, default=2e-4)
    p.add_argument("--synthetic-orderings", default="colamd,amd",
                   help="orderings timed alone on the synthetic data for comparison")
    p.add_argument("--synthetic-timeout", type=float, default=900.0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        _cap_memory(spec)
        print(json.dumps(_jsonable(WORKERS[spec["mode"]](spec))))
        return
    if args.density_for is None:
        args.density_for = list(DEFAULT_DENSITY_FOR)
    if args.skip is None:
        args.skip = list(DEFAULT_SKIP)
    args.skip = [s for s in args.skip if s != "none"]

    meta = {"argv": sys.argv[1:], "python": platform.python_version(), "cpus": os.cpu_count(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "scans": args.scans,
            "finetune_steps": args.finetune_steps, "timeout": args.timeout}
    if args.synthetic_items:
        res = run_synthetic(args)
        res["meta"] = meta
        fit = res["fit"]
        print(f"\nsynthetic: {res['spec']['n_users']} users x {res['spec']['n_items']} items, "
              f"{res['spec']['n_interactions']} draws (seed 0); default ICF config, density {args.synthetic_density:g}")
        if fit["status"] == "ok":
            print(f"{fit['nnz']} interactions, {fit['items_with_interactions']} items with any, "
                  f"Gramian nnz {fit['gramian_nnz']}")
        rows = [{"run": f"fit, ICF, {fit.get('ordering', 'popularity')} order", **fit}]
        rows += [{"run": f"{m} ordering alone", **r} for m, r in res["orderings"].items()]
        for r in rows:
            r["order_share"] = r.get("order_share") if "fit_s" in r else None
        print(markdown_table(rows, ["run", "order_s", "factor_s", "fit_s", "order_share", "peak_mib", "status"]))
        if fit["status"] == "ok":
            for m, r in res["orderings"].items():
                if r["status"] == "ok":
                    print(f"{m}: {r['order_s']:.1f} s alone = {r['order_s'] / fit['fit_s']:.2f}x "
                          f"the whole popularity-ordered fit ({fit['fit_s']:.1f} s)")
        if args.json:
            _write_json(args.json, res)
        return

    res = run_datasets(args)
    res["meta"] = meta
    res["meta"].update(density_for=args.density_for, skip=args.skip)
    print("\n" + "; ".join(f"{k}: {v['users']}x{v['items']}, {v['nnz']} nnz, {v['test_users']} held out"
                           for k, v in res["datasets"].items()))
    print(f"scans={args.scans}, finetune_steps={args.finetune_steps}; strong generalization, seed 0; "
          f"timeout {args.timeout:g} s per fit; total {res['seconds']:.0f} s\n")
    print(markdown_table(res["rows"], COLUMNS))
    skipped = [r for r in res["rows"] if r["status"] == "skipped"]
    for r in skipped:
        print(f"- skipped {r['dataset']}/{r['factorizer']}/{r['ordering']}: {r['reason']}")
    for r in res["rows"]:
        if r["status"] == "error":
            print(f"- error {r['dataset']}/{r['factorizer']}/{r['ordering']}: {r['error'][-300:]}")
    if args.json:
        _write_json(args.json, res)


if __name__ == "__main__":
    main()
