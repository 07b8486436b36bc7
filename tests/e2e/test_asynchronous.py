"""Asynchronous mode on the local cluster: a parameter server plus workers, measured staleness turned into
implicit momentum, explicit momentum retuned live when the worker count changes; a parameter-server pod
deleted mid-run comes back from its checkpoint and the job still succeeds."""

from __future__ import annotations

import json
import re
import urllib.request
from decimal import Decimal

import pytest
from e2e_support import Kube, promql, wait_for
from prometheus_client.parser import text_string_to_metric_families

from paceline.api.spec import parse_momentum_tuning
from paceline.momentum.estimator import StalenessEstimator
from paceline.momentum.policy import explicit_momentum
from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e


def _job(replicas: int) -> dict:
    return {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "async"},
        "spec": {
            "mode": "Asynchronous",
            "replicas": {"min": replicas, "max": replicas},
            "globalBatchSize": 96,
            "placement": {"pools": ["a100"]},
            "optimizer": {"learningRate": "0.05", "momentum": "0.9"},
            "asynchronous": {"parameterServers": 1},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "paceline/worker:dev",
                            "command": ["python", "examples/train_digits_async.py", "--epochs", "200"],
                            "env": [{"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.01"}],
                        }
                    ]
                }
            },
        },
    }


def _momentum(kube: Kube, namespace: str) -> dict | None:
    job = kube.get("tj", "async", namespace) or {}
    return (job.get("status") or {}).get("momentum")


def test_staleness_sets_momentum_and_a_resize_retunes_it(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    assert kube.apply(_job(4), namespace).returncode == 0
    # the first passes may see only the first updates (τ = 0 while other workers still start): wait for the
    # measured staleness of 4 asynchronous workers
    momentum = wait_for(
        "status.momentum with measured staleness",
        lambda: (m := _momentum(kube, namespace)) and float(m["implicit"]) > 0.3 and m,
        timeout_s=150,
    )
    explicit, implicit, total = (float(momentum[k]) for k in ("explicit", "implicit", "total"))
    assert abs(1 - (1 - explicit) * (1 - implicit) - total) < 2e-3  # the momenta compose multiplicatively
    # 4 asynchronous workers: implicit ≈ 1 − 1/4; explicit in [floor, target] (a small measured curvature
    # allows the target itself)
    assert -0.3 <= explicit <= 0.9 and implicit > 0.3

    ps = kube.items("pods", namespace, "paceline.dev/role=ps")
    assert len(ps) == 1
    assert "nvidia.com/gpu" not in (ps[0]["spec"]["containers"][0].get("resources") or {}).get("limits", {})

    def update_counts() -> list[float] | None:
        with urllib.request.urlopen(f"http://{ps[0]['status']['podIP']}:9400/metrics", timeout=5) as resp:
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        staleness = families["paceline_ps_update_staleness"]
        counts = [s.value for s in staleness.samples if s.name.endswith("_count")]
        return counts if len(counts) == 4 and all(c > 0 for c in counts) else None

    # every worker's updates, each with its τ (the last worker to start may still be importing torch)
    wait_for("updates from all 4 workers", update_counts, timeout_s=120)

    # momentum in force through the cluster's Prometheus: the operator's components and the shard's value
    job = f'trainingjob_namespace="{namespace}", trainingjob="async"'

    def components() -> dict[str, float] | None:
        rows = promql(cluster, f"paceline_operator_momentum{{{job}}}")
        found = {r["metric"]["component"]: float(r["value"][1]) for r in rows}
        return found if len(found) == 3 else None

    scraped = wait_for("momentum components in Prometheus", components, timeout_s=60, interval_s=2)
    composed = 1 - (1 - scraped["explicit"]) * (
        1 - scraped["implicit"]
    )  # the momenta compose multiplicatively
    assert abs(composed - scraped["total"]) < 2e-3
    assert scraped["implicit"] > 0.3
    shard = wait_for(
        "the shard's momentum in Prometheus",
        lambda: promql(cluster, f'paceline_ps_momentum{{namespace="{namespace}", trainingjob="async"}}'),
        timeout_s=60,
        interval_s=2,
    )
    assert shard[0]["metric"]["role"] == "ps" and -1.0 <= float(shard[0]["value"][1]) < 1.0
    buckets = f'paceline_ps_update_staleness_bucket{{namespace="{namespace}"}}'
    median = f"histogram_quantile(0.5, sum by (le) (rate({buckets}[30s])))"  # needs two scrapes in the window

    def stale() -> list[dict] | None:
        rows = promql(cluster, median)
        return rows if rows and float(rows[0]["value"][1]) > 0 else None

    wait_for("a median staleness above 0 (4 workers: updates are stale)", stale, timeout_s=60, interval_s=2)

    # a worker set change (4 → 2) is a trigger: the explicit momentum is retuned for the new M
    changed = _job(2)
    assert kube.apply(changed, namespace).returncode == 0

    def retuned_for_two() -> list[dict]:  # (events list by name, not by time: later retunes may come first)
        return [
            e
            for e in kube.events(namespace, "async")
            if e["reason"] == "MomentumRetuned"
            and "2 workers" in e["message"]
            and "(workers)" in e["message"]
        ]

    retunes = wait_for("MomentumRetuned for the new worker set", retuned_for_two, timeout_s=150, interval_s=1)
    # the new worker set restarts the estimate from the 2-worker prior (τ geometric with mean 1, implicit
    # 0.5): each such retune must carry the value the policy gives for that prior and the curvature it names
    settings = parse_momentum_tuning({}, target=Decimal("0.9"), learning_rate=Decimal("0.05"))
    prior = StalenessEstimator(half_life_updates=settings.half_life_updates, workers=2).estimate()
    for event in retunes:
        message = event["message"]
        applied = re.search(r"explicit momentum (?:stays |\S+ → )(-?[0-9.]+) \(workers\)", message)
        bound = re.search(r"stable up to (?:curvature ([0-9.e+-]+)|prior curvature)", message)
        assert applied and bound and "implicit 0.500" in message, message
        expected = explicit_momentum(
            target=settings.target,
            learning_rate=settings.learning_rate,
            estimate=prior,
            floor=settings.floor,
            curvature=float(bound.group(1)) if bound.group(1) else None,
        )
        assert abs(float(applied.group(1)) - expected) <= 0.005, (message, expected)
    after = wait_for(
        "status.momentum measured for 2 workers",
        lambda: (m := _momentum(kube, namespace)) and abs(float(m["implicit"]) - 0.5) < 0.2 and m,
        timeout_s=150,
    )
    assert -0.3 <= float(after["explicit"]) <= 0.9
    kube.run("delete", "tj", "async", "-n", namespace)


def _ps_status(pod: dict) -> dict | None:
    """A running PS pod's GET /status (None while it starts or after it stopped)."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or (pod.get("status") or {}).get("phase") != "Running":
        return None
    try:
        with urllib.request.urlopen(f"http://{ip}:9400/status", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return None


def test_a_deleted_parameter_server_restores_its_checkpoint_and_the_job_succeeds(
    kube: Kube, namespace: str
) -> None:
    doc = _job(2)
    doc["metadata"]["name"] = "async-ckpt"
    spec = doc["spec"]
    spec["checkpoint"] = {"intervalSteps": 20}  # the shard writes ps-shard-0-of-1.npz every 20 model versions
    container = spec["template"]["spec"]["containers"][0]
    container["command"] = ["python", "examples/train_digits_async.py", "--epochs", "30"]
    container["env"] = [
        {"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.002"},
        # on the local cluster a re-created PS pod may get another address: give up on the old one soon
        # (exit 75, a temporary failure the operator retries) instead of after the default 120 s
        {"name": "PACELINE_PS_CONNECT_TIMEOUT_S", "value": "20"},
    ]
    assert kube.apply(doc, namespace).returncode == 0

    def checkpointed() -> tuple[dict, dict] | None:
        for pod in kube.items("pods", namespace, "paceline.dev/role=ps"):
            status = _ps_status(pod)
            if status and status["version"] >= 100 and (status["checkpoint"]["savedVersion"] or 0) >= 20:
                return pod, status
        return None

    old, before = wait_for("the shard training and checkpointing", checkpointed, timeout_s=240, interval_s=1)
    assert before["checkpoint"]["restoredVersion"] is None  # the first shard started from the workers' model
    kube.run("delete", "pod", old["metadata"]["name"], "-n", namespace, "--wait=false")

    def restored() -> dict | None:
        for pod in kube.items("pods", namespace, "paceline.dev/role=ps"):
            status = pod["metadata"]["uid"] != old["metadata"]["uid"] and _ps_status(pod)
            if status and status["checkpoint"]["restoredVersion"] is not None:
                return status
        return None

    after = wait_for("a new shard restored from the checkpoint", restored, timeout_s=180, interval_s=1)
    # the deleted shard wrote a last checkpoint when it stopped: nothing before it is lost
    assert after["checkpoint"]["restoredVersion"] >= before["checkpoint"]["savedVersion"]
    assert after["version"] >= after["checkpoint"]["restoredVersion"]

    def finished() -> dict | None:
        job = kube.get("tj", "async-ckpt", namespace) or {}
        status = job.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        assert conditions.get("Failed") != "True", status
        return status if conditions.get("Succeeded") == "True" else None

    status = wait_for("the job to succeed", finished, timeout_s=420, interval_s=2)
    assert status["asynchronous"]["staleUpdatesDropped"] == 0  # maxStaleness unset: nothing dropped
    assert json.loads(status["asynchronous"]["momentumState"])["version"] >= 1
    kube.run("delete", "tj", "async-ckpt", "-n", namespace)
