"""Mode Reinforcement in the operator: learner and actor pods, live actor count, replacement, success."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from jobs import job, pod

from paceline import api
from paceline.controller.decide import Observed, decide
from paceline.reasons import ConditionType

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RL = {
    "actors": {"count": 2, "envsPerActor": 4},
    "learners": {"count": 1, "gpus": 1},
    "stopping": {"targetReturn": 475},
}
LEARNER_STATUS = {
    "meanReturn": 212.5,
    "bestReturn": 230.0,
    "lastReturn": 180.0,
    "episodes": 300,
    "envSteps": 40960,
    "envStepsPerSecond": 20000.0,
    "updatesPerSecond": 150.0,
    "version": 40,
    "policyLag": {
        "counts": {"0": 512, "1": 4096},
        "mean": 0.889,
        "p50": 1,
        "p90": 1,
        "max": 1,
        "droppedSamples": 0,
    },
    "stopReason": None,
}


def rl_job(**reinforcement: Any) -> dict[str, Any]:
    tj = job(mode="Reinforcement", reinforcement={**RL, **reinforcement}, replicas={"min": 1, "max": 1})
    del tj["spec"]["globalBatchSize"]
    return tj


def observe(
    tj: dict[str, Any], pods: list[dict[str, Any]], learners: dict[int, Any] | None = None
) -> Observed:
    return Observed(
        job=tj,
        spec=api.parsed(tj["spec"]),
        pods=pods,
        service={"metadata": {"name": "demo"}},
        control=None,
        now=NOW,
        learners=learners or {},
    )


def running(name: str, role: str, rank: int) -> dict[str, Any]:
    return pod(name, role=role, rank=rank, phase="Running", podIP="127.0.0.5", node="gpu-t4-0")


def env_of(body: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in body["spec"]["containers"][0]["env"]}


def test_a_new_job_gets_a_gpu_learner_and_cpu_only_actors_running_the_rl_entry_point() -> None:
    decision = decide(observe(rl_job(), []))
    pods = {p["metadata"]["name"]: p for p in decision.create if p["kind"] == "Pod"}
    assert sorted(pods) == ["demo-actor-0", "demo-actor-1", "demo-learner-0"]
    learner, actor = pods["demo-learner-0"]["spec"], pods["demo-actor-1"]["spec"]
    assert learner["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in str(actor["containers"][0].get("resources"))
    assert actor["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert learner["containers"][0]["command"] == ["python", "-m", "paceline_worker.reinforcement"]
    env = env_of(pods["demo-actor-1"])
    assert env["PACELINE_ROLE"] == "actor" and env["PACELINE_RL_INDEX"] == "1"
    assert env["PACELINE_RL_LEARNERS"] == "demo-learner-0.demo.ml.svc.cluster.local:9400"
    settings = json.loads(env["PACELINE_RL"])
    assert (settings["envsPerActor"], settings["targetReturn"], settings["maxPolicyLag"]) == (4, 475, 2)
    assert "PACELINE_CHECKPOINT_DIR" in env_of(pods["demo-learner-0"])
    assert decision.status is not None and decision.status["phase"] == "Pending"


def test_running_job_reports_the_learners_progress_and_relaxed_dependencies() -> None:
    pods = [
        running("demo-learner-0", "learner", 0),
        running("demo-actor-0", "actor", 0),
        running("demo-actor-1", "actor", 1),
    ]
    decision = decide(observe(rl_job(), pods, {0: LEARNER_STATUS}))
    assert decision.create == [] and decision.delete_pods == []
    status = decision.status or {}
    assert status["phase"] == "Running"
    rl = status["reinforcement"]
    assert (rl["meanReturn"], rl["bestReturn"], rl["envStepsPerSecond"], rl["updatesPerSecond"]) == (
        "212.50",
        "230.00",
        "20000.0",
        "150.0",
    )
    assert rl["policyLag"]["counts"] == {"0": 512, "1": 4096} and rl["policyLag"]["mean"] == "0.889"
    assert rl["relaxedDependencies"] == ["actorWaitsForPolicy", "learnerWaitsForFreshBatch"]
    assert (rl["actors"], rl["learners"]) == ("2/2", "1/1")


def test_several_learners_report_the_best_return_and_summed_rates() -> None:
    second = {
        **LEARNER_STATUS,
        "meanReturn": 300.0,
        "envSteps": 20000,
        "envStepsPerSecond": 10000.0,
        "policyLag": {"counts": {"1": 1000, "2": 1000}, "mean": 1.5, "max": 2, "droppedSamples": 7},
    }
    decision = decide(observe(rl_job(learners={"count": 2}), [], {0: LEARNER_STATUS, 1: second}))
    rl = (decision.status or {})["reinforcement"]
    assert rl["meanReturn"] == "300.00" and rl["envSteps"] == 60960 and rl["envStepsPerSecond"] == "30000.0"
    assert rl["policyLag"]["counts"] == {"0": 512, "1": 5096, "2": 1000}
    assert rl["policyLag"]["max"] == 2 and rl["policyLag"]["droppedSamples"] == 7
    assert rl["policyLag"]["mean"] == f"{(0.889 * 4608 + 1.5 * 2000) / 6608:.3f}"


def test_strict_job_lists_no_relaxed_dependencies() -> None:
    decision = decide(observe(rl_job(dependencies="Strict"), []))
    assert (decision.status or {})["reinforcement"]["relaxedDependencies"] == []


def test_actor_count_changes_live_without_touching_the_learner() -> None:
    pods = [
        running("demo-learner-0", "learner", 0),
        running("demo-actor-0", "actor", 0),
        running("demo-actor-1", "actor", 1),
    ]
    more = decide(observe(rl_job(actors={"count": 3}), pods))
    assert [p["metadata"]["name"] for p in more.create] == ["demo-actor-2"]
    assert more.delete_pods == []
    fewer = decide(observe(rl_job(actors={"count": 1}), pods))
    assert fewer.create == [] and fewer.delete_pods == ["demo-actor-1"]


def test_a_failed_actor_is_replaced_and_counted() -> None:
    failed = pod("demo-actor-1", role="actor", rank=1, phase="Failed", node="gpu-t4-0")
    pods = [running("demo-learner-0", "learner", 0), running("demo-actor-0", "actor", 0), failed]
    decision = decide(observe(rl_job(), pods))
    assert decision.delete_pods == ["demo-actor-1"]
    assert (decision.status or {})["reinforcement"]["actorRestarts"] == 1
    gone = [running("demo-learner-0", "learner", 0), running("demo-actor-0", "actor", 0)]
    assert [p["metadata"]["name"] for p in decide(observe(rl_job(), gone)).create] == ["demo-actor-1"]


def test_learner_reaching_the_target_makes_the_job_succeed_and_stops_the_actors() -> None:
    final = {**LEARNER_STATUS, "meanReturn": 480.0, "stopReason": "TargetReturnReached"}
    done = pod("demo-learner-0", role="learner", rank=0, phase="Succeeded", node="gpu-t4-0")
    done["status"]["containerStatuses"] = [
        {"state": {"terminated": {"exitCode": 0, "message": f"TargetReturnReached: {json.dumps(final)}"}}}
    ]
    pods = [
        done,
        running("demo-actor-0", "actor", 0),
        pod("demo-actor-1", role="actor", rank=1, phase="Succeeded"),
    ]
    decision = decide(observe(rl_job(), pods))
    status = decision.status or {}
    assert status["phase"] == "Succeeded"
    assert status["reinforcement"]["meanReturn"] == "480.00"
    assert status["reinforcement"]["stopReason"] == "TargetReturnReached"
    succeeded = next(c for c in status["conditions"] if c["type"] == ConditionType.SUCCEEDED)
    assert succeeded["reason"] == "TargetReturnReached" and "480.00" in succeeded["message"]
    assert decision.delete_pods == ["demo-actor-0"]


def test_a_learner_stopped_early_is_recreated_until_the_backoff_limit() -> None:
    stopped = pod("demo-learner-0", role="learner", rank=0, phase="Failed", node="gpu-t4-0")
    pods = [stopped, running("demo-actor-0", "actor", 0)]
    first = decide(observe(rl_job(), pods))
    assert "demo-learner-0" in first.delete_pods and (first.status or {})["phase"] != "Failed"
    tj = rl_job()
    tj["status"] = {"reinforcement": {"learnerRestarts": 2}}
    last = decide(observe(tj, pods))
    assert (last.status or {})["phase"] == "Failed"
    assert sorted(last.delete_pods) == ["demo-actor-0", "demo-learner-0"]


def test_the_example_rl_job_is_valid() -> None:
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "rl-job.yaml").read_text())
    spec = api.parse_spec(doc["spec"])
    assert spec.reinforcement is not None and spec.reinforcement.rl.target_return == 475
