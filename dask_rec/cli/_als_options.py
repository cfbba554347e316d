"""CLI options of ALS (``--als-factors`` ...), for ``dask-rec fit --model als`` and ``evaluate --models als``."""

from __future__ import annotations


def add_als_arguments(parser) -> None:
    from dask_rec.models.als import ALSConfig

    d = ALSConfig()
    group = parser.add_argument_group("als (implicit-feedback matrix factorization)")
    group.add_argument("--als-factors", type=int, default=d.factors, help=f"latent factors (default: {d.factors})")
    group.add_argument("--als-regularization", type=float, default=d.regularization,
                       help=f"L2 penalty on the factors (default: {d.regularization:g})")
    group.add_argument("--als-alpha", type=float, default=d.alpha,
                       help=f"confidence 1 + alpha * value (default: {d.alpha:g}; implicit's alpha is ours + 1)")
    group.add_argument("--als-iterations", type=int, default=d.iterations,
                       help=f"alternations (default: {d.iterations})")
    group.add_argument("--als-seed", type=int, default=d.seed, help=f"seed of the initial factors (default: {d.seed})")
    group.add_argument("--als-solver", choices=("cg", "cholesky"), default=d.solver,
                       help=f"per-row solver (default: {d.solver})")
    group.add_argument("--als-cg-steps", type=int, default=d.cg_steps,
                       help=f"conjugate-gradient steps per row and half-iteration (default: {d.cg_steps})")


def als_config_from_args(args):
    from dask_rec.models.als import ALSConfig

    return ALSConfig(factors=args.als_factors, regularization=args.als_regularization, alpha=args.als_alpha,
                     iterations=args.als_iterations, seed=args.als_seed, solver=args.als_solver,
                     cg_steps=args.als_cg_steps)
