"""dask_rec: SANSA recommenders trained and served out of core on Dask.

``import dask_rec`` stays cheap: names below are loaded from their modules on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # configuration (same names as the reference ``sansa`` package)
    "SANSAConfig": "dask_rec.config",
    "CHOLMODGramianFactorizerConfig": "dask_rec.config",
    "ICFGramianFactorizerConfig": "dask_rec.config",
    "UMRUnitLowerTriangleInverterConfig": "dask_rec.config",
    "ExactUnitLowerTriangleInverterConfig": "dask_rec.config",
    # the model
    "SANSA": "dask_rec.models.sansa.model",
    # the comparison models built on the Gramian
    "EASE": "dask_rec.models.ease",
    "EASEConfig": "dask_rec.models.ease",
    "SLIM": "dask_rec.models.slim",
    "SLIMConfig": "dask_rec.models.slim",
    "AssociationRules": "dask_rec.models.rules",
    "AssociationRulesConfig": "dask_rec.models.rules",
    # other models
    "ALS": "dask_rec.models.als",
    "ALSConfig": "dask_rec.models.als",
    # data
    "ingest": "dask_rec.data.ingestion",
    "open_store": "dask_rec.data.store",
    "InteractionStore": "dask_rec.data.store",
    "Vocabulary": "dask_rec.data.vocabulary",
    "generate_interactions": "dask_rec.data.synthetic",
    # evaluation
    "evaluate": "dask_rec.serving.evaluation",
    "split_strong_generalization": "dask_rec.serving.evaluation",
    # tuning
    "tune": "dask_rec.tuning.search",
    "TuneResult": "dask_rec.tuning.search",
    # warnings
    "DaskRecWarning": "dask_rec.exceptions",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dask_rec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
