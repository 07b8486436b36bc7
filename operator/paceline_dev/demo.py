"""`paceline-dev demo`: apply the heterogeneous example job to the local cluster, follow it, summarise."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from paceline import api
from paceline_dev.localcluster.cluster import LocalCluster, repo_root

NAMESPACE = "paceline-demo"
TERMINAL = ("Succeeded", "Failed")


def equal_split_estimate(workers: Sequence[Mapping[str, Any]], global_batch: int) -> float | None:
    """Samples/s an equal split would reach, from each worker's measured per-sample time (no overhead)."""
    per_sample = []
    for row in workers:
        sps = float(row.get("samplesPerSecond") or 0)
        if sps <= 0 or not row.get("batchShare"):
            return None
        per_sample.append(1.0 / sps)
    share = global_batch / len(per_sample)
    return global_batch / max(c * share for c in per_sample)


def _events(core: client.CoreV1Api, job: Mapping[str, Any]) -> list[Any]:
    """This job's events, not those of an earlier job of the same name (an earlier demo's, unexpired)."""
    meta = job["metadata"]
    selector = f"involvedObject.name={meta['name']}"
    if meta.get("uid"):
        selector += f",involvedObject.uid={meta['uid']}"
    items = core.list_namespaced_event(NAMESPACE, field_selector=selector).items
    return sorted(items, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)


def _view(job: Mapping[str, Any], events: list[Any], elapsed: float) -> Group:
    status = job.get("status") or {}
    plan = status.get("plan") or {}
    throughput = status.get("throughput") or {}
    head = Table.grid(padding=(0, 2))
    head.add_row("phase", f"[bold]{status.get('phase', 'Pending')}[/]", "elapsed", f"{elapsed:.0f} s")
    head.add_row("plan", plan.get("summary", "…"), "assignment", f"v{status.get('assignmentVersion', '-')}")
    head.add_row(
        "throughput",
        f"{throughput.get('samplesPerSecond', '-')} samples/s",
        "efficiency",
        throughput.get("efficiency", "-"),
    )
    workers = Table(title="workers", expand=True)
    for col in ("rank", "node", "GPU", "share", "phase", "samples/s", "speed", "straggler"):
        workers.add_column(col)
    for row in status.get("workers") or []:
        workers.add_row(
            str(row["rank"]),
            row.get("node", ""),
            row.get("gpuProduct", ""),
            str(row.get("batchShare", "")),
            row.get("phase", ""),
            row.get("samplesPerSecond", "-"),
            row.get("relativeSpeed", "-"),
            row.get("straggler", "-"),
        )
    log = Table(title="events", expand=True, show_header=False)
    log.add_column("reason", style="cyan", no_wrap=True)
    log.add_column("message")
    for event in events[-6:]:
        log.add_row(event.reason, event.message)
    return Group(Panel(head, title=f"TrainingJob {job['metadata']['name']}"), workers, log)


def _final_accuracy(state: Path, name: str) -> str | None:
    log = state / "logs" / "pods" / f"{NAMESPACE}_{api.worker_pod_name(name, 0)}.log"
    if not log.exists():
        return None
    found = re.findall(r"held-out accuracy after (\d+) steps: ([0-9.]+)", log.read_text(errors="replace"))
    return f"{found[-1][1]} after {found[-1][0]} steps" if found else None


def run_demo(
    *, job_file: Path | None = None, timeout_s: float = 900.0, console: Console | None = None
) -> int:
    """Apply the example job, follow it live, print a summary; exit code 0 when it succeeded."""
    console = console or Console()
    cluster = LocalCluster(report=lambda m: console.print(f"[cyan]paceline[/] {m}"))
    if "kube-apiserver" not in cluster.running_components():
        console.print("[red]the local cluster is not running: make cluster-up[/]")
        return 1
    job_file = job_file or repo_root() / "examples" / "hetero-job.yaml"
    config.load_kube_config(str(cluster.paths.kubeconfig))
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    name = str(yaml.safe_load(job_file.read_text())["metadata"]["name"])
    cluster.run_kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.run_kubectl(
        "delete", "tj", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", check=False
    )
    while core.list_namespaced_pod(NAMESPACE, label_selector=f"{api.LABEL_JOB}={name}").items:
        time.sleep(0.5)
    console.print(f"$ kubectl apply -n {NAMESPACE} -f {job_file.relative_to(repo_root())}")
    console.print(cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(job_file)).strip())
    started = time.monotonic()
    job: dict[str, Any] = {"metadata": {"name": name}}
    with Live(console=console, refresh_per_second=2) as live:
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(ApiException):  # keep the last view through an API blip
                found: Any = custom.get_namespaced_custom_object(
                    api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, name
                )
                job = dict(found)
            events = _events(core, job)
            live.update(_view(job, events, time.monotonic() - started))
            if (job.get("status") or {}).get("phase") in TERMINAL:
                break
            time.sleep(1.0)
    status = job.get("status") or {}
    events = _events(core, job)
    _summary(console, job, events, time.monotonic() - started, _final_accuracy(cluster.paths.state, name))
    return 0 if status.get("phase") == "Succeeded" else 1


def _summary(
    console: Console, job: Mapping[str, Any], events: list[Any], elapsed: float, acc: str | None
) -> None:
    status = job.get("status") or {}
    plan = status.get("plan") or {}
    rebalances = [e for e in events if e.reason == "Rebalanced"]
    stragglers = [e for e in events if e.reason == "StragglerDetected"]
    planned = next((e.message for e in events if e.reason == "Planned"), "")
    table = Table.grid(padding=(0, 2))
    table.add_row(
        "result",
        f"[bold]{status.get('phase')}[/] in {elapsed:.0f} s" + (f"; held-out accuracy {acc}" if acc else ""),
    )
    table.add_row("plan", f"{plan.get('strategy', '')}")
    table.add_row("why", planned)
    for e in rebalances:
        table.add_row("rebalanced", e.message)
    for e in stragglers:
        table.add_row("straggler", e.message)
    if not rebalances:
        table.add_row("rebalanced", "never (the planned shares were already within the gain threshold)")
    throughput = status.get("throughput") or {}
    achieved = float(throughput.get("samplesPerSecond") or 0)
    equal = equal_split_estimate(
        status.get("workers") or [], int(job.get("spec", {}).get("globalBatchSize") or 0)
    )
    if achieved and equal:
        table.add_row(
            "throughput",
            f"{achieved:.1f} samples/s with Paceline's shares vs ≈{equal:.1f} with an equal split "
            f"({achieved / equal:.2f}×; equal split estimated from each worker's measured speed); "
            f"efficiency {throughput.get('efficiency', '-')} of the cluster's ideal",
        )
    console.print(Panel(table, title="summary"))
