"""The `paceline-dev` command: the local cluster, the demo and the process runtime (dev/test only)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def _report(message: str) -> None:
    console.print(f"[bold cyan]paceline[/] {message}")


def _cluster(args: argparse.Namespace) -> int:
    from paceline_dev.localcluster.binaries import BuildError, ensure_binaries
    from paceline_dev.localcluster.cluster import ClusterError, LocalCluster

    cluster = LocalCluster(args.state, config_path=args.config, report=_report)
    try:
        if args.action == "up":
            cluster.up(operator=not args.no_operator)
        elif args.action == "down":
            cluster.down(purge=args.purge)
        elif args.action == "build":
            ensure_binaries(_report)
        else:
            running = cluster.running_components()
            for name in running:
                console.print(f"  {name}: running")
            if "prometheus" in running:
                console.print(
                    f"  Prometheus: {cluster.prometheus_url} (PromQL: {cluster.prometheus_url}/graph)"
                )
            if not running:
                console.print("  not running")
            return 0 if running else 1
    except (ClusterError, BuildError) as err:
        console.print(f"[bold red]error:[/] {err}")
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from paceline_dev.demo import run_demo

    return run_demo(job_file=args.file, timeout_s=args.timeout)


def _runtime(args: argparse.Namespace) -> int:
    from paceline_dev.localcluster.runtime import run_runtime

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_runtime(kubeconfig=args.kubeconfig, state=args.state, workdir=args.workdir)


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="paceline-dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    cluster = sub.add_parser("cluster", help="the local cluster (real control plane, fake GPU nodes)")
    cluster.add_argument("action", choices=["up", "down", "status", "build"])
    cluster.add_argument("--state", type=Path, default=None, help="state directory (default: ./.paceline)")
    cluster.add_argument(
        "--config", type=Path, default=None, help="node-pool YAML (default: the packaged one)"
    )
    cluster.add_argument("--no-operator", action="store_true", help="up: do not start the operator")
    cluster.add_argument("--purge", action="store_true", help="down: also delete the state directory")
    cluster.set_defaults(func=_cluster)

    demo = sub.add_parser(
        "demo", help="apply the heterogeneous example job to the local cluster and follow it"
    )
    demo.add_argument(
        "-f", "--file", type=Path, default=None, help="TrainingJob YAML (default: examples/hetero-job.yaml)"
    )
    demo.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    demo.set_defaults(func=_demo)

    runtime = sub.add_parser("runtime", help="run pods bound to fake nodes as local processes")
    runtime.add_argument("--kubeconfig", type=Path, required=True)
    runtime.add_argument("--state", type=Path, required=True)
    runtime.add_argument("--workdir", type=Path, required=True, help="working directory of pod processes")
    runtime.set_defaults(func=_runtime)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paceline-dev` command."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
