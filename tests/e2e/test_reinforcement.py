"""Mode Reinforcement on the local cluster: `kubectl apply` an RL job → Succeeded with the return in status;
an actor killed mid-run is replaced and the job still succeeds."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from typing import Any

import pytest
from e2e_support import Kube, wait_for

from paceline_dev.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.e2e

TARGET = 475


def _job(name: str, **reinforcement: Any) -> dict[str, Any]:
    return {
        "apiVersion": "paceline.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "mode": "Reinforcement",
            "reinforcement": {
                "env": "CartPole-v1",
                "algorithm": "PPO",
                "actors": {"count": 2, "envsPerActor": 8},
                "learners": {"count": 1, "gpus": 1},
                "stopping": {"targetReturn": TARGET, "maxEnvSteps": 3_000_000},
                **reinforcement,
            },
            "template": {"spec": {"containers": [{"name": "rl", "image": "paceline/worker:dev"}]}},
        },
    }


def _status(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    return (kube.get("tj", name, namespace) or {}).get("status") or {}


def _succeeded(kube: Kube, name: str, namespace: str) -> dict[str, Any]:
    status = wait_for(
        f"{name} to finish",
        lambda: (s := _status(kube, name, namespace)).get("phase") in ("Succeeded", "Failed") and s,
        timeout_s=600,
        interval_s=2,
    )
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    return dict(status)


def test_an_rl_job_reaches_the_target_return_and_reports_it(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    assert kube.apply(_job("cartpole"), namespace).returncode == 0
    pods = wait_for(
        "learner and actor pods",
        lambda: len(p := kube.items("pods", namespace, "paceline.dev/job=cartpole")) == 3 and p,
        timeout_s=120,
    )
    requests = {
        p["metadata"]["name"]: (p["spec"]["containers"][0].get("resources") or {}).get("requests") or {}
        for p in pods
    }
    assert requests["cartpole-learner-0"].get("nvidia.com/gpu") == "1"
    assert "nvidia.com/gpu" not in requests["cartpole-actor-0"]
    status = _succeeded(kube, "cartpole", namespace)
    rl = status["reinforcement"]
    assert float(rl["meanReturn"]) >= TARGET
    assert rl["stopReason"] == "TargetReturnReached"
    assert rl["relaxedDependencies"] == ["actorWaitsForPolicy", "learnerWaitsForFreshBatch"]
    assert int(rl["policyLag"]["max"]) <= 2 and rl["envSteps"] > 0
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "TargetReturnReached"
    printed = kube.run("get", "tj", "cartpole", "-n", namespace, "-o", "wide").stdout
    assert rl["meanReturn"] in printed  # the Return column


def _pid(cluster: LocalCluster, namespace: str, pod: str) -> int | None:
    """The process the local runtime started for `pod` (its log names it), once it has started."""
    text = cluster.paths.log("process-runtime").read_text(errors="replace")
    found = re.findall(rf"started {re.escape(namespace)}/{re.escape(pod)} on \S+ \(pid (\d+)", text)
    return int(found[-1]) if found else None


def _learner_env_steps(kube: Kube, namespace: str, job: str) -> int:
    pod = kube.get("pod", f"{job}-learner-0", namespace) or {}
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return 0
    try:
        with urllib.request.urlopen(f"http://{ip}:9400/status", timeout=5) as response:
            return int(json.load(response).get("envSteps") or 0)
    except OSError:
        return 0


def test_an_actor_killed_mid_run_is_replaced_and_the_job_still_succeeds(
    cluster: LocalCluster, kube: Kube, namespace: str
) -> None:
    # a longer return window: the job needs more steps, so the kill lands well before the target
    assert (
        kube.apply(_job("killed", stopping={"targetReturn": TARGET, "episodes": 60}), namespace).returncode
        == 0
    )
    pid = wait_for("actor 1's process", lambda: _pid(cluster, namespace, "killed-actor-1"), timeout_s=180)
    old = kube.get("pod", "killed-actor-1", namespace) or {}
    wait_for(
        "the learner's first batches", lambda: _learner_env_steps(kube, namespace, "killed") > 0, 180, 0.2
    )
    assert _status(kube, "killed", namespace).get("phase") != "Succeeded", "finished before the kill"
    os.kill(pid, signal.SIGKILL)
    wait_for(
        "a replacement for actor 1",
        lambda: (
            (p := kube.get("pod", "killed-actor-1", namespace))
            and p["metadata"]["uid"] != old["metadata"]["uid"]
        ),
        timeout_s=120,
    )
    status = _succeeded(kube, "killed", namespace)
    assert status["reinforcement"]["actorRestarts"] >= 1
    assert float(status["reinforcement"]["meanReturn"]) >= TARGET
    reasons = [e["reason"] for e in kube.events(namespace, "killed")]
    assert "WorkerFailed" in reasons and "Succeeded" in reasons


@pytest.mark.parametrize(
    ("reinforcement", "message"),
    [
        ({"stopping": {"episodes": 20}}, "spec.reinforcement.stopping needs a rule"),
        ({"actors": {"count": 1}, "learners": {"count": 2}}, "learners.count must not exceed actors.count"),
        ({"maxPolicyLag": 50}, "PPO is on-policy"),
        ({"algorithm": "A3C"}, "Unsupported value"),
    ],
)
def test_the_api_server_rejects_a_bad_reinforcement_block_saying_what_to_fix(
    cluster: LocalCluster, kube: Kube, namespace: str, reinforcement: dict[str, Any], message: str
) -> None:
    job = _job("bad")
    job["spec"]["reinforcement"] = {**job["spec"]["reinforcement"], **reinforcement}
    result = kube.apply(job, namespace)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_kubectl_explain_documents_the_reinforcement_block(cluster: LocalCluster, kube: Kube) -> None:
    text = kube.run("explain", "trainingjobs.spec.reinforcement").stdout
    for field in ("actorRunAhead", "maxPolicyLag", "dependencies", "stopping", "exchangeSteps"):
        assert field in text
    lag = kube.run("explain", "trainingjobs.spec.reinforcement.maxPolicyLag").stdout
    assert "older samples are dropped" in lag
