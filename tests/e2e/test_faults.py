"""Faults a running job survives, each on a job whose ranks record every step's samples on the job's
checkpoint volume: the operator SIGKILLed again and again, the API server and etcd restarted, a worker's
process SIGKILLed, the control ConfigMap deleted by hand. After each the job completes, every sample of
every epoch is in the model exactly once, and no pod was created beyond what the plan and the restarts
need (counted by a watch that survives the control-plane restarts)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from typing import Any

import pytest
from e2e_support import Kube, checkpoint_records, global_batches, sample_accounting, wait_for

from paceline_dev import faults, jobs
from paceline_dev.localcluster import processes
from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e
SAMPLES, BATCH = 240, 24  # 10 steps per epoch
OWNED_KINDS = ("pods", "services", "configmaps", "persistentvolumeclaims", "secrets")


def recorded_job(name: str, steps: int) -> dict[str, Any]:
    return jobs.recorded_job(name, steps=steps, samples=SAMPLES, batch=BATCH)


def steps_done(cluster: LocalCluster, namespace: str, job: str) -> int:
    ranks = checkpoint_records(cluster, namespace, job)
    return max((r["step"] + 1 for rank in ranks for r in rank["records"]), default=0)


def status(kube: Kube, namespace: str, job: str) -> dict[str, Any]:
    return (kube.get("tj", job, namespace) or {}).get("status") or {}


def succeeded(kube: Kube, namespace: str, job: str, timeout_s: float = 600) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        now = status(kube, namespace, job)
        assert now.get("phase") != "Failed", now.get("conditions")
        return now if now.get("phase") == "Succeeded" else None

    result: dict[str, Any] = wait_for("Succeeded", done, timeout_s=timeout_s, interval_s=1)
    return result


def assert_every_sample_once(cluster: LocalCluster, namespace: str, job: str, steps: int) -> None:
    ranks = checkpoint_records(cluster, namespace, job)
    assert len(global_batches(ranks)) == steps
    skipped, duplicated = sample_accounting(ranks, samples=SAMPLES, batch=BATCH)
    assert (skipped, duplicated) == (0, 0), f"{skipped} samples skipped, {duplicated} seen twice"


def assert_no_orphans(kube: Kube, namespace: str, job: str) -> None:
    """Every object labelled for the job is owned by it; once the job is deleted, none is left."""
    uid = kube.get("tj", job, namespace)["metadata"]["uid"]
    for kind in OWNED_KINDS:
        for item in kube.items(kind, namespace, f"paceline.dev/job={job}"):
            owners = {o["uid"] for o in item["metadata"].get("ownerReferences", [])}
            assert uid in owners, f"{kind}/{item['metadata']['name']} is not owned by the job"
    kube.run("delete", "tj", job, "-n", namespace, "--wait=true", "--timeout=120s")
    wait_for(
        "the job's objects garbage-collected",
        lambda: not any(kube.items(kind, namespace, f"paceline.dev/job={job}") for kind in OWNED_KINDS),
        timeout_s=180,
        interval_s=1,
    )


def test_operator_killed_ten_times_job_completes_with_only_the_planned_pods(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    steps, rng = 200, random.Random(os.environ.get("PACELINE_FAULT_SEED", "12"))
    with faults.PodCreations(cluster.paths.kubeconfig, namespace) as creations:
        assert kube.apply(recorded_job("survivor", steps), namespace).returncode == 0
        kills = 0
        while kills < 10:  # at random points: planning, creating pods, rebalancing, idle between passes
            time.sleep(rng.uniform(0.0, 3.0))
            faults.kill_operator(cluster)
            kills += 1
            assert status(kube, namespace, "survivor").get("phase") != "Succeeded", (
                f"the job ended before kill {kills}: lengthen it"
            )
            cluster.start_operator()
        final = succeeded(kube, namespace, "survivor")
    assert final.get("restarts", 0) == 0
    assert creations.names() == ["survivor-worker-0", "survivor-worker-1"], creations.created
    assert_every_sample_once(cluster, namespace, "survivor", steps)
    assert_no_orphans(kube, namespace, "survivor")


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_restart_operator_reconnects_job_completes(
    cluster: LocalCluster, kube: Kube, namespace: str, component: str
) -> None:
    steps, job = 80, "steady"
    operator = processes.running(cluster.paths.state, "operator")
    assert operator is not None
    with faults.PodCreations(cluster.paths.kubeconfig, namespace) as creations:
        assert kube.apply(recorded_job(job, steps), namespace).returncode == 0
        wait_for("workers running", lambda: status(kube, namespace, job).get("workersReady") == "2/2", 240)
        wait_for("8 steps", lambda: steps_done(cluster, namespace, job) >= 8, timeout_s=240, interval_s=1)
        cluster.restart_control_plane(component)
        before = steps_done(cluster, namespace, job)
        wait_for("training goes on", lambda: steps_done(cluster, namespace, job) > before + 4, 240, 1)
        final = succeeded(kube, namespace, job)  # written by the operator over its new connections
    after = processes.running(cluster.paths.state, "operator")
    assert after is not None and after.pid == operator.pid, "the operator reconnected, it was not restarted"
    assert final.get("restarts", 0) == 0
    assert creations.names() == [f"{job}-worker-0", f"{job}-worker-1"], creations.created
    assert creations.reconnects >= 1  # the counting watch itself lived through the restart
    assert_every_sample_once(cluster, namespace, job, steps)


def test_worker_killed_restarts_from_the_checkpoint_and_keeps_every_sample(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    steps, job = 60, "phoenix"
    with faults.PodCreations(cluster.paths.kubeconfig, namespace) as creations:
        assert kube.apply(recorded_job(job, steps), namespace).returncode == 0
        wait_for("10 steps", lambda: steps_done(cluster, namespace, job) >= 10, timeout_s=300, interval_s=1)
        os.killpg(faults.pod_process(cluster, namespace, f"{job}-worker-1"), signal.SIGKILL)
        final = succeeded(kube, namespace, job)
    assert final["restarts"] == 1
    ranks = checkpoint_records(cluster, namespace, job)
    assert any(r.get("resumedFrom", 0) > 0 for rank in ranks for r in rank["records"]), "resumed mid-run"
    # a synchronous job restarts as a gang: each of its 2 pods is created once more, no other
    assert creations.names() == sorted([f"{job}-worker-0", f"{job}-worker-1"] * 2), creations.created
    assert_every_sample_once(cluster, namespace, job, steps)


@pytest.mark.parametrize("operator_down", [False, True], ids=["operator-up", "operator-down"])
def test_control_configmap_deleted_is_recreated_without_restarting_workers(
    cluster: LocalCluster, kube: Kube, namespace: str, operator_down: bool
) -> None:
    """Deleted under a running operator, the ConfigMap is written again as it was; deleted while the operator
    is down, the job re-plans and the assignment version goes on from the status. Either way the workers'
    pods and processes stay."""
    steps, job = 80, "steady"
    assert kube.apply(recorded_job(job, steps), namespace).returncode == 0
    wait_for("workers running", lambda: status(kube, namespace, job).get("workersReady") == "2/2", 240)
    wait_for("6 steps", lambda: steps_done(cluster, namespace, job) >= 6, timeout_s=240, interval_s=1)
    control = kube.get("configmap", f"{job}-control", namespace)
    assert control is not None
    pids = {r: faults.pod_process(cluster, namespace, f"{job}-worker-{r}") for r in (0, 1)}
    pods = {p["metadata"]["name"]: p["metadata"]["uid"] for p in kube.items("pods", namespace)}
    if operator_down:
        faults.kill_operator(cluster)
    kube.run("delete", "configmap", f"{job}-control", "-n", namespace)
    if operator_down:
        cluster.start_operator()

    def recreated() -> dict[str, Any] | None:
        again = kube.get("configmap", f"{job}-control", namespace)
        return again if again and again["metadata"]["uid"] != control["metadata"]["uid"] else None

    again = wait_for("the control ConfigMap recreated", recreated, timeout_s=120)
    version = json.loads(control["data"]["assignment.json"])["version"]
    assert json.loads(again["data"]["assignment.json"])["version"] == version + operator_down
    assert again["data"]["planHash"] == control["data"]["planHash"]
    final = succeeded(kube, namespace, job)
    assert final.get("restarts", 0) == 0
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in kube.items("pods", namespace)} == pods
    assert {r: faults.pod_process(cluster, namespace, f"{job}-worker-{r}") for r in (0, 1)} == pids
    assert_every_sample_once(cluster, namespace, job, steps)
