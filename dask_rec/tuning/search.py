"""``dask_rec.tune``: choose a model's hyper-parameters on validation users, on the cluster.

Protocol: the users given as test users are dropped first and never read again; from the
remaining (training) users, validation users are held out with the strong-generalization split of
:mod:`dask_rec.serving.evaluation` (the protocol of ``dask-rec evaluate``); every trial trains on the
other training users and is scored on the validation users' hidden items.

For SANSA (ICF, popularity or natural order) the expensive part of a fit, the Gramian with its
item counts, order and scaling, does not depend on λ or the budget: it is computed once
(:func:`dask_rec.models.sansa.training.compute_lower_gramian`) and every trial runs only the factorization,
inverse and weights from it (:func:`~dask_rec.models.sansa.training.fit_weights_from_lower_gramian`). Trials
run side by side: client-side threads, each submitting one trial's tasks, at most
``concurrency`` at a time, a number also bounded by what the big-memory worker can hold. Other
models (:data:`dask_rec.tuning.space.TUNABLE`) fit each trial from the data.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import scipy.sparse as sp

from dask_rec.models.sansa import training
from dask_rec.tuning.result import TuneResult
from dask_rec.tuning.space import check_space, config_for, default_config, grid_points, suggest_point, tunable

__all__ = ["tune", "validation_split", "TuneResult"]

logger = logging.getLogger(__name__)


def validation_split(data, *, test_users=None, validation_users=None, target_fraction=0.2, seed=0):
    """The split every trial of :func:`tune` uses.

    Parameters
    ----------
    data : scipy.sparse matrix, InteractionStore or store path
    test_users : int or array of int, optional
        Rows to drop before anything else (held-out test users, never looked at); an int ``N``
        holds out the ``N`` users ``split_strong_generalization(data, N, seed=seed)`` holds out
        (those of ``dask-rec evaluate --test-users N``).
    validation_users : int, optional
        Validation users held out of the remaining users (default: 10%, at most 10,000).

    Returns
    -------
    StrongGeneralizationSplit
        Of the remaining users: ``train`` (the trials' training rows), ``test_history`` and
        ``test_targets`` (the validation users' input and hidden items); ``train_users`` and
        ``test_users`` index rows of ``data``.
    """
    from dask_rec.serving.evaluation import split_strong_generalization
    from dask_rec.data.store import open_store

    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        data = open_store(data)
    X = data.to_scipy() if hasattr(data, "to_scipy") else data
    if not sp.issparse(X):
        raise TypeError(f"data must be a scipy.sparse matrix, a store or a store path; got {type(data).__name__}")
    X = sp.csr_matrix(X)
    rows = np.arange(X.shape[0], dtype=np.int64)
    if isinstance(test_users, (int, np.integer)) and not isinstance(test_users, bool):
        test_users = split_strong_generalization(X, n_test_users=int(test_users), seed=seed,
                                                 target_fraction=target_fraction).test_users
    if test_users is not None:
        drop = np.asarray(test_users, dtype=np.int64).ravel()
        if drop.size and (drop.min() < 0 or drop.max() >= X.shape[0]):
            raise ValueError(f"test_users must be row indices in [0, {X.shape[0]}); got {drop.min()}..{drop.max()}")
        rows = np.setdiff1d(rows, drop)
        X = X[rows]
    n_val = validation_users or max(1, min(10_000, X.shape[0] // 10))
    split = split_strong_generalization(X, n_test_users=n_val, seed=seed, target_fraction=target_fraction)
    split.train_users, split.test_users = rows[split.train_users], rows[split.test_users]
    return split


def tune(data, space=None, *, model="sansa", client=None, metric="ndcg@100", search="grid", n_trials=None,
         test_users=None, validation_users=None, target_fraction=0.2, seed=0, base_config=None,
         concurrency=None, patience=None, progress=None) -> TuneResult:
    """Search ``space`` for the config of ``model`` that maximises ``metric`` on validation users.

    Parameters
    ----------
    data : scipy.sparse matrix, InteractionStore or store path
        All interactions (users x items).
    space : dict, optional
        ``{parameter: values}`` (see :mod:`dask_rec.tuning.space`); SANSA: ``l2``, ``density``
        or ``nnz_per_item``; ItemKNN: ``k``, ``shrinkage``, ``similarity``. Default: the model's.
    model : str, default "sansa"
    client : distributed.Client, optional
        Run the trials on this cluster; when None, on the current client's, else in this process.
    metric : str, default "ndcg@100"
        ``recall@K``, ``ndcg@K`` or ``coverage@K``, maximised.
    search : {"grid", "tpe"}
        Every combination, or Optuna's TPE sampler (needs ``optuna``) over ``n_trials`` trials.
    n_trials : int, optional
        Trials of a TPE search (default 20); a grid runs all its points.
    test_users : int or array of int, optional
        Rows of ``data`` held out for the final test (or how many, chosen as ``dask-rec evaluate``
        does): dropped before the split, never read.
    validation_users, target_fraction, seed
        The validation split (see :func:`validation_split`).
    base_config : config, optional
        The model config the space's values replace fields of (default: the model's default).
    concurrency : int, optional
        Trials at a time (default: the cluster's workers, 1 in process), lowered when the
        big-memory worker cannot hold that many SANSA factorizations.
    patience : int, optional
        TPE only: stop after this many finished trials without a better value.
    progress : bool, optional
        One line per finished trial on stderr (default: when stderr is a terminal).

    Returns
    -------
    TuneResult
    """
    from dask_rec.executor import executor_for

    entry = tunable(model)
    space = check_space(entry, space)
    kind, _, cutoff = metric.partition("@")
    if kind not in ("recall", "ndcg", "coverage") or not cutoff.isdigit() or int(cutoff) < 1:
        raise ValueError(f"metric must be recall@K, ndcg@K or coverage@K; got {metric!r}")
    if search not in ("grid", "tpe"):
        raise ValueError(f"search must be 'grid' or 'tpe'; got {search!r}")
    optuna = _import_optuna() if search == "tpe" else None
    base = default_config(entry) if base_config is None else base_config
    split = validation_split(data, test_users=test_users, validation_users=validation_users,
                             target_fraction=target_fraction, seed=seed)
    if client is None:
        from dask_rec.cluster import current_client

        client = current_client()
    executor = executor_for(client)
    progress = sys.stderr.isatty() if progress is None else progress
    ks = tuple(sorted({20, 100, int(cutoff)}))
    run = _Trials(entry, base, split, executor, client, metric, ks, progress)
    t0 = time.perf_counter()
    try:
        run.prepare()
        workers = run.concurrency(concurrency, [config_for(entry, base, p) for p in grid_points(space)])
        if search == "grid":
            points = sorted(grid_points(space), key=_expected_cost, reverse=True)  # longest first: fewer idle slots
            run.total = len(points)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in as_completed([pool.submit(run.trial, p) for p in points]):
                    done.result()
        else:
            _tpe(optuna, run, entry, space, n_trials or 20, workers, seed, patience)
    finally:
        run.close()
    return TuneResult(model=model, metric=metric, search=search, trials=run.trials, base_config=base,
                      info={**run.info, "concurrency": workers, "seconds": round(time.perf_counter() - t0, 3),
                            "n_train_users": int(split.train.shape[0]), "n_validation_users": int(split.test_users.size),
                            "n_items": int(split.train.shape[1])})


def _expected_cost(point: dict) -> tuple:
    """A rough order of trial cost: larger budgets, then smaller λ (more ICF restarts), cost more."""
    budget = point.get("density", point.get("nnz_per_item", 0))
    return (budget if isinstance(budget, (int, float)) else 0, -point.get("l2", 0) if "l2" in point else 0)


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("search='tpe' needs Optuna: pip install optuna (or use search='grid')") from None
    return optuna


def _tpe(optuna, run, entry, space, n_trials, workers, seed, patience):
    """TPE over ``space``; a point already tried is not fitted again; stops after ``patience``
    finished trials without improvement."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    run.total = n_trials
    seen: dict = {}
    lock = threading.Lock()

    def objective(trial):
        point = suggest_point(trial, entry, space)
        key = tuple(sorted(point.items()))
        with lock:
            cached = seen.get(key)
            if cached is None:
                seen[key] = cached = threading.Event()
                owner = True
            else:
                owner = False
        if not owner:  # the same point again: its value, without a second fit
            cached.wait()
            raise optuna.TrialPruned("a repeat of an earlier trial")
        try:
            value = run.trial(point)
        finally:
            cached.set()
        if patience:
            values = [t["value"] for t in run.trials]
            if len(values) - 1 - int(np.argmax(values)) >= patience:
                trial.study.stop()
        return value

    study.optimize(objective, n_trials=n_trials, n_jobs=workers, catch=())


class _Trials:
    """The shared state of one tuning run: the split, the shared Gramian, the finished trials."""

    def __init__(self, entry, base, split, executor, client, metric, ks, progress):
        self.entry, self.base, self.split, self.executor, self.client = entry, base, split, executor, client
        self.metric, self.ks, self.progress = metric, ks, progress
        self.trials: list[dict] = []
        self.info: dict = {}
        self.lower = None
        self.total = 0
        self._lock = threading.Lock()

    def shares_gramian(self) -> bool:
        return self.entry.shares_gramian and training.uses_streamed_gramian(self.base)

    def prepare(self) -> None:
        """Compute the training users' lower Gramian once, for SANSA trials."""
        if not self.shares_gramian():
            return
        from dask_rec.data.blocks import as_row_block_source

        t0 = time.perf_counter()
        ordering = self.base.gramian_factorizer_config.reordering_method
        self.lower = training.compute_lower_gramian(as_row_block_source(self.split.train), self.executor,
                                                    ordering=ordering, progress=False)
        self.info["gramian_seconds"] = round(time.perf_counter() - t0, 3)
        self.info["shared_gramian"] = True

    def concurrency(self, requested, configs) -> int:
        """Trials at a time: ``requested`` (default: the workers), at most what the big-memory
        worker can hold of the largest trial's factorization."""
        from dask_rec.kernels.factorization import effective_density
        from dask_rec.models.sansa.factorize import streamed_factorization_bytes
        from dask_rec.memory_plan import bigmem_budget, memory_limits

        limits = memory_limits(self.executor)
        n = requested or (1 if self.client is None else max(1, limits.n_workers))
        if self.lower is None or not bigmem_budget(limits):
            return max(1, int(n))
        n_items = int(self.lower.n_items)
        largest = max(effective_density(c.density_for(n_items), n_items) for c in configs)
        need = max(1, streamed_factorization_bytes(n_items, largest, max(self.lower.block_nnz, default=0)))
        fits = max(1, int(bigmem_budget(limits) // need))
        if fits < n:
            logger.info("tune: %d trials at a time (the bigmem worker holds %d factorizations)", fits, fits)
        return max(1, min(int(n), fits))

    def trial(self, point: dict) -> float:
        """Fit and score one point; records and returns its metric."""
        from dask_rec.serving.evaluation import evaluate

        config = config_for(self.entry, self.base, point)
        t0 = time.perf_counter()
        if self.lower is not None:
            result = training.fit_weights_from_lower_gramian(self.lower, config, self.executor, progress=False)
            scorer, fit_report = result.weights, result.report
        else:
            from dask_rec.models.registry import get

            fitted = get(self.entry.name).load_class()(config)
            kwargs = {"progress": False} if self.entry.name == "sansa" else {}
            fitted.fit(self.split.train, client=self.client, **kwargs)
            scorer, fit_report = fitted, fitted.fit_report_
        fit_seconds = time.perf_counter() - t0
        try:
            metrics = evaluate(scorer, self.split.test_history, self.split.test_targets, ks=self.ks,
                               client=self.client)
        finally:
            if self.lower is not None:
                self.executor.release(scorer)
        record = {"params": dict(point), "value": float(metrics[self.metric]), "metrics": metrics,
                  "fit_seconds": round(fit_seconds, 3), "seconds": round(time.perf_counter() - t0, 3),
                  "stage_seconds": dict(fit_report.get("stage_seconds", {}))}
        with self._lock:
            self.trials.append(record)
            if self.progress:
                print(f"[dask_rec tune] trial {len(self.trials)}/{self.total}: {point} -> "
                      f"{self.metric} {record['value']:.4f} ({record['seconds']:.1f} s)", file=sys.stderr)
        return record["value"]

    def close(self) -> None:
        if self.lower is not None:
            training.release_lower_gramian(self.executor, self.lower)
            self.lower = None
