"""Model options shared by ``dask-rec fit``, ``evaluate`` and ``demo``."""

from __future__ import annotations

import argparse

from dask_rec.config import REORDERING_METHODS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--l2", type=float, default=20.0, help="L2 regularisation λ (default: 20)")
    group.add_argument("--density", type=float, default=5e-3, dest="weight_matrix_density",
                       help="target density of each weight matrix, in (0, 1] (default: 5e-3)")
    group.add_argument("--nnz-per-item", type=float, default=None, metavar="N",
                       help="budget per item instead of --density: each weight matrix keeps about "
                            "N x n_items non-zeros (e.g. 50 for a million items)")
    group.add_argument("--factorizer", choices=("icf", "cholmod"), default="icf",
                       help="icf: incomplete Cholesky with a budget (default); cholmod: exact, then pruned")
    group.add_argument("--ordering", choices=REORDERING_METHODS, default=None,
                       help="item ordering (default: popularity for icf, colamd for cholmod)")
    group.add_argument("--inverter", choices=("umr", "exact"), default="umr",
                       help="approximate inverse of the factor: umr (default) or exact triangular solves")
    group.add_argument("--scans", type=int, default=1, help="UMR scans (default: 1)")
    group.add_argument("--finetune-steps", type=int, default=10, help="UMR finetune steps (default: 10)")


def config_from_args(args):
    from dask_rec.config import (
        CHOLMODGramianFactorizerConfig,
        ExactUnitLowerTriangleInverterConfig,
        ICFGramianFactorizerConfig,
        SANSAConfig,
        UMRUnitLowerTriangleInverterConfig,
    )

    ordering = {} if args.ordering is None else {"reordering_method": args.ordering}
    factorizer = (ICFGramianFactorizerConfig(**ordering) if args.factorizer == "icf"
                  else CHOLMODGramianFactorizerConfig(**ordering))
    inverter = (UMRUnitLowerTriangleInverterConfig(scans=args.scans, finetune_steps=args.finetune_steps)
                if args.inverter == "umr" else ExactUnitLowerTriangleInverterConfig())
    return SANSAConfig(l2=args.l2, weight_matrix_density=args.weight_matrix_density,
                       gramian_factorizer_config=factorizer, lower_triangle_inverter_config=inverter,
                       nnz_per_item=getattr(args, "nnz_per_item", None))
