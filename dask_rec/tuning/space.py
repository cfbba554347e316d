"""What ``dask_rec.tune`` can search: each model's parameters, spaces, grids and TPE suggestions.

A *space* is a dict ``{parameter: values}``, for example ``{"l2": [1, 10, 100], "density": [1e-4,
5e-4, 2e-3]}``. A grid search tries every combination of the values; a TPE search (Optuna) samples
each numeric parameter in ``[min(values), max(values)]`` (on a log scale for the parameters marked
``log``, as integers for ``int``) and each other parameter among its values.

Each tunable model is one :class:`TunableModel` entry in :data:`TUNABLE`: its registry name, how
each space parameter maps onto a field of its config, and whether its trials can share one
Gramian (SANSA's do; see :mod:`dask_rec.tuning.search`). Adding a model is one entry, e.g. EASE::

    register_tunable(TunableModel("ease", {"l2": ("l2", "log")}, default_space={"l2": (50, 200, 800)}))
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

__all__ = ["TunableModel", "TUNABLE", "register_tunable", "tunable", "check_space", "grid_points",
           "suggest_point", "config_for", "default_config"]

#: parameter kinds: "log" (positive real, sampled on a log scale), "real", "int", "choice"
KINDS = ("log", "real", "int", "choice")


@dataclass(frozen=True)
class TunableModel:
    """A model ``dask_rec.tune`` can search.

    Attributes
    ----------
    name : str
        Its name in :data:`dask_rec.models.registry.MODELS`.
    params : dict
        ``{space parameter: (config field, kind)}``, kind one of ``log``, ``real``, ``int``, ``choice``.
    shares_gramian : bool
        Trials reuse one lower Gramian of the training users (SANSA with the ICF).
    default_space : dict
        The space searched when none is given.
    exclusive : tuple of tuple
        Groups of parameters of which a space may set at most one (SANSA's density and budget).
    """

    name: str
    params: dict
    shares_gramian: bool = False
    default_space: dict = field(default_factory=dict)
    exclusive: tuple = ()


TUNABLE: dict[str, TunableModel] = {}


def register_tunable(model: TunableModel) -> None:
    """Add (or replace) the search entry of a model."""
    if not isinstance(model, TunableModel):
        raise TypeError(f"model must be a TunableModel; got {type(model).__name__}")
    for name, (_, kind) in model.params.items():
        if kind not in KINDS:
            raise ValueError(f"parameter {name!r} of {model.name!r}: kind must be one of {KINDS}; got {kind!r}")
    TUNABLE[model.name] = model


register_tunable(TunableModel(
    "sansa", {"l2": ("l2", "log"), "density": ("weight_matrix_density", "log"), "nnz_per_item": ("nnz_per_item", "log")},
    shares_gramian=True, default_space={"l2": (1.0, 10.0, 100.0), "density": (1e-4, 5e-4, 2e-3)},
    exclusive=(("density", "nnz_per_item"),)))
register_tunable(TunableModel(
    "itemknn", {"k": ("k", "int"), "shrinkage": ("shrinkage", "real"), "similarity": ("similarity", "choice")},
    default_space={"k": (50, 100, 200), "shrinkage": (0.0, 10.0)}))


def tunable(name: str) -> TunableModel:
    """The entry of model ``name``; an error lists the tunable models."""
    try:
        return TUNABLE[name]
    except KeyError:
        raise ValueError(f"model {name!r} cannot be tuned; tunable models: {', '.join(TUNABLE)}") from None


def check_space(model: TunableModel, space: dict | None) -> dict:
    """``space`` as ``{parameter: tuple of values}``, checked: known names, non-empty, numbers where due."""
    space = model.default_space if space is None else space
    if not isinstance(space, dict) or not space:
        raise ValueError(f"space must be a non-empty dict of parameter -> values; got {space!r}")
    out = {}
    for name, values in space.items():
        if name not in model.params:
            raise ValueError(f"unknown parameter {name!r} for {model.name}; known: {', '.join(model.params)}")
        values = tuple(values) if isinstance(values, (list, tuple, set, range)) else (values,)
        if not values:
            raise ValueError(f"parameter {name!r} has no values")
        kind = model.params[name][1]
        if kind != "choice":
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"parameter {name!r} takes numbers; got {v!r}")
                if kind == "log" and v <= 0:
                    raise ValueError(f"parameter {name!r} must be > 0; got {v!r}")
        out[name] = tuple(dict.fromkeys(int(v) if kind == "int" else v for v in values))
    for group in model.exclusive:
        given = [p for p in group if p in out]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(group)} in the space; got {', '.join(given)}")
    return out


def grid_points(space: dict) -> list[dict]:
    """Every combination of the values of ``space``, in the order of its parameters and values."""
    names = list(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def suggest_point(trial, model: TunableModel, space: dict) -> dict:
    """One point of ``space`` drawn by an Optuna ``trial`` (see the module docstring)."""
    point = {}
    for name, values in space.items():
        kind = model.params[name][1]
        if len(values) == 1:
            point[name] = values[0]
        elif kind == "choice":
            point[name] = trial.suggest_categorical(name, list(values))
        elif kind == "int":
            point[name] = trial.suggest_int(name, min(values), max(values), log=min(values) > 0)
        else:
            point[name] = trial.suggest_float(name, float(min(values)), float(max(values)), log=kind == "log")
    return point


def default_config(model: TunableModel):
    """A new default config of ``model`` (via the model registry)."""
    from dask_rec.models.registry import get

    return get(model.name).load_class()().config


def config_for(model: TunableModel, base, point: dict):
    """``base`` (a config of ``model``) with the fields of ``point`` replaced."""
    changes = {model.params[name][0]: value for name, value in point.items()}
    if model.name == "sansa" and "weight_matrix_density" in changes:
        changes["nnz_per_item"] = None  # a density in the space replaces a budget of the base config
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{model.name} config with {point}: {exc}") from None
