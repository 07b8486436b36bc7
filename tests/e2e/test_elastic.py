"""Jobs that follow the cluster: a node is deleted mid-training. The job re-plans on the nodes that are left,
the worker on the other node keeps its pod and its rank processes (they wait for the next generation and
regroup), all go on from the state checkpointed at the stop on the job's own volume (a claim template the
operator created), no pod stays pinned to the missing node; when the node comes back the job grows into it
again; every sample of every epoch is in the model exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import (
    Kube,
    busy_static_pods,
    checkpoint_records,
    global_batches,
    sample_accounting,
    training_job,
    wait_for,
)

from paceline_dev.jobs import recorded_job
from paceline_dev.localcluster.cluster import LocalCluster
from paceline_dev.localcluster.config import load_config, node_manifests

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

SAMPLES, BATCH, STEPS = 240, 24, 90  # 10 steps per epoch
LOST = "gpu-a100-1"
NODEPOOL = "karpenter.sh/nodepool"


def _steps(cluster: LocalCluster, namespace: str) -> int:
    return max(
        (r["step"] + 1 for rank in checkpoint_records(cluster, namespace, "follow") for r in rank["records"]),
        default=0,
    )


def test_a_lost_node_replans_resumes_from_the_volume_and_keeps_every_sample(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    doc = recorded_job(
        "follow",
        steps=STEPS,
        samples=SAMPLES,
        batch=BATCH,
        replicas=(1, 2),
        step_sleep=0.4,
        gpusPerWorker=4,  # one worker per A100 node
        placement={"pools": ["a100"]},
    )
    assert kube.apply(doc, namespace).returncode == 0
    try:
        wait_for(
            "two workers running",
            lambda: _status(kube, namespace).get("workersReady") == "2/2",
            timeout_s=240,
        )
        claim = kube.get("pvc", "follow-checkpoint", namespace)
        assert claim is not None and claim["metadata"]["ownerReferences"][0]["name"] == "follow"
        kept = _pod_on(kube, namespace, "gpu-a100-0")
        wait_for("12 steps trained", lambda: _steps(cluster, namespace) >= 12, timeout_s=300, interval_s=1)
        assert kube.run("delete", "node", LOST).returncode == 0

        (message, *_) = wait_for("a Resized event", lambda: _resized(kube, namespace), timeout_s=180)
        assert LOST in message and "from 2 to 1 worker" in message, message
        assert "1 pod(s) kept" in message, message
        wait_for(
            "no live pod pinned to the lost node",
            lambda: (
                not any(
                    LOST in _pinned_nodes(p)
                    for p in kube.items("pods", namespace, "paceline.dev/job=follow")
                    if not p["metadata"].get("deletionTimestamp")
                )
            ),
            timeout_s=120,
        )
        wait_for("30 steps trained", lambda: _steps(cluster, namespace) >= 30, timeout_s=300, interval_s=1)
        _restore_node(kube)
        grown = wait_for(
            "a second Resized event (grown back)", lambda: _resized(kube, namespace)[1:], timeout_s=180
        )
        assert "from 1 to 2 worker" in grown[0] and "GPUs became free" in grown[0], grown
        status = wait_for(
            "Succeeded",
            lambda: (s := _status(kube, namespace)).get("phase") == "Succeeded" and s,
            timeout_s=600,
        )
        assert sorted(w["node"] for w in status["workers"]) == ["gpu-a100-0", LOST]
        assert _pod_on(kube, namespace, "gpu-a100-0")["metadata"]["uid"] == kept["metadata"]["uid"], (
            "the worker on the node that stayed kept its pod through both resizes"
        )
        for pod in kube.items("pods", namespace, "paceline.dev/job=follow"):
            if not pod["metadata"].get("deletionTimestamp"):  # the lost node's pod is only being removed
                assert pod["spec"].get("nodeName") in (None, "gpu-a100-0", LOST), pod["metadata"]["name"]
    finally:
        _restore_node(kube)

    batches = global_batches(checkpoint_records(cluster, namespace, "follow"))
    assert len(batches) == STEPS
    for epoch in range(STEPS * BATCH // SAMPLES):
        seen = sorted(i for step in batches[epoch * 10 : (epoch + 1) * 10] for i in step)
        assert seen == list(range(SAMPLES)), f"epoch {epoch}: a sample skipped or seen twice"
    records = checkpoint_records(cluster, namespace, "follow")
    worlds = [r["worldSize"] for rank in records[:1] for r in rank["records"]]
    assert {8, 4} <= set(worlds), "trained on 2 pods x 4 ranks, on 1 pod, then on 2 again"
    for rank in records[:4]:  # ranks 0-3: the kept pod's in every generation (kept pods come first)
        assert len({r["pid"] for r in rank["records"]}) == 1, "the kept pod's ranks kept their processes"
    assert {r["generation"] for rank in records for r in rank["records"]} == {0, 1, 2}


def _pinned_nodes(pod: dict[str, Any]) -> set[str]:
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return {v for t in terms["nodeSelectorTerms"] for e in t["matchFields"] for v in e.get("values", [])}


def _resized(kube: Kube, namespace: str, job: str = "follow") -> list[str]:
    events = [e for e in kube.events(namespace, job) if e["reason"] == "Resized"]
    return [e["message"] for e in sorted(events, key=lambda e: e.get("lastTimestamp") or "")]


def _pod_on(kube: Kube, namespace: str, node: str) -> dict[str, Any]:
    (pod,) = [
        p
        for p in kube.items("pods", namespace, "paceline.dev/job=follow")
        if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")
    ]
    return pod


def _status(kube: Kube, namespace: str, job: str = "follow") -> dict[str, Any]:
    return dict((kube.get("tj", job, namespace) or {}).get("status") or {})


def _restore_node(kube: Kube) -> None:
    """Put the deleted node back for the tests that follow (the cluster is shared by the session)."""
    config = load_config(REPO / "tests" / "e2e" / "cluster.yaml")
    (node,) = [n for n in node_manifests(config) if n["metadata"]["name"] == LOST]
    if kube.get("node", LOST) is None:
        kube.run("create", "-f", "-", input_text=yaml.safe_dump(node), check=False)
    wait_for("the node back and Ready", lambda: _ready(kube.get("node", LOST)), timeout_s=120)


def _ready(node: dict[str, Any] | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_job_grows_into_the_gpus_another_job_frees(
    cluster: LocalCluster, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """Two A100 nodes: a holder job takes one, an elastic job (1..2 workers) starts on the other; when the
    holder's pod finishes the elastic job grows onto the node it freed, keeping its first pod."""
    wait_for("the static A100 nodes free", lambda: not busy_static_pods(kube, "a100"), 300, 2)
    release = tmp_path / "release"
    hold = ["python", "-c", f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.5)"]
    holder = training_job(
        "holder", command=hold, replicas=(1, 1), gpusPerWorker=4, placement={"pools": ["a100"]}
    )
    assert kube.apply(holder, namespace).returncode == 0
    wait_for(
        "the holder running", lambda: _status(kube, namespace, "holder").get("workersReady") == "1/1", 240
    )
    doc = recorded_job(
        "freed",
        steps=150,
        samples=SAMPLES,
        batch=BATCH,
        replicas=(1, 2),
        step_sleep=0.4,
        gpusPerWorker=4,
        placement={"pools": ["a100"]},
    )
    assert kube.apply(doc, namespace).returncode == 0
    wait_for(
        "one worker running", lambda: _status(kube, namespace, "freed").get("workersReady") == "1/1", 240
    )
    first = _workers(kube, namespace, "freed")
    assert len(first) == 1 and not _resized(kube, namespace, "freed")
    release.write_text("done")
    (message, *_) = wait_for("a Resized event", lambda: _resized(kube, namespace, "freed"), timeout_s=240)
    assert "from 1 to 2 worker" in message and "GPUs became free" in message, message
    status = wait_for(
        "Succeeded",
        lambda: (s := _status(kube, namespace, "freed")).get("phase") == "Succeeded" and s,
        timeout_s=600,
        interval_s=2,
    )
    assert len(status["workers"]) == 2
    kept = [
        p for p in _workers(kube, namespace, "freed") if p["metadata"]["uid"] == first[0]["metadata"]["uid"]
    ]
    assert kept, "the first worker kept its pod through the resize"
    ranks = checkpoint_records(cluster, namespace, "freed")
    assert sample_accounting(ranks, samples=SAMPLES, batch=BATCH) == (0, 0)


def test_a_job_asks_karpenter_for_gpus_grows_into_them_and_lets_them_go(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    """replicas 1..4 A100 workers, 2 static A100 nodes: the job starts on them, asks NodePool a100 for two
    more workers' GPUs (placeholder pods), Karpenter adds the nodes, the job grows to 4 keeping its pods,
    trains every sample exactly once, succeeds, and Karpenter removes the nodes once empty."""
    wait_for("the static A100 nodes free", lambda: not busy_static_pods(kube, "a100"), 300, 2)
    steps = 120
    doc = recorded_job(
        "grow",
        steps=steps,
        samples=SAMPLES,
        batch=BATCH,
        replicas=(1, 4),
        step_sleep=0.4,
        gpusPerWorker=4,
        placement={"pools": ["a100"]},
        elastic={"provision": {"gpuProducts": ["NVIDIA-A100-SXM4-40GB"], "budgetPerHour": "140"}},
    )
    assert kube.apply(doc, namespace).returncode == 0
    job = wait_for(
        "ScalingOut with two placeholders",
        lambda: (
            (j := kube.get("tj", "grow", namespace))
            and (j.get("status", {}).get("scaleOut") or {}).get("requested") == {"a100": 2}
            and j
        ),
        timeout_s=300,
        interval_s=1,
    )
    assert job["status"]["workersReady"] == "2/2"
    scaling = next(c for c in job["status"]["conditions"] if c["type"] == "ScalingOut")
    assert scaling["status"] == "True" and scaling["reason"] == "CapacityRequested", scaling
    first = {p["metadata"]["name"]: p["metadata"]["uid"] for p in _workers(kube, namespace, "grow")}
    grown = wait_for(
        "grown to 4 workers on Karpenter's nodes",
        lambda: (
            (s := (kube.get("tj", "grow", namespace) or {}).get("status") or {}).get("workersReady") == "4/4"
            and s
        ),
        timeout_s=400,
        interval_s=2,
    )
    added = {w["node"] for w in grown["workers"]} - {"gpu-a100-0", "gpu-a100-1"}
    assert len(added) == 2 and all(
        kube.get("node", n)["metadata"]["labels"].get(NODEPOOL) == "a100" for n in added
    )
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in _workers(kube, namespace, "grow")}
    assert all(now.get(name) == uid for name, uid in first.items()), "the first two workers kept their pods"
    assert not [
        p
        for p in kube.items("pods", namespace, "paceline.dev/role=capacity")
        if not p["metadata"].get("deletionTimestamp")
    ], "placeholders are gone once used"
    wait_for(
        "Succeeded",
        lambda: ((kube.get("tj", "grow", namespace) or {}).get("status") or {}).get("phase") == "Succeeded",
        timeout_s=600,
        interval_s=2,
    )
    records = checkpoint_records(cluster, namespace, "grow")
    batches = global_batches(records)
    assert len(batches) == steps
    for epoch in range(steps * BATCH // SAMPLES):
        seen = sorted(i for step in batches[epoch * 10 : (epoch + 1) * 10] for i in step)
        assert seen == list(range(SAMPLES)), f"epoch {epoch}: a sample skipped or seen twice"
    assert max(r["worldSize"] for rank in records for r in rank["records"]) == 16
    wait_for(
        "Karpenter to remove the empty nodes",
        lambda: not kube.items("nodes", "default", f"{NODEPOOL}=a100"),
        timeout_s=300,
        interval_s=2,
    )


def test_a_job_short_of_its_minimum_asks_karpenter_for_the_rest(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    """replicas.min 3 A100 workers, two static A100 nodes: the job waits (Planned=False/Unschedulable) and
    asks NodePool a100 for the third worker's GPUs; once Karpenter's node is Ready the job is planned on all
    three nodes and runs."""
    wait_for("the static A100 nodes free", lambda: not busy_static_pods(kube, "a100"), 300, 2)
    wait_for(
        "no Karpenter A100 node left", lambda: not kube.items("nodes", "default", f"{NODEPOOL}=a100"), 300, 2
    )
    doc = training_job(
        "short",
        command=["python", "-c", "import time; time.sleep(5)"],
        replicas=(3, 3),
        gpusPerWorker=4,
        placement={"pools": ["a100"]},
        elastic={"provision": {"gpuProducts": ["NVIDIA-A100-SXM4-40GB"], "budgetPerHour": "140"}},
    )
    assert kube.apply(doc, namespace).returncode == 0
    waiting = wait_for(
        "Unschedulable with one worker asked for",
        lambda: (
            (s := _status(kube, namespace, "short")).get("scaleOut", {}).get("requested") == {"a100": 1} and s
        ),
        timeout_s=120,
        interval_s=1,
    )
    conditions = {c["type"]: c for c in waiting["conditions"]}
    assert conditions["Planned"]["status"] == "False" and conditions["Planned"]["reason"] == "Unschedulable"
    assert conditions["ScalingOut"]["reason"] == "CapacityRequested", conditions["ScalingOut"]
    status = wait_for(
        "Succeeded on three nodes",
        lambda: (s := _status(kube, namespace, "short")).get("phase") == "Succeeded" and s,
        timeout_s=420,
        interval_s=2,
    )
    added = {w["node"] for w in status["workers"]} - {"gpu-a100-0", "gpu-a100-1"}
    assert len(added) == 1 and kube.get("node", added.pop())["metadata"]["labels"].get(NODEPOOL) == "a100"


def _workers(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    return [
        p
        for p in kube.items("pods", namespace, f"paceline.dev/job={job},paceline.dev/role=worker")
        if not p["metadata"].get("deletionTimestamp")
    ]
