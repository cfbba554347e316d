"""CLI options of the Gramian models EASE, SLIM and AssociationRules, prefixed by model."""

from __future__ import annotations


def add_ease_arguments(parser) -> None:
    group = parser.add_argument_group("ease (dense EASE)")
    group.add_argument("--ease-l2", type=float, default=200.0, help="λ added to the Gramian's diagonal (default: 200)")
    group.add_argument("--ease-dtype", choices=("float32", "float64"), default="float32",
                       help="precision of the dense solve and of B (default: float32, half the memory)")


def ease_config_from_args(args):
    from dask_rec.models.ease import EASEConfig

    return EASEConfig(l2=args.ease_l2, dtype=args.ease_dtype)


def add_slim_arguments(parser) -> None:
    group = parser.add_argument_group("slim (elastic net per item on the Gramian)")
    group.add_argument("--slim-l1", type=float, default=2.0,
                       help="L1 penalty of ½‖x_j − Xw‖² + l1·Σw + ½·l2·‖w‖² (default: 2)")
    group.add_argument("--slim-l2", type=float, default=50.0, help="L2 penalty (default: 50)")
    group.add_argument("--slim-tol", type=float, default=1e-4, help="relative tolerance of a sweep (default: 1e-4)")
    group.add_argument("--slim-max-iter", type=int, default=100, help="full sweeps at most (default: 100)")
    group.add_argument("--slim-topk", type=int, default=0, help="weights kept per item (default: 0, all)")


def slim_config_from_args(args):
    from dask_rec.models.slim import SLIMConfig

    return SLIMConfig(l1=args.slim_l1, l2=args.slim_l2, tol=args.slim_tol, max_iter=args.slim_max_iter,
                      topk=args.slim_topk)


def add_rules_arguments(parser) -> None:
    group = parser.add_argument_group("rules (association rules)")
    group.add_argument("--rules-k", type=int, default=100, help="rules kept per antecedent item (default: 100)")
    group.add_argument("--rules-metric", choices=("confidence", "lift", "support"), default="confidence",
                       help="metric that ranks and scores the rules (default: confidence)")
    group.add_argument("--rules-min-support", type=float, default=0.0,
                       help="drop rules with a smaller share of users (default: 0)")
    group.add_argument("--rules-min-confidence", type=float, default=0.0,
                       help="drop rules with a smaller confidence (default: 0)")


def rules_config_from_args(args):
    from dask_rec.models.rules import AssociationRulesConfig

    return AssociationRulesConfig(k=args.rules_k, metric=args.rules_metric, min_support=args.rules_min_support,
                                  min_confidence=args.rules_min_confidence)
