"""The `paceline` command: the operator, the planner and `top`. (The local cluster, the demo and the process
runtime are dev tools: `paceline-dev`, package paceline_dev.)"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from paceline.planner.cli import add_commands as add_planner_commands
from paceline.top import add_command as add_top_command


def _operator(args: argparse.Namespace) -> int:
    import kopf

    import paceline.kopf_app  # noqa: F401 - registers the handlers and indices
    from paceline import operator_metrics

    logging.basicConfig(
        level=os.environ.get("PACELINE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    patterns = [ns for ns in args.namespace or () if set(ns) & set("*?[]!,")]
    if patterns:
        sys.exit(f"paceline operator: --namespace takes namespace names, not patterns: {', '.join(patterns)}")
    if args.metrics_port:
        operator_metrics.serve(args.metrics_address, args.metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(pod_namespaces=None if args.all_namespaces else tuple(args.namespace)),
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="paceline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    operator = sub.add_parser(
        "operator", help="run the operator (uses $KUBECONFIG or in-cluster credentials)"
    )
    scope = operator.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    operator.add_argument(
        "--liveness", default=None, help="health endpoint URL, e.g. http://127.0.0.1:8080/healthz"
    )
    operator.add_argument(
        "--metrics-address", default="127.0.0.1", help="bind address of the operator's /metrics"
    )
    operator.add_argument(
        "--metrics-port", type=int, default=9401, help="port of the operator's /metrics (0: off)"
    )
    operator.set_defaults(func=_operator)
    add_planner_commands(sub)
    add_top_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paceline` command."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
