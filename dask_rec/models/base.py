"""The recommender contract, written once: what every dask_rec model implements.

A model is an estimator with a config (a dataclass), trained by :meth:`Recommender.fit` and
served through one block-level method, :meth:`Recommender.topk_block`. Everything else
(:meth:`recommend` for an in-memory batch, :meth:`recommend_users` as user-block tasks on a
cluster, :func:`dask_rec.serving.evaluation.evaluate`) is written once on top of ``topk_block``.

The top-k block contract
------------------------
``topk_block(X_block, k, exclude_seen=True, allowed=None, n_threads=1) -> (ids, scores)``

* ``X_block``: CSR interactions (histories) of ``b`` users, ``n_items`` columns.
* ``ids``: ``int64`` array of shape ``(b, k)``, best first; ``scores``: ``float32`` of the same
  shape, non-increasing along each row; ties broken by the lower item index.
* With ``exclude_seen`` an item in the user's row of ``X_block`` (its sparsity pattern) is never
  returned; with ``allowed`` (bool array of length ``n_items``) an item marked False is never
  returned.
* A row with fewer than ``k`` candidates is padded with id ``-1`` and score ``-inf``; a
  candidate's score is never NaN (NaN and ``-inf`` scores are not candidates).
* ``n_threads``: threads the kernel may use (1 inside Dask tasks).
* The object whose ``topk_block`` runs (see :meth:`Recommender.scorer`) must pickle: it is sent
  to the workers once per job.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Recommender"]


class Recommender:
    """Base class of dask_rec's models.

    Subclasses implement :meth:`fit`, :meth:`topk_block` and :attr:`n_items`, and where they
    apply :meth:`similar_items`, :meth:`save` and :meth:`load`.

    Attributes
    ----------
    item_vocabulary : Vocabulary or None
        Original item IDs, when trained from a store.
    fit_report_ : dict
        What the last ``fit`` measured (stage timings at least).
    """

    item_vocabulary = None
    #: Registry name (``dask-rec fit --model NAME``); set by each subclass.
    name: str = ""

    # ---------------------------------------------------------------- to implement
    def fit(self, data, client=None) -> "Recommender":
        """Train on a users x items matrix, a store or a store path; returns ``self``.

        ``client``: a ``distributed.Client`` runs the fit's stages on its cluster; ``None`` uses
        the current client if there is one, else runs in this process (for in-memory data).
        """
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def topk_block(self, X_block, k: int, exclude_seen: bool = True, allowed=None, n_threads: int = 1):
        """Top ``k`` of a block of users; see the contract in the module docstring."""
        raise NotImplementedError

    def similar_items(self, items, k: int = 10):
        """Top ``k`` items most similar to each of ``items`` (the item itself excluded)."""
        raise NotImplementedError(f"{type(self).__name__} has no item similarity")

    def save(self, path, *, overwrite: bool = False) -> str:
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def load(cls, path) -> "Recommender":
        raise NotImplementedError(f"{cls.__name__} cannot be loaded")

    # ---------------------------------------------------------------- written once
    def fetch(self) -> "Recommender":
        """Bring state a fit left on a cluster into this process; returns ``self``.

        A no-op here (these models hold their state in this process after ``fit``); a model that
        keeps large state on the cluster overrides it, so that it outlives its client.
        """
        return self

    def scorer(self):
        """The picklable object whose ``topk_block`` the block tasks call (default: ``self``)."""
        return self

    def recommend(self, interactions, k: int, mask_input: bool = True):
        """Top-``k`` items per user of an in-memory batch, best first.

        Returns ``(ids, scores)`` of shape ``(n_users, k)`` (or ``(k,)`` for a 1-D input row),
        padded with −1 / −inf where a user has fewer than ``k`` candidates.
        """
        from dask_rec.validation import check_interactions, check_k, check_n_items

        k = check_k(k)
        single = isinstance(interactions, np.ndarray) and interactions.ndim == 1
        X = check_interactions(interactions[None, :] if single else interactions, "interactions", allow_empty=True)
        check_n_items(X, self.n_items, "interactions")
        ids, scores = self.scorer().topk_block(X, k, exclude_seen=bool(mask_input))
        return (ids[0], scores[0]) if single else (ids, scores)

    def recommend_users(self, histories, k: int = 10, *, exclude_seen: bool = True, output=None, client=None,
                        **kwargs):
        """Batch top-``k`` for many users as user-block tasks; see :func:`dask_rec.serving.recommend.recommend_users`."""
        from dask_rec.serving.recommend import recommend_users

        kwargs.setdefault("item_vocabulary", self.item_vocabulary)
        return recommend_users(self.scorer(), histories, k=k, exclude_seen=exclude_seen, output=output,
                               client=client, **kwargs)

    def __repr__(self) -> str:
        config = getattr(self, "config", None)
        return f"{type(self).__name__}({config!r})" if config is not None else f"{type(self).__name__}()"
