"""A user's session: apply a heterogeneous job, inspect it, delete it (garbage collection by the real
controller-manager)."""

from __future__ import annotations

import ipaddress
import time

import pytest
from e2e_support import Kube, training_job, wait_for

pytestmark = pytest.mark.e2e
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


def _condition(job: dict, ctype: str) -> dict | None:
    return next((c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == ctype), None)


def test_apply_places_pods_reports_status_and_garbage_collects(kube: Kube, namespace: str) -> None:
    doc = training_job(
        "placed",
        command=SLEEP,
        replicas=(2, 3),
        placement={"pools": ["a100", "t4"]},
        balancing={"policy": "Static"},
    )
    assert kube.apply(doc, namespace).returncode == 0

    def running() -> dict | None:
        job = kube.get("tj", "placed", namespace)
        cond = _condition(job or {}, "Running")
        return job if cond and cond["status"] == "True" else None

    job = wait_for("all workers running", running)
    # a running job that nothing happens to costs no writes: its status is not rewritten (watch-driven,
    # unchanged status skipped), so the object's resourceVersion stays put
    settled = wait_for("status settled", lambda: (j := kube.get("tj", "placed", namespace)) and j)
    time.sleep(6)
    assert (
        kube.get("tj", "placed", namespace)["metadata"]["resourceVersion"]
        == settled["metadata"]["resourceVersion"]
    )
    status = job["status"]
    assert status["phase"] == "Running" and status["workersReady"] == "3/3"
    assert status["observedGeneration"] == job["metadata"]["generation"]
    for ctype in ("Planned", "Placed", "Running"):
        cond = _condition(job, ctype)
        assert cond is not None and cond["status"] == "True" and cond["reason"][0].isupper()
    pods = kube.items("pods", namespace, "paceline.dev/job=placed")
    assert len(pods) == 3
    by_rank = {int(p["metadata"]["labels"]["paceline.dev/rank"]): p for p in pods}
    for row in status["workers"]:
        pod = by_rank[row["rank"]]
        assert pod["spec"]["nodeName"] == row["node"]  # the real scheduler bound it where the plan said
        assert row["pool"] in ("a100", "t4")
        assert ipaddress.ip_address(pod["status"]["podIP"]).is_loopback
    assert sum(row["batchShare"] for row in status["workers"]) == 64
    reasons = {e["reason"] for e in kube.events(namespace, "placed")}
    assert {"Planned", "Placed"} <= reasons

    # printer columns
    table = kube.run("get", "tj", "-n", namespace).stdout
    assert "MODE" in table and "WORKERS" in table and "PLAN" in table and "3/3" in table
    described = kube.run("describe", "tj", "placed", "-n", namespace).stdout
    assert "Planned" in described and "Placed" in described

    # the control object and the headless service exist, owned by the job
    control = kube.get("configmap", "placed-control", namespace)
    assert control is not None and "assignment.json" in control["data"]
    svc = kube.get("service", "placed", namespace)
    assert svc is not None and svc["spec"]["clusterIP"] == "None"

    # children removed behind the operator's back come back: a pod, and the Service (whose deletion is a
    # single DELETED event, which kopf does not index)
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    kube.run("delete", "service", "placed", "-n", namespace)
    wait_for(
        "Service re-created",
        lambda: (
            (s := kube.get("service", "placed", namespace)) and s["metadata"]["uid"] != svc["metadata"]["uid"]
        ),
    )
    kube.run("delete", "pod", "placed-worker-1", "-n", namespace, "--grace-period=0", "--force")
    wait_for(
        "worker 1 re-created",
        lambda: any(
            p["metadata"]["name"] == "placed-worker-1" and p["metadata"]["uid"] != before["placed-worker-1"]
            for p in kube.items("pods", namespace, "paceline.dev/job=placed")
        ),
    )

    kube.run("delete", "tj", "placed", "-n", namespace)
    wait_for(
        "children garbage-collected",
        lambda: (
            not kube.items("pods", namespace, "paceline.dev/job=placed")
            and kube.get("configmap", "placed-control", namespace) is None
            and kube.get("service", "placed", namespace) is None
        ),
    )


def test_unschedulable_job_reports_why(kube: Kube, namespace: str) -> None:
    doc = training_job("toobig", command=SLEEP, replicas=(40, 40), globalBatchSize=640)
    assert kube.apply(doc, namespace).returncode == 0

    def unschedulable() -> dict | None:
        cond = _condition(kube.get("tj", "toobig", namespace) or {}, "Planned")
        return cond if cond and cond["reason"] == "Unschedulable" else None

    cond = wait_for("Unschedulable", unschedulable)
    assert "spec.replicas.min is 40" in cond["message"]
    assert not kube.items("pods", namespace, "paceline.dev/job=toobig")
