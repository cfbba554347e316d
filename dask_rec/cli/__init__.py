"""The ``dask-rec`` command line: one module per subcommand, each thin over the Python API.

Each subcommand module defines ``add_parser(subparsers)`` (registers its arguments and sets
``func``) and ``run(args) -> int``. Errors a user can fix (bad paths, bad values) are printed as
one line and mapped to exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "SUBCOMMANDS"]

SUBCOMMANDS = ("ingest", "fit", "recommend", "evaluate", "tune", "demo", "generate")

EXIT_USAGE = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-rec",
        description="Train and serve SANSA recommenders on Dask, out of core.",
        epilog="Run 'dask-rec COMMAND --help' for a command's options. "
        "Typical flow: generate (or bring a log) -> ingest -> fit -> evaluate -> recommend.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output: -v adds Dask's own INFO messages, -vv debug")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"dask_rec.cli.{name}")
        except ModuleNotFoundError as exc:  # subcommand not built yet
            if exc.name != f"dask_rec.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every cluster-using subcommand shares."""
    group = parser.add_argument_group("cluster")
    group.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running Dask scheduler (tcp://host:8786); "
                       "default: start a LocalCluster on this machine")
    group.add_argument("--workers", type=_workers, default=None, metavar="N",
                       help="workers of the LocalCluster started when no --scheduler is given (default: one per "
                       "core; at most 4 per core)")
    group.add_argument("--tls-ca-file", default=None, help="CA certificate for a TLS scheduler")
    group.add_argument("--tls-cert", default=None, help="client certificate for a TLS scheduler")
    group.add_argument("--tls-key", default=None, help="client private key for a TLS scheduler")


def _workers(text: str) -> int:
    """``--workers``: an integer >= 1 (the upper bound is checked against the machine when a cluster starts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {value}")
    return value


def cluster_from_args(args):
    """A :func:`dask_rec.cluster.client_context` for the cluster options of ``args``."""
    from dask_rec.cluster import client_context

    security = None
    tls = {"--tls-ca-file": getattr(args, "tls_ca_file", None), "--tls-cert": getattr(args, "tls_cert", None),
           "--tls-key": getattr(args, "tls_key", None)}
    if any(tls.values()) and not all(tls.values()):
        missing = ", ".join(k for k, v in tls.items() if not v)
        raise ValueError(f"a TLS scheduler needs --tls-ca-file, --tls-cert and --tls-key together; missing {missing}")
    if all(tls.values()):
        from distributed.security import Security

        security = Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert,
                            tls_client_key=args.tls_key, require_encryption=True)
    if args.scheduler is None:
        from dask_rec.cluster import check_workers

        check_workers(args.workers)  # before any work, not when the cluster starts
    # a failed task is reported once, as our one-line error: the workers' own error logs only with -v
    quiet = logging.CRITICAL if getattr(args, "verbose", 0) == 0 else logging.WARNING
    return client_context(scheduler=args.scheduler, n_workers=args.workers, security=security, silence_logs=quiet)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.INFO, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose == 0:  # Dask's own start/stop chatter only with -v
        import dask.config

        dask.config.set({"logging.distributed": "warning"})  # read when distributed is imported
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from dask_rec.exceptions import InsufficientMemoryError

    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"dask-rec {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except InsufficientMemoryError as exc:
        print(f"dask-rec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if type(exc).__name__ != "KilledWorker":  # distributed's: a task that kept killing its workers
            raise
        print(f"dask-rec {args.command}: error: task {exc.task!r} kept killing the workers that ran it (most likely "
              "out of memory); give the workers more memory (--memory-limit, fewer threads per worker)",
              file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # the scheduler cannot be reached, TLS refused, ...
        if "Timed out" in str(exc) or "connect" in str(exc).lower() or type(exc).__module__.startswith("distributed"):
            print(f"dask-rec {args.command}: error: cannot reach the Dask scheduler: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
