"""CLI options of the models other than SANSA (random, wilson, itemknn), prefixed by model."""

from __future__ import annotations


def add_random_arguments(parser) -> None:
    group = parser.add_argument_group("random (RandomRec)")
    group.add_argument("--random-distribution", choices=("uniform", "popularity"), default="uniform",
                       help="draw items uniformly or with probability ∝ count**alpha (default: uniform)")
    group.add_argument("--random-alpha", type=float, default=1.0, help="exponent of the counts (default: 1)")
    group.add_argument("--random-seed", type=int, default=0, help="seed of the draws (default: 0)")


def random_config_from_args(args):
    from dask_rec.models.popularity import RandomRecConfig

    return RandomRecConfig(distribution=args.random_distribution, alpha=args.random_alpha, seed=args.random_seed)


def add_wilson_arguments(parser) -> None:
    group = parser.add_argument_group("wilson (Wilson lower bound)")
    group.add_argument("--wilson-threshold", type=float, default=1.0,
                       help="entries with value >= this are positive (default: 1, every entry of a binarized store)")
    group.add_argument("--wilson-confidence", type=float, default=0.95, help="confidence of the interval (default: 0.95)")


def wilson_config_from_args(args):
    from dask_rec.models.popularity import WilsonConfig

    return WilsonConfig(threshold=args.wilson_threshold, confidence=args.wilson_confidence)


def add_itemknn_arguments(parser) -> None:
    group = parser.add_argument_group("itemknn (item-item nearest neighbours)")
    group.add_argument("--knn-k", type=int, default=100, help="neighbours per item, itself included (default: 100)")
    group.add_argument("--knn-similarity", choices=("cosine", "jaccard", "tfidf", "bm25"), default="cosine",
                       help="item-item similarity (default: cosine)")
    group.add_argument("--knn-shrinkage", type=float, default=0.0, help="added to the denominator (default: 0)")
    group.add_argument("--knn-k1", type=float, default=1.2, help="BM25 K1 (default: 1.2)")
    group.add_argument("--knn-b", type=float, default=0.75, help="BM25 B (default: 0.75)")


def itemknn_config_from_args(args):
    from dask_rec.models.itemknn import ItemKNNConfig

    return ItemKNNConfig(k=args.knn_k, similarity=args.knn_similarity, shrinkage=args.knn_shrinkage,
                         K1=args.knn_k1, B=args.knn_b)
