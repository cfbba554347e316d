"""Model configuration: the same names and fields as the reference ``sansa`` package.

Configs are plain dataclasses, validated when they are built, so a bad value fails at the line
that wrote it rather than minutes into a fit. They serialise to and from JSON-able dicts
(:func:`config_to_dict`, :func:`config_from_dict`) for model persistence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Union

__all__ = [
    "SANSAConfig",
    "CHOLMODGramianFactorizerConfig",
    "ICFGramianFactorizerConfig",
    "UMRUnitLowerTriangleInverterConfig",
    "ExactUnitLowerTriangleInverterConfig",
    "REORDERING_METHODS",
    "config_to_dict",
    "config_from_dict",
]

#: Fill-reducing (or accuracy-improving) item orderings understood by the factorizers.
#: ``colamd``: COLAMD on X (the reference's only choice); ``amd``: AMD on the Gramian's pattern;
#: ``popularity``: ascending interaction count, most popular items eliminated last;
#: ``natural``: the item index order.
REORDERING_METHODS = ("colamd", "amd", "popularity", "natural")


def _check_reordering(value) -> str:
    method = getattr(value, "value", value)  # accept enum members such as sansa's ReorderingMethod
    if not isinstance(method, str) or method.lower() not in REORDERING_METHODS:
        raise ValueError(
            f"reordering_method must be one of {', '.join(REORDERING_METHODS)}; got {value!r}"
        )
    return method.lower()


def _check_real(name: str, value, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number; got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return float(value)


@dataclass
class CHOLMODGramianFactorizerConfig:
    """Exact supernodal Cholesky (CHOLMOD), then keep the largest entries down to the density.

    Parameters
    ----------
    reordering_method : str, default "colamd"
        Item ordering applied before factorizing, one of :data:`REORDERING_METHODS`.
        COLAMD measured best for CHOLMOD (a popularity order doubles the fill).
    """

    reordering_method: str = "colamd"
    factorization_method: ClassVar[str] = "CHOLMOD"

    def __post_init__(self) -> None:
        self.reordering_method = _check_reordering(self.reordering_method)


@dataclass
class ICFGramianFactorizerConfig:
    """Incomplete Cholesky factorization with a non-zero budget (left-looking, numba).

    Parameters
    ----------
    factorization_shift_step : float, default 1e-3
        When a pivot is not positive, the factorization restarts with
        ``l2 + step * multiplier**attempt`` on the diagonal.
    factorization_shift_multiplier : float, default 2.0
        Growth factor of that shift between attempts.
    reordering_method : str, default "popularity"
        Item ordering, one of :data:`REORDERING_METHODS`. Ascending popularity ranked better
        than COLAMD with ICF on every dataset measured and costs nothing to compute.
    """

    factorization_shift_step: float = 1e-3
    factorization_shift_multiplier: float = 2.0
    reordering_method: str = "popularity"
    factorization_method: ClassVar[str] = "ICF"

    def __post_init__(self) -> None:
        self.factorization_shift_step = _check_real(
            "factorization_shift_step", self.factorization_shift_step, positive=True
        )
        self.factorization_shift_multiplier = _check_real(
            "factorization_shift_multiplier", self.factorization_shift_multiplier, minimum=1.0
        )
        self.reordering_method = _check_reordering(self.reordering_method)


@dataclass
class UMRUnitLowerTriangleInverterConfig:
    """Uniform Minimal Residual approximate inverse of the unit lower triangular factor.

    Parameters
    ----------
    scans : int, default 1
        Passes over all columns (in blocks); in scan ``s`` columns whose normalised residual is
        below ``10**max(-s-1, log_norm_threshold)`` are skipped.
    finetune_steps : int, default 10
        Steps that update the columns with the largest residuals.
    log_norm_threshold : float, default -7
        Floor of the skip threshold's exponent.
    """

    scans: int = 1
    finetune_steps: int = 10
    log_norm_threshold: float = -7.0
    approximate_inverse_method: ClassVar[str] = "UMR"

    def __post_init__(self) -> None:
        from dask_rec.validation import check_int  # lazily: configs stay importable without SciPy

        self.scans = check_int(self.scans, "scans", 0)
        self.finetune_steps = check_int(self.finetune_steps, "finetune_steps", 0)
        self.log_norm_threshold = _check_real("log_norm_threshold", self.log_norm_threshold)


@dataclass
class ExactUnitLowerTriangleInverterConfig:
    """Exact inverse by triangular solves of ``L M = I``, then the same global pruning.

    The ground truth for tests and a sound choice for small catalogs (its cost grows with the
    inverse's fill, which is dense in general).
    """

    approximate_inverse_method: ClassVar[str] = "EXACT"


FactorizerConfig = Union[CHOLMODGramianFactorizerConfig, ICFGramianFactorizerConfig]
InverterConfig = Union[UMRUnitLowerTriangleInverterConfig, ExactUnitLowerTriangleInverterConfig]

_FACTORIZERS = {c.factorization_method: c for c in (CHOLMODGramianFactorizerConfig, ICFGramianFactorizerConfig)}
_INVERTERS = {
    c.approximate_inverse_method: c
    for c in (UMRUnitLowerTriangleInverterConfig, ExactUnitLowerTriangleInverterConfig)
}


@dataclass
class SANSAConfig:
    """Configuration of a SANSA model (field names as in the reference ``sansa.SANSAConfig``).

    Parameters
    ----------
    l2 : float, default 20.0
        L2 regularisation λ added to the Gramian's diagonal. Must be > 0.
    weight_matrix_density : float, default 5e-3
        Target density δ of each weight matrix (W1 and W2 hold about δ·n² non-zeros each),
        in (0, 1].
    gramian_factorizer_config : CHOLMODGramianFactorizerConfig or ICFGramianFactorizerConfig
        How to factor the (reordered, regularised) Gramian. Default: ICF.
    lower_triangle_inverter_config : UMRUnitLowerTriangleInverterConfig or ExactUnitLowerTriangleInverterConfig
        How to invert the unit lower triangular factor. Default: UMR.
    nnz_per_item : float, optional
        The budget per item instead of a density: each weight matrix keeps about
        ``nnz_per_item · n_items`` non-zeros, i.e. ``δ = nnz_per_item / n_items``. When set it
        replaces ``weight_matrix_density`` (a density of 5e-3 is 5 billion entries at a
        million items; 50 per item is 50 million). See :meth:`density_for`.
    """

    l2: float = 20.0
    weight_matrix_density: float = 5e-3
    gramian_factorizer_config: FactorizerConfig = field(default_factory=ICFGramianFactorizerConfig)
    lower_triangle_inverter_config: InverterConfig = field(default_factory=UMRUnitLowerTriangleInverterConfig)
    nnz_per_item: float | None = None

    def __post_init__(self) -> None:
        self.l2 = _check_real("l2", self.l2, positive=True)
        if self.nnz_per_item is not None:
            self.nnz_per_item = _check_real("nnz_per_item", self.nnz_per_item, positive=True)
        density = _check_real("weight_matrix_density", self.weight_matrix_density)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"weight_matrix_density must be in (0, 1]; got {self.weight_matrix_density!r}")
        self.weight_matrix_density = density
        if not isinstance(self.gramian_factorizer_config, tuple(_FACTORIZERS.values())):
            raise TypeError(
                "gramian_factorizer_config must be a CHOLMODGramianFactorizerConfig or an "
                f"ICFGramianFactorizerConfig; got {type(self.gramian_factorizer_config).__name__}"
            )
        if not isinstance(self.lower_triangle_inverter_config, tuple(_INVERTERS.values())):
            raise TypeError(
                "lower_triangle_inverter_config must be a UMRUnitLowerTriangleInverterConfig or an "
                f"ExactUnitLowerTriangleInverterConfig; got {type(self.lower_triangle_inverter_config).__name__}"
            )

    def density_for(self, n_items: int) -> float:
        """The target density for ``n_items`` items: ``nnz_per_item / n_items`` when the budget
        is given per item (at most 1), else ``weight_matrix_density``."""
        if self.nnz_per_item is None:
            return self.weight_matrix_density
        return min(1.0, self.nnz_per_item / max(int(n_items), 1))


def config_to_dict(config: SANSAConfig) -> dict:
    """A JSON-able dict of ``config`` that :func:`config_from_dict` turns back into it."""
    out = asdict(config)
    out["gramian_factorizer_config"]["factorization_method"] = config.gramian_factorizer_config.factorization_method
    out["lower_triangle_inverter_config"]["approximate_inverse_method"] = (
        config.lower_triangle_inverter_config.approximate_inverse_method
    )
    return out


def config_from_dict(data: dict) -> SANSAConfig:
    """Rebuild a :class:`SANSAConfig` from :func:`config_to_dict` output (e.g. loaded JSON)."""
    data = dict(data)
    fact = dict(data.pop("gramian_factorizer_config"))
    inv = dict(data.pop("lower_triangle_inverter_config"))
    fact_cls = _FACTORIZERS[fact.pop("factorization_method")]
    inv_cls = _INVERTERS[inv.pop("approximate_inverse_method")]
    return SANSAConfig(
        gramian_factorizer_config=fact_cls(**fact),
        lower_triangle_inverter_config=inv_cls(**inv),
        **data,
    )
