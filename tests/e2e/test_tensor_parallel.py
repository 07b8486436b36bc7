"""What the plan says runs on the local cluster: a job with 2 GPUs per pod starts 2 processes (ranks) in
every pod, the planner's tensor-parallel splits of the MLP execute inside each pod, and the job succeeds."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import Kube, wait_for

from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _worker_status(pod_ip: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{pod_ip}:9400/assignment", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except OSError:  # still importing torch
        return {}


def test_two_gpu_pods_run_two_ranks_each_and_execute_the_hybrid_plan(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    doc = yaml.safe_load((REPO / "examples" / "mlp-job.yaml").read_text())
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["python", "examples/train_mlp.py", "--epochs", "30", "--samples", "2048"]
    container["env"] = [{"name": "PACELINE_SIM_SAMPLE_COST_S", "value": "0.0005"}]  # long enough to look at
    assert kube.apply(doc, namespace).returncode == 0
    job = _wait_or_explain(
        kube,
        namespace,
        "workers running",
        lambda: (
            (j := kube.get("tj", "mlp-job", namespace))
            and j.get("status", {}).get("phase") == "Running"
            and j
        ),
        timeout_s=180,
    )
    plan = job["status"]["plan"]
    assert plan["executed"] == "hybrid" and plan["tensorParallel"] == 2, plan
    split = {s["module"] for s in plan["splits"]}
    assert "fc1" in split, plan
    assert float(plan["predictedStepSeconds"]) < float(plan["baselineStepSeconds"])
    planned = [e["message"] for e in kube.events(namespace, "mlp-job") if e["reason"] == "Planned"]
    assert planned and all(module in planned[0] for module in split), planned

    pods = sorted(
        kube.items("pods", namespace, "paceline.dev/job=mlp-job"), key=lambda p: p["metadata"]["name"]
    )
    assert [p["spec"]["containers"][0]["command"][:4] for p in pods] == [
        ["python", "-m", "paceline_worker.launch", "--"]
    ] * 2
    for pod in pods:
        status = wait_for(  # the endpoint answers before the model is wrapped: wait for its placements
            "worker endpoint with the model split",
            lambda ip=pod["status"]["podIP"]: (s := _worker_status(ip)).get("placements") and s,
            timeout_s=120,
        )
        assert status["localWorldSize"] == 2 and status["tensorParallel"] == 2, status
        assert set(status["placements"]) == split and all("shard" in v for v in status["placements"].values())

    wait_for(
        "Succeeded",
        lambda: kube.get("tj", "mlp-job", namespace)["status"].get("phase") == "Succeeded",
        timeout_s=400,
        interval_s=2,
    )
    for index, pod in enumerate(pods):  # every GPU a rank: both local ranks of each pod trained
        log = (
            cluster.paths.state / "logs" / "pods" / f"{namespace}_{pod['metadata']['name']}.log"
        ).read_text()
        ready = {int(m) for m in re.findall(r"rank (\d+)/4 \(gloo\) ready at step", log)}
        assert ready == {2 * index, 2 * index + 1}, log[-3000:]


def _wait_or_explain(kube: Kube, namespace: str, what: str, check: Any, *, timeout_s: float) -> Any:
    """wait_for, and on a timeout say what the job's status, events and pods were."""
    try:
        return wait_for(what, check, timeout_s=timeout_s)
    except AssertionError as timeout:
        status = (kube.get("tj", "mlp-job", namespace) or {}).get("status")
        events = [(e["reason"], e["message"]) for e in kube.events(namespace, "mlp-job")]
        pods = [(p["metadata"]["name"], p["status"].get("phase")) for p in kube.items("pods", namespace)]
        raise AssertionError(f"{timeout}\nstatus: {status}\nevents: {events}\npods: {pods}") from None
