"""The models ``dask-rec fit --model NAME`` and ``dask-rec evaluate --models ...`` know, by name.

Each :class:`ModelEntry` names the model class (loaded lazily from ``"module:Class"``), the
function that adds the model's CLI options to a parser and the one that builds its config from
the parsed arguments, and the ``kind`` written in its saved directory's root attrs (which
:func:`load_model_directory` dispatches on). SANSA's options stay unprefixed (``--l2``,
``--density``, ...) for compatibility; every other model prefixes its own (``--knn-k``, ...).

Adding a model is one :func:`register` call (or one entry in :data:`_BUILTIN`), e.g. ALS::

    ModelEntry("als", "dask_rec.models.als:ALS", "dask_rec.ALS",
               "dask_rec.cli._als_options:add_als_arguments",
               "dask_rec.cli._als_options:als_config_from_args")
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["ModelEntry", "MODELS", "register", "get", "model_names", "load_model_directory"]


def _resolve(ref: str | None):
    if ref is None:
        return None
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _no_arguments(parser) -> None:
    """For models without options."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes
    ----------
    name : str
        Registry name (``--model NAME``).
    model_class : str
        ``"module:Class"`` of the :class:`~dask_rec.models.base.Recommender` subclass (or SANSA).
    kind : str
        Root attr ``kind`` of its saved directories.
    add_arguments : str or None
        ``"module:function"`` adding the model's options to an ``argparse`` parser.
    config_from_args : str or None
        ``"module:function"`` building its config from parsed arguments; None: the default config.
    """

    name: str
    model_class: str
    kind: str
    add_arguments: str | None = None
    config_from_args: str | None = None

    def load_class(self):
        return _resolve(self.model_class)

    def add_options(self, parser) -> None:
        (_resolve(self.add_arguments) or _no_arguments)(parser)

    def config(self, args):
        build = _resolve(self.config_from_args)
        return None if build is None else build(args)

    def build(self, args):
        """A new, unfitted model configured from parsed CLI arguments."""
        return self.load_class()(self.config(args))


_BUILTIN = (
    ModelEntry("sansa", "dask_rec.models.sansa.model:SANSA", "dask_rec.SANSA",
               "dask_rec.cli._model_options:add_model_arguments", "dask_rec.cli._model_options:config_from_args"),
    ModelEntry("pop", "dask_rec.models.popularity:PopRec", "dask_rec.PopRec"),
    ModelEntry("random", "dask_rec.models.popularity:RandomRec", "dask_rec.RandomRec",
               "dask_rec.cli._count_model_options:add_random_arguments",
               "dask_rec.cli._count_model_options:random_config_from_args"),
    ModelEntry("wilson", "dask_rec.models.popularity:Wilson", "dask_rec.Wilson",
               "dask_rec.cli._count_model_options:add_wilson_arguments",
               "dask_rec.cli._count_model_options:wilson_config_from_args"),
    ModelEntry("itemknn", "dask_rec.models.itemknn:ItemKNN", "dask_rec.ItemKNN",
               "dask_rec.cli._count_model_options:add_itemknn_arguments",
               "dask_rec.cli._count_model_options:itemknn_config_from_args"),
    ModelEntry("userpop", "dask_rec.models.popularity:UserPopRec", "dask_rec.UserPopRec"),
    ModelEntry("ease", "dask_rec.models.ease:EASE", "dask_rec.EASE",
               "dask_rec.cli._gramian_model_options:add_ease_arguments",
               "dask_rec.cli._gramian_model_options:ease_config_from_args"),
    ModelEntry("slim", "dask_rec.models.slim:SLIM", "dask_rec.SLIM",
               "dask_rec.cli._gramian_model_options:add_slim_arguments",
               "dask_rec.cli._gramian_model_options:slim_config_from_args"),
    ModelEntry("rules", "dask_rec.models.rules:AssociationRules", "dask_rec.AssociationRules",
               "dask_rec.cli._gramian_model_options:add_rules_arguments",
               "dask_rec.cli._gramian_model_options:rules_config_from_args"),
    ModelEntry("als", "dask_rec.models.als:ALS", "dask_rec.ALS",
               "dask_rec.cli._als_options:add_als_arguments", "dask_rec.cli._als_options:als_config_from_args"),
)

#: name -> :class:`ModelEntry`, in registration order.
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _BUILTIN}


def register(entry: ModelEntry) -> None:
    """Add (or replace) a model entry."""
    if not isinstance(entry, ModelEntry):
        raise TypeError(f"entry must be a ModelEntry; got {type(entry).__name__}")
    MODELS[entry.name] = entry


def model_names() -> list[str]:
    return list(MODELS)


def get(name: str) -> ModelEntry:
    """The entry of model ``name``; an error lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None


def load_model_directory(path):
    """Load any saved dask_rec model, dispatching on its root attr ``kind``."""
    from dask_rec.models.persistence import open_model_root

    kind = open_model_root(path)[1].get("kind")
    for entry in MODELS.values():
        if entry.kind == kind:
            return entry.load_class().load(path)
    from dask_rec.exceptions import ModelFileError

    raise ModelFileError(f"{str(path)!r} is not a dask_rec model directory (kind={kind!r}); "
                         f"known kinds: {', '.join(e.kind for e in MODELS.values())}")
