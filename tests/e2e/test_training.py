"""Real training on the local cluster: a straggler schedule kicks in, Paceline detects it, rebalances the
batch shares live, and the job succeeds. Worker and operator metrics are scraped over HTTP."""

from __future__ import annotations

import json
import urllib.request

import pytest
from e2e_support import Kube, promql, wait_for
from prometheus_client.parser import text_string_to_metric_families

from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e


def _metrics(url: str) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:  # the worker is still importing torch: not listening yet
        return {}
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_straggler_is_detected_and_rebalanced_then_job_succeeds(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    doc = {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "digits"},
        "spec": {
            "replicas": {"min": 2, "max": 2},
            "gpusPerWorker": 4,  # one worker per T4 node: gpu-t4-0 and gpu-t4-1 (the straggler)
            "globalBatchSize": 64,
            "placement": {"pools": ["t4"]},
            "balancing": {"cooldownSeconds": 5, "halfLifeSeconds": 10},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "paceline/worker:dev",
                            "command": ["python", "examples/train_digits.py", "--epochs", "30"],
                            "env": [{"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.02"}],
                        }
                    ]
                }
            },
        },
    }
    assert kube.apply(doc, namespace).returncode == 0
    job = wait_for(
        "workers running",
        lambda: (
            (j := kube.get("tj", "digits", namespace)) and j.get("status", {}).get("phase") == "Running" and j
        ),
        timeout_s=120,
    )
    rows = {row["rank"]: row for row in job["status"]["workers"]}
    slow_rank = next(r for r, row in rows.items() if row["node"] == "gpu-t4-1")

    # the workers' own Prometheus endpoints, on their loopback pod IPs
    pods = kube.items("pods", namespace, "paceline.dev/job=digits")
    for pod in pods:
        url = f"http://{pod['status']['podIP']}:9400/metrics"
        steps = wait_for("worker steps", lambda u=url: _metrics(u).get("paceline_worker_steps_total", 0) > 0)
        assert steps
        # what the worker printed, as a user reads it: kubectl logs through kwok's kubelet-like server
        logs = kube.run("logs", pod["metadata"]["name"], "-n", namespace, "--tail", "50").stdout
        assert "launcher" in logs, logs

    def shares_moved_off_the_straggler() -> dict | None:
        reasons = {e["reason"] for e in kube.events(namespace, "digits")}
        control = kube.get("configmap", "digits-control", namespace) or {"data": {}}
        assignment = json.loads(control["data"].get("assignment.json") or "{}")
        moved = assignment.get("batchSizes", [32, 32])[slow_rank] < 32
        return assignment if {"StragglerDetected", "Rebalanced"} <= reasons and moved else None

    assignment = wait_for(
        "StragglerDetected, then shares moved", shares_moved_off_the_straggler, timeout_s=180
    )
    assert assignment["version"] >= 2 and sum(assignment["batchSizes"]) == 64
    status = kube.get("tj", "digits", namespace)["status"]
    assert status["assignmentVersion"] == assignment["version"]
    assert {row["rank"]: row["batchShare"] for row in status["workers"]}[slow_rank] < 32

    ports = json.loads(cluster.paths.ports_file.read_text())
    operator = _metrics(f"http://127.0.0.1:{ports['operator-metrics']}/metrics")
    assert operator.get("paceline_operator_rebalances_total", 0) >= 1

    # the same numbers through the cluster's Prometheus (Kubernetes pod discovery, loopback pod IPs)
    job = f'trainingjob_namespace="{namespace}", trainingjob="digits"'

    def per_worker() -> dict[str, float] | None:
        rows = promql(cluster, f'paceline_worker_samples_per_second{{namespace="{namespace}"}}')
        speeds = {r["metric"]["node"]: float(r["value"][1]) for r in rows}
        return speeds if len(speeds) == 2 and all(v > 0 for v in speeds.values()) else None

    speeds = wait_for("per-worker samples/s in Prometheus", per_worker, timeout_s=60, interval_s=2)
    assert set(speeds) == {"gpu-t4-0", "gpu-t4-1"}
    shares = f'paceline_worker_batch_size{{namespace="{namespace}", trainingjob="digits"}}'
    # the shares still sum to the global batch (scrapes of the two pods may straddle a switch: wait)
    wait_for(
        "shares summing to 64", lambda: promql(cluster, f"sum({shares}) == 64"), timeout_s=60, interval_s=2
    )
    rebalances = wait_for(
        "rebalances in Prometheus",
        lambda: promql(cluster, f"paceline_operator_rebalances_total{{{job}}} >= 1"),
        timeout_s=60,
        interval_s=2,
    )
    assert rebalances[0]["metric"]["job"] == "paceline-operator"
    efficiency = wait_for(
        "efficiency in Prometheus",
        lambda: promql(cluster, f"paceline_operator_efficiency_ratio{{{job}}}"),
        timeout_s=60,
        interval_s=2,
    )
    assert 0.2 < float(efficiency[0]["value"][1]) <= 1.05
    up = wait_for(  # one scrape may fail on a loaded machine: wait for both targets up
        "both workers up in Prometheus",
        lambda: (
            (rows := promql(cluster, f'up{{job="kubernetes-pods", namespace="{namespace}"}}'))
            and len(rows) == 2
            and all(r["value"][1] == "1" for r in rows)
            and rows
        ),
        timeout_s=120,
        interval_s=2,
    )
    assert all(r["metric"]["instance"].startswith("127.") for r in up)  # loopback pod IPs only

    wait_for(
        "Succeeded",
        lambda: kube.get("tj", "digits", namespace)["status"].get("phase") == "Succeeded",
        timeout_s=300,
        interval_s=2,
    )
