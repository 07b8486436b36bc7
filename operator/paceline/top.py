"""`paceline top`: a live view of the TrainingJobs in a cluster — each job's phase, plan, throughput,
efficiency and momentum, and per worker its node, GPU type, batch share, samples/s, relative speed and
straggler state — read from the jobs' status (what the operator measured), refreshed every few seconds."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

STRAGGLER_STYLE = {"Healthy": "green", "Transient": "yellow", "Persistent": "bold red"}
PHASE_STYLE = {"Running": "green", "Succeeded": "cyan", "Failed": "bold red", "Restarting": "yellow"}
BAR = 20  # characters of the widest share bar


def _bar(share: int, widest: int) -> str:
    filled = round(BAR * share / widest) if widest else 0
    return "█" * filled + "·" * (BAR - filled)


def _momentum(status: Mapping[str, Any]) -> str:
    m = status.get("momentum") or {}
    if not m:
        return ""
    return f"{m.get('explicit', '?')} + {m.get('implicit', '?')} → {m.get('total', '?')}"


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per job: what `kubectl get tj -o wide` shows, plus efficiency and momentum."""
    table = Table(title="TrainingJobs", title_justify="left", expand=False)
    for column in ("namespace/name", "mode", "phase", "workers", "plan", "samples/s", "efficiency"):
        table.add_column(column, justify="right" if column in ("samples/s", "efficiency") else "left")
    table.add_column("momentum explicit + implicit → total")
    table.add_column("assignment", justify="right")
    for job in jobs:
        meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
        phase = str(status.get("phase") or "Pending")
        throughput = status.get("throughput") or {}
        table.add_row(
            f"{meta['namespace']}/{meta['name']}",
            str(spec.get("mode") or "Synchronous"),
            Text(phase, style=PHASE_STYLE.get(phase, "")),
            f"{status.get('workersReady', 0)}/{len(status.get('workers') or [])}",
            str((status.get("plan") or {}).get("summary") or ""),
            str(throughput.get("samplesPerSecond") or ""),
            str(throughput.get("efficiency") or ""),
            _momentum(status),
            f"v{status['assignmentVersion']}" if status.get("assignmentVersion") else "",
        )
    return table


def workers_table(job: Mapping[str, Any]) -> Table:
    """One row per worker of a job: where it runs, its share of the batch (as a bar), its speed."""
    meta, status = job["metadata"], job.get("status") or {}
    rows = sorted(status.get("workers") or [], key=lambda r: int(r.get("rank", 0)))
    widest = max((int(r.get("batchShare") or 0) for r in rows), default=0)
    table = Table(title=f"{meta['namespace']}/{meta['name']} workers", title_justify="left")
    for column in ("rank", "pod", "node", "GPU", "share", "", "samples/s", "speed", "straggler"):
        table.add_column(
            column, justify="right" if column in ("rank", "share", "samples/s", "speed") else "left"
        )
    for row in rows:
        share = int(row.get("batchShare") or 0)
        straggler = str(row.get("straggler") or "")
        table.add_row(
            str(row.get("rank", "")),
            str(row.get("pod", "")),
            str(row.get("node", "")),
            str(row.get("gpuProduct", "")),
            str(share),
            Text(_bar(share, widest), style="blue"),
            str(row.get("samplesPerSecond") or ""),
            f"{row['relativeSpeed']}×" if row.get("relativeSpeed") else "",
            Text(straggler, style=STRAGGLER_STYLE.get(straggler, "")),
        )
    return table


def view(jobs: Sequence[Mapping[str, Any]], *, now: float | None = None) -> RenderableType:
    """The whole screen for a list of TrainingJobs (pure: the tests render it)."""
    ordered = sorted(jobs, key=lambda j: (j["metadata"]["namespace"], j["metadata"]["name"]))
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    if not ordered:
        return Text(f"{stamp}  no TrainingJobs")
    parts: list[RenderableType] = [Text(f"{stamp}  {len(ordered)} TrainingJob(s)"), jobs_table(ordered)]
    parts += [workers_table(job) for job in ordered if (job.get("status") or {}).get("workers")]
    return Group(*parts)


def run_top(
    *,
    fetch: Callable[[], list[dict[str, Any]]],
    interval_s: float,
    once: bool,
    console: Console | None = None,
) -> int:
    """Refresh the view every `interval_s` until Ctrl-C (or print it once)."""
    console = console or Console()
    if once:
        console.print(view(fetch()))
        return 0
    with Live(view(fetch()), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval_s)
                live.update(view(fetch()))
        except KeyboardInterrupt:
            pass
    return 0


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`paceline top [-n NAMESPACE] [--interval S] [--once]`."""
    top = subparsers.add_parser("top", help="live view of TrainingJobs and their workers ($KUBECONFIG)")
    top.add_argument("--namespace", "-n", default=None, help="only this namespace (default: all)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print the view once and exit")
    top.set_defaults(func=_top)


def _top(args: argparse.Namespace) -> int:
    from paceline.adapters import kube

    return run_top(fetch=lambda: kube.list_jobs(args.namespace), interval_s=args.interval, once=args.once)
