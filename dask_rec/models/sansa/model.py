"""The SANSA estimator: the reference ``sansa`` API, trained in process or on a Dask cluster."""

from __future__ import annotations

import json
import logging

import numpy as np
import scipy.sparse as sp

from dask_rec import settings
from dask_rec.config import SANSAConfig
from dask_rec.jsonable import to_jsonable
from dask_rec.models.base import Recommender
from dask_rec.validation import check_interactions, check_k, check_n_items

__all__ = ["SANSA"]

logger = logging.getLogger(__name__)


class SANSA(Recommender):
    """Scalable Approximate NonSymmetric Autoencoder (Spišák et al., RecSys 2023).

    Sparse approximate EASE: scores of a user row ``x`` are ``(x @ W1) @ W2`` with two sparse
    item x item weight matrices. Same names as the reference ``sansa.SANSA`` (``fit``,
    ``weights``, ``load_weights``, ``config``, ``forward``, ``recommend``), and unlike it: masked
    items are never recommended (their score is −inf, not 0), users with fewer than ``k``
    candidates get rows padded with id −1 and score −inf, inference runs in bounded user blocks,
    and training can run on a Dask cluster. It implements the recommender contract of
    :mod:`dask_rec.models.base` (its block scorer: :class:`~dask_rec.serving.scorers.WeightsScorer`).

    Parameters
    ----------
    config : SANSAConfig, optional
        Model configuration; defaults to ``SANSAConfig()``.

    Attributes
    ----------
    weights : tuple of (csr_matrix, csr_matrix)
        ``(W1, W2)``; ``(None, None)`` before ``fit``/``load_weights``. After a fit on a given
        cluster the weights are brought into this process at the end of the fit when they take
        at most ``dask_rec.model.fetch-bytes`` bytes (default 512 MiB), so the model outlives its
        client; larger weights stay on the cluster until :meth:`fetch` (or first access here),
        and :meth:`save` has the workers write them. Once that client is closed, using weights
        left on the cluster is a one-line error saying what to call before closing it.
    item_vocabulary : Vocabulary or None
        Original item IDs, when trained from a store.
    fit_report_ : dict
        Stage timings, factor and inverse statistics of the last ``fit``.
    """

    name = "sansa"

    def __init__(self, config: SANSAConfig | None = None) -> None:
        self._config = config if config is not None else SANSAConfig()
        if not isinstance(self._config, SANSAConfig):
            raise TypeError(f"config must be a SANSAConfig; got {type(config).__name__}")
        self._weights = (None, None)
        self._weights_handle = None
        self._client = None
        self.item_vocabulary = None
        self.fit_report_: dict = {}

    # ------------------------------------------------------------------ reference API
    @property
    def config(self) -> SANSAConfig:
        return self._config

    @property
    def weights(self):
        if self._weights[0] is None and self._weights_handle is not None:
            self.fetch()
        return self._weights

    def fetch(self) -> "SANSA":
        """Bring weights a fit left on the cluster into this process (a no-op when they are here).

        Call it (or :meth:`save`) before closing the client when the weights are larger than
        ``dask_rec.model.fetch-bytes``. The cluster's copy stays referenced while the client is
        open, so :meth:`recommend_users` on that client does not send the weights back. Returns ``self``.
        """
        if self._weights[0] is None and self._weights_handle is not None:
            client = self._require_client()
            try:
                self._weights = tuple(client.gather(self._weights_handle))
            except Exception as exc:  # the cluster went away under an open client
                raise RuntimeError(f"the weights could not be fetched from the cluster ({type(exc).__name__}: "
                                   f"{exc}); {self._keep_advice()}") from None
        return self

    def _keep_advice(self) -> str:
        return ("call model.fetch() or model.save(path) before closing the client, or raise "
                "dask_rec.model.fetch-bytes to bring the weights home at the end of fit")

    def _require_client(self):
        """The open client holding this model's weights; a one-line error once it is closed."""
        client = self._client
        if client is None or getattr(client, "status", "running") in ("closing", "closed"):
            size = self.fit_report_.get("weights_bytes")
            size = f" ({size / 2**20:,.0f} MiB)" if isinstance(size, (int, float)) else ""
            raise RuntimeError(f"this SANSA's weights{size} stayed on the cluster and its client is closed: "
                               f"{self._keep_advice()}")
        return client

    @weights.setter
    def weights(self, value) -> None:
        self.load_weights(value)

    @property
    def n_items(self) -> int | None:
        if self._weights[0] is not None:
            return self._weights[0].shape[0]
        return self.fit_report_.get("n_items")

    def load_weights(self, weights) -> "SANSA":
        """Use ``weights = (W1, W2)`` (square sparse matrices of equal shape) as the model."""
        if not isinstance(weights, (tuple, list)) or len(weights) != 2:
            raise TypeError("weights must be a pair (W1, W2) of sparse matrices")
        W1, W2 = (_check_weight(w, name) for w, name in zip(weights, ("W1", "W2")))
        if W1.shape != W2.shape or W1.shape[0] != W1.shape[1]:
            raise ValueError(f"W1 and W2 must be square and of equal shape; got {W1.shape} and {W2.shape}")
        self._weights = (W1, W2)
        self._weights_handle = None
        return self

    def fit(self, training_matrix, compute_gramian: bool = True, *, client=None, progress: bool | None = None,
            performance_report: str | None = None) -> "SANSA":
        """Train on a users x items matrix, a store, or a path to a store.

        Parameters
        ----------
        training_matrix : scipy sparse matrix, ndarray, InteractionStore or path
            Interactions (binary or weighted, non-negative). With ``compute_gramian=False``, a
            precomputed item x item matrix instead (as in the reference).
        compute_gramian : bool, default True
        client : distributed.Client, "local" or None
            Where to run. A Client runs the fit on its cluster; ``"local"`` starts a LocalCluster
            sized to this machine and closes it afterwards; ``None`` uses the current client if
            there is one, else starts a LocalCluster for a store (out-of-core data) and runs in
            this process for in-memory matrices (the reference's behaviour).
        progress : bool, optional
            Progress bar per stage on a cluster (default: when stderr is a terminal).
        performance_report : str, optional
            Path of a Dask performance report (HTML) of the fit (cluster runs only).

        Returns
        -------
        self
        """
        from dask_rec.data.blocks import as_row_block_source
        from dask_rec.cluster import client_context, current_client
        from dask_rec.executor import InProcessExecutor, executor_for
        from dask_rec.models.sansa.training import fit_weights

        if not isinstance(compute_gramian, (bool, np.bool_)):
            raise TypeError(f"compute_gramian must be True or False; got {compute_gramian!r}")
        source = as_row_block_source(training_matrix)
        if client is None:
            client = current_client()
            if client is None and source.store is not None:
                client = "local"
        if client is None:
            result = fit_weights(source, self.config, InProcessExecutor(), compute_gramian=compute_gramian,
                                 progress=progress)
            self._set_fit_result(result, weights=result.weights, client=None, source=source)
            return self
        if isinstance(client, str) and client != "local":
            raise ValueError(f"client must be a distributed.Client, 'local' or None; got {client!r}")
        with client_context(None if client == "local" else client) as c:
            report_ctx = _performance_report(performance_report)
            with report_ctx:
                result = fit_weights(source, self.config, executor_for(c), compute_gramian=compute_gramian,
                                     progress=progress)
            if client == "local":  # the cluster closes on exit: bring the weights home first
                self._set_fit_result(result, weights=tuple(c.gather(result.weights)), client=None, source=source)
            else:
                self._set_fit_result(result, weights=None, client=c, source=source)
                self._fetch_if_small(c)
        return self

    def _fetch_if_small(self, client) -> None:
        """Gather the weights now when they take at most ``dask_rec.model.fetch-bytes`` (the model then
        outlives its client); else leave them on the cluster, their size in ``fit_report_``."""
        size = int(client.submit(_weights_nbytes, self._weights_handle, pure=False).result())
        self.fit_report_["weights_bytes"] = size
        limit = int(settings.get("model.fetch-bytes"))
        if size <= limit:
            self.fetch()
        else:
            logger.info("the weights (%.0f MiB) stay on the cluster (dask_rec.model.fetch-bytes is %.0f MiB): "
                        "call fetch() or save() before closing the client", size / 2**20, limit / 2**20)

    def _set_fit_result(self, result, *, weights, client, source) -> None:
        self.fit_report_ = result.report
        self._client = client
        self._weights_handle = None if weights is not None else result.weights
        self._weights = tuple(weights) if weights is not None else (None, None)
        self.item_vocabulary = source.item_vocabulary
        logger.info("fit done in %.1f s: %s", result.report["total_seconds"], result.report["stage_seconds"])

    def forward(self, X) -> np.ndarray:
        """Dense scores ``(X @ W1) @ W2`` of a batch of users (rows of X), as float32.

        Unlike the reference (which returns a sparse product) this returns a dense array: use
        :meth:`recommend` or :meth:`recommend_users` for large batches, which work in bounded blocks.
        """
        from dask_rec.kernels.scoring import score_block

        W1, W2 = self._require_weights()
        X = check_interactions(X, "X", allow_empty=True)
        check_n_items(X, W1.shape[0])
        return score_block(X, W1, W2)

    def recommend(self, interactions, k: int, mask_input: bool = True):
        """Top-``k`` items for each user, best first.

        Parameters
        ----------
        interactions : sparse matrix or ndarray (users x items), or 1-D array of one user's row
        k : int
        mask_input : bool, default True
            Never recommend items the user interacted with.

        Returns
        -------
        ids : ndarray of int64, (n_users, k) — or (k,) for a 1-D input
        scores : ndarray of float32, same shape
            Rows with fewer than ``k`` candidates are padded with id −1 and score −inf.
        """
        from dask_rec.kernels.scoring import recommend_block

        W1, W2 = self._require_weights()
        k = check_k(k)
        single = isinstance(interactions, np.ndarray) and interactions.ndim == 1
        X = check_interactions(interactions[None, :] if single else interactions, "interactions", allow_empty=True)
        check_n_items(X, W1.shape[0], "interactions")
        rows = _users_per_block(W1.shape[0])
        ids = np.empty((X.shape[0], k), dtype=np.int64)
        scores = np.empty((X.shape[0], k), dtype=np.float32)
        for start in range(0, X.shape[0], rows):
            block = X[start : start + rows]
            ids[start : start + rows], scores[start : start + rows] = recommend_block(
                block, W1, W2, k, exclude_seen=bool(mask_input)
            )
        return (ids[0], scores[0]) if single else (ids, scores)

    def recommend_users(self, histories, k: int = 10, *, exclude_seen: bool = True, output=None, client=None, **kwargs):
        """Batch top-``k`` for many users as user-block tasks; see :func:`dask_rec.serving.recommend.recommend_users`."""
        from dask_rec.serving.recommend import recommend_users

        kwargs.setdefault("item_vocabulary", self.item_vocabulary)
        open_client = self._client is not None and getattr(self._client, "status", "running") not in ("closing", "closed")
        if self._weights_handle is not None and open_client and client in (None, self._client):
            weights, client = self._weights_handle, self._client  # the copy already on the cluster
        else:
            weights = self._require_weights()
        return recommend_users(weights, histories, k=k, exclude_seen=exclude_seen, output=output, client=client, **kwargs)

    def scorer(self):
        """The block scorer of the weights (:class:`~dask_rec.serving.scorers.WeightsScorer`)."""
        from dask_rec.serving.scorers import WeightsScorer

        return WeightsScorer(*self._require_weights())

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of ``(x · W1) · W2`` per user; see the contract in :mod:`dask_rec.models.base`."""
        return self.scorer().topk_block(X_block, k, exclude_seen=exclude_seen, allowed=allowed, n_threads=n_threads)

    def similar_items(self, items, k: int = 10):
        """Top-``k`` items most similar to each of ``items`` (rows of W1·W2, the item itself excluded)."""
        from dask_rec.kernels.scoring import similar_items_block

        W1, W2 = self._require_weights()
        k = check_k(k)
        single = np.ndim(items) == 0
        items = np.atleast_1d(np.asarray(items))
        if items.dtype.kind not in "iu":
            raise TypeError(f"items must be integer item indices; got dtype {items.dtype}")
        if items.size and (items.min() < 0 or items.max() >= W1.shape[0]):
            raise ValueError(f"item indices must be in [0, {W1.shape[0]}); got values from {items.min()} to {items.max()}")
        ids, scores = similar_items_block(items.astype(np.int64), W1, W2, k)
        return (ids[0], scores[0]) if single else (ids, scores)

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, overwrite: bool = False) -> str:
        """Write the model to a Zarr directory (atomically); see :mod:`dask_rec.models.persistence`.

        Weights left on the cluster by a fit are written by the workers; they never travel through
        this process.
        """
        import zarr

        from dask_rec import __version__
        from dask_rec.data.atomic import atomic_directory
        from dask_rec.config import config_to_dict
        from dask_rec.models.persistence import MODEL_FORMAT_VERSION, item_vocabulary_attrs

        on_cluster = self._weights[0] is None and self._weights_handle is not None
        if on_cluster:
            self._require_client()
        else:
            self._require_weights()
        with atomic_directory(path, overwrite, kind="model") as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            root.attrs.update({
                "format_version": MODEL_FORMAT_VERSION,
                "kind": "dask_rec.SANSA",
                "dask_rec_version": __version__,
                "config": config_to_dict(self.config),
                "n_items": int(self.n_items),
                "fit_report": json.loads(json.dumps(to_jsonable(self.fit_report_), default=str)),
                **item_vocabulary_attrs(self),
            })
            if on_cluster:
                self._client.submit(_write_weights, self._weights_handle, str(tmp), pure=False).result()
            else:
                _write_weights(self.weights, str(tmp))
            if self.item_vocabulary is not None:
                self.item_vocabulary.save(tmp / "items.parquet")
        return str(path)

    @classmethod
    def load(cls, path) -> "SANSA":
        """Load a model written by :meth:`save` (no pickle involved), checked as
        :mod:`dask_rec.models.persistence` describes (one-line errors naming the damaged file)."""
        from pathlib import Path

        from dask_rec.config import config_from_dict
        from dask_rec.exceptions import ModelFileError
        from dask_rec.models.persistence import config_error, open_member, open_model_root, read_csr_group, read_item_vocabulary

        root, attrs = open_model_root(path, "dask_rec.SANSA")
        try:
            config = config_from_dict(attrs["config"])
        except Exception as exc:
            raise config_error(path, exc) from None
        model = cls(config)
        weights = [read_csr_group(open_member(root, name)) for name in ("W1", "W2")]
        try:
            model.load_weights(tuple(weights))
        except ValueError as exc:
            raise ModelFileError(f"{Path(path)}: {exc}") from None
        n_items = attrs.get("n_items")
        if n_items is not None and n_items != model.n_items:
            raise ModelFileError(f"{Path(path) / 'zarr.json'}: n_items={n_items!r} but the weights have "
                                 f"{model.n_items} items")
        model.fit_report_ = attrs.get("fit_report", {})
        model.item_vocabulary = read_item_vocabulary(path, model.n_items, attrs)
        return model

    def _require_weights(self):
        W1, W2 = self.weights
        if W1 is None:
            raise ValueError("this SANSA model has no weights yet: call fit() or load_weights() first")
        return W1, W2

    def __repr__(self) -> str:
        state = "unfitted" if self._weights[0] is None and self._weights_handle is None else f"{self.n_items} items"
        return f"SANSA({self.config!r}) [{state}]"


def _check_weight(w, name: str) -> sp.csr_matrix:
    if not sp.issparse(w):
        raise TypeError(f"{name} must be a scipy sparse matrix; got {type(w).__name__}")
    w = sp.csr_matrix(w, dtype=np.float32)
    try:  # index ranges and monotone indptr: the scoring kernels trust them
        w.check_format(full_check=True)
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid CSR matrix: {exc}") from None
    if not np.all(np.isfinite(w.data)):
        raise ValueError(f"{name} has NaN or infinite values")
    return w


def _weights_nbytes(weights) -> int:
    return int(sum(w.data.nbytes + w.indices.nbytes + w.indptr.nbytes for w in weights))


def _users_per_block(n_items: int) -> int:
    """Users scored at once: a dense buffer of about ``dask_rec.recommend.block-bytes`` bytes."""
    budget = int(settings.get("recommend.block-bytes"))
    return max(1, budget // (4 * max(n_items, 1)))


def _performance_report(path):
    import contextlib

    if path is None:
        return contextlib.nullcontext()
    from distributed import performance_report

    return performance_report(filename=str(path))


def _write_weights(weights, path: str) -> None:
    """Write ``(W1, W2)`` as CSR groups of the model directory ``path`` (a task on a cluster)."""
    import zarr

    from dask_rec.models.persistence import write_csr_group

    root = zarr.open_group(path, mode="a", zarr_format=3)
    for name, matrix in zip(("W1", "W2"), weights):
        write_csr_group(root, name, matrix)
