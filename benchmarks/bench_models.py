"""The comparison models against implicit's and dense NumPy EASE, side by side, each in its own process.

For each contender, on one strong-generalization split (10% held-out users, at most 10,000, 20%
of their items hidden, seed 0): Recall@20 and NDCG@100 (dask_rec's evaluation for everyone),
fit seconds (in process, one thread: ``--threads``; after one untimed warm-up fit on a 2,000 × 2,000
corner, for everyone), users/s of batch top-20 recommendation
for the held-out users (one thread, in process) and the process's peak resident memory.

Contenders (``--contenders``, comma-separated):

* ours: ``itemknn`` (cosine, K=100), ``itemknn-bm25`` (K=100), ``ease`` (λ, float32), ``slim``,
  ``rules`` (confidence, k=100), ``pop``;
* peers: ``implicit-cosine``, ``implicit-bm25`` (K=100), ``implicit-als`` (128 factors, reg 20,
  α 40, 15 iterations; held-out users' factors recalculated from their history),
  ``numpy-ease`` (``np.linalg.inv`` of the dense ``XᵀX + λI`` in float32, B = −P/diag(P)).

    flock /tmp/dask_rec_heavy.lock -c 'PYTHONPATH=. python benchmarks/bench_models.py --dataset yelp2020'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from _common import format_table, load_matrix, peak_rss_mib, run_json_subprocess, write_split

OURS = ("itemknn", "itemknn-bm25", "ease", "slim", "rules", "pop")
PEERS = ("implicit-cosine", "implicit-bm25", "implicit-als", "numpy-ease")


class TopK:
    """A scorer (``topk_block``) from a function ``ids(X_block, k) -> (b, k) ids`` with seen items filtered."""

    def __init__(self, top_ids, n_items):
        self.top_ids, self.n_items = top_ids, n_items

    def topk_block(self, X_block, k, exclude_seen=True, allowed=None, n_threads=1):
        ids = np.asarray(self.top_ids(sp.csr_matrix(X_block), k), dtype=np.int64)
        return ids, np.where(ids >= 0, -np.arange(k, dtype=np.float32)[None, :], -np.inf).astype(np.float32)


def _warm_up_slice(train):
    """A small corner of the training matrix, fitted once before the timed fit of every contender
    (so that imports, thread pools and JIT cache loads, paid once per process, are not timed)."""
    return sp.csr_matrix(train[:2000][:, :2000])


def _fit_ours(name, train, args):
    from dask_rec.models.ease import EASE, EASEConfig
    from dask_rec.models.itemknn import ItemKNN, ItemKNNConfig
    from dask_rec.models.popularity import PopRec
    from dask_rec.models.rules import AssociationRules
    from dask_rec.models.slim import SLIM, SLIMConfig

    model = {"itemknn": lambda: ItemKNN(ItemKNNConfig(k=100)),
             "itemknn-bm25": lambda: ItemKNN(ItemKNNConfig(k=100, similarity="bm25")),
             "ease": lambda: EASE(EASEConfig(l2=args.ease_l2)),
             "slim": lambda: SLIM(SLIMConfig(l1=args.slim_l1, l2=args.slim_l2)),
             "rules": lambda: AssociationRules(), "pop": lambda: PopRec()}[name]
    model().fit(_warm_up_slice(train))
    model = model()
    t0 = time.perf_counter()
    model.fit(train)
    return model, time.perf_counter() - t0


def _fit_implicit(name, train):
    import implicit.nearest_neighbours as nn
    from implicit.cpu.als import AlternatingLeastSquares

    train = sp.csr_matrix(train, dtype=np.float32)

    def new_model():
        if name == "implicit-als":
            return AlternatingLeastSquares(factors=128, regularization=20.0, alpha=40.0, iterations=15, num_threads=1,
                                           random_state=0)
        return (nn.CosineRecommender if name == "implicit-cosine" else nn.BM25Recommender)(K=100, num_threads=1)

    new_model().fit(_warm_up_slice(train), show_progress=False)
    model = new_model()
    t0 = time.perf_counter()
    model.fit(train, show_progress=False)
    seconds = time.perf_counter() - t0

    def top_ids(X, k):
        X = sp.csr_matrix(X, dtype=np.float32)
        users = np.arange(X.shape[0])
        kw = {"recalculate_user": True} if name == "implicit-als" else {}
        ids, _ = model.recommend(users, X, N=k, filter_already_liked_items=True, **kw)
        return np.where(np.asarray(ids) < 0, -1, ids)

    return TopK(top_ids, train.shape[1]), seconds


def _fit_numpy_ease(train, l2):
    t0 = time.perf_counter()
    X = sp.csr_matrix(train, dtype=np.float32)
    G = (X.T @ X).toarray()
    G[np.diag_indices_from(G)] += l2
    B = np.linalg.inv(G)
    del G
    B /= -np.diag(B)
    B[np.diag_indices_from(B)] = 0.0
    seconds = time.perf_counter() - t0

    def top_ids(Xb, k):
        scores = np.asarray(Xb @ B)
        scores[Xb.nonzero()] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        return np.take_along_axis(part, order, 1)

    return TopK(top_ids, train.shape[1]), seconds


def worker_main(args) -> None:
    """One contender, in its own process; prints one JSON line."""
    from threadpoolctl import threadpool_limits

    from dask_rec.serving.evaluation import evaluate

    train = sp.load_npz(os.path.join(args.split_dir, "train.npz")).tocsr()
    history = sp.load_npz(os.path.join(args.split_dir, "history.npz")).tocsr()
    targets = sp.load_npz(os.path.join(args.split_dir, "targets.npz")).tocsr()
    name = args.contender
    with threadpool_limits(args.threads):  # BLAS threads of every contender's fit (EASE's solves)
        if name in OURS:
            model, seconds = _fit_ours(name, train, args)
        elif name == "numpy-ease":
            model, seconds = _fit_numpy_ease(train, args.ease_l2)
        else:
            model, seconds = _fit_implicit(name, train)
    out = {"contender": name, "fit_s": round(seconds, 2), "fit_peak_mib": round(peak_rss_mib())}
    scorer = model.scorer() if hasattr(model, "scorer") else model
    with threadpool_limits(1):
        scorer.topk_block(history[:10], 20)  # warm (numba compilation, caches)
        t0 = time.perf_counter()
        for a in range(0, history.shape[0], 1000):
            scorer.topk_block(history[a:a + 1000], 20)
        out["users_per_s"] = round(history.shape[0] / (time.perf_counter() - t0))
    m = evaluate(scorer, history, targets, ks=(20, 100))
    out.update({"recall@20": m["recall@20"], "ndcg@100": m["ndcg@100"], "peak_mib": round(peak_rss_mib())})
    print(json.dumps(out))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="yelp2020")
    p.add_argument("--contenders", default=",".join(OURS + PEERS))
    p.add_argument("--ease-l2", type=float, default=200.0)
    p.add_argument("--slim-l1", type=float, default=2.0)
    p.add_argument("--slim-l2", type=float, default=50.0)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the fits (default: 1, as the peers)")
    p.add_argument("--test-users", type=int, default=None, help="held-out users (default: 10%%, at most 10,000)")
    p.add_argument("--json-out", help="also write the rows to this JSON file")
    p.add_argument("--contender", help=argparse.SUPPRESS)
    p.add_argument("--split-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.contender:
        return worker_main(args)

    X = load_matrix(args.dataset)
    rows = []
    with tempfile.TemporaryDirectory() as split_dir:
        n_test = write_split(X, split_dir, args.test_users)
        base = list(argv if argv is not None else sys.argv[1:])
        for contender in args.contenders.split(","):
            try:
                res = run_json_subprocess([__file__, *base, "--contender", contender, "--split-dir", split_dir])
            except RuntimeError as error:  # e.g. out of memory: say so in the table and go on
                head, _, stderr = str(error).partition(":\n")  # "... failed (exit code N)", then stderr
                last = stderr.strip().splitlines()[-1:] or ["no output (killed?)"]
                res = {"contender": contender, "error": f"{head.rpartition(' failed ')[2]}: {last[0][:100]}"}
            rows.append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)
    print(f"\n{args.dataset}: {X.shape[0]} users x {X.shape[1]} items, {X.nnz} interactions; {n_test} held-out users")
    print(format_table(rows, ["contender", "recall@20", "ndcg@100", "fit_s", "users_per_s", "fit_peak_mib",
                              "peak_mib", "error"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"dataset": args.dataset, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
