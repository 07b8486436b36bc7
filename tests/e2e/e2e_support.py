"""Helpers for e2e tests: kubectl as a user runs it, polling, TrainingJob documents."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paceline_dev.jobs import training_job
from paceline_dev.localcluster.cluster import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _tp_pods import global_batches, sample_accounting, step_records

__all__ = [
    "Kube",
    "busy_static_pods",
    "checkpoint_records",
    "global_batches",
    "promql",
    "sample_accounting",
    "training_job",
    "wait_for",
]


class Kube:
    """kubectl as a user runs it, against the test cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def run(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = self.cluster.run_kubectl(*args, input_text=input_text, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, doc: dict[str, Any] | str, namespace: str) -> subprocess.CompletedProcess[str]:
        text = doc if isinstance(doc, str) else json.dumps(doc)  # JSON: kubectl's YAML 1.1 reads `n` as false
        return self.run("apply", "-n", namespace, "-f", "-", input_text=text, check=False)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        proc = self.run(*args, check=False)
        if proc.returncode != 0:
            return None
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = json.loads(self.run(*args).stdout)["items"]
        return items

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.items("events", namespace)
            if e["involvedObject"].get("kind") == "TrainingJob" and e["involvedObject"]["name"] == name
        ]


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 90.0, interval_s: float = 0.5) -> Any:
    """Poll until check() returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def busy_static_pods(kube: Kube, pool: str) -> list[str]:
    """Live pods on the pool's static nodes (not those Karpenter added): e.g. of earlier tests whose
    namespaces are still being deleted."""
    nodes = {
        n["metadata"]["name"]
        for n in kube.items("nodes", "default", f"paceline.dev/pool={pool}")
        if "karpenter.sh/nodepool" not in n["metadata"]["labels"]
    }
    pods = json.loads(kube.run("get", "pods", "-A", "-o", "json").stdout)["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if p["spec"].get("nodeName") in nodes and p["status"].get("phase") not in ("Succeeded", "Failed")
    ]


def promql(cluster: LocalCluster, query: str, **params: str) -> list[dict[str, Any]]:
    """Run a PromQL query through the local Prometheus' HTTP API (instant, or a range with start/end/step);
    an error answer fails the test with Prometheus' message."""
    import urllib.error
    import urllib.parse
    import urllib.request

    route = "query_range" if "start" in params else "query"
    url = f"{cluster.prometheus_url}/api/v1/{route}?" + urllib.parse.urlencode({"query": query, **params})
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        doc = json.loads(err.read() or b"{}")
    if doc.get("status") != "success":
        raise AssertionError(f"PromQL {query!r} failed: {doc.get('errorType')}: {doc.get('error')}")
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def checkpoint_records(cluster: LocalCluster, namespace: str, job: str) -> list[dict[str, Any]]:
    """The per-step records bench/_tp_worker.py ranks write to the job's checkpoint volume (the process
    runtime maps a claim to a directory of the cluster's state)."""
    return step_records(cluster.paths.state / "volumes" / namespace / f"{job}-checkpoint" / job / "records")
