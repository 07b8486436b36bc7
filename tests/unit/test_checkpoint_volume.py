"""spec.checkpoint: a durable volume mounted into every worker; a claim template the job owns; a missing claim
keeps the job unplanned with a message that says what to fix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jobs import PLAN, job

from paceline import api
from paceline.builders import build_checkpoint_claim, build_ps_pod, build_worker_pod
from paceline.controller.decide import decide
from paceline.controller.decide.model import Observed
from paceline.controller.decide.plan import job_ref
from paceline.reasons import ConditionType, EventReason, Reason
from paceline_worker.wire import Assignment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
TEMPLATE = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "5Gi"}}}


def _pod(spec: api.JobSpec) -> dict[str, Any]:
    assignment = Assignment(version=1, batch_sizes=(56, 56, 16), learning_rate=0.05, momentum=0.9)
    return build_worker_pod(
        job_ref(job()),
        spec=spec,
        placement=PLAN.workers[0],
        world_size=3,
        attempt=0,
        plan_hash="h",
        assignment=assignment,
        port=29500,
        sharding="{}",
    )


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


def test_without_a_volume_checkpoints_stay_in_the_container() -> None:
    pod = _pod(api.parse_spec(job()["spec"]))
    assert not [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    # per job uid: a new job of the same name does not resume an old one (where /tmp outlives a container)
    assert _env(pod)["PACELINE_CHECKPOINT_DIR"] == "/tmp/paceline/ml/demo/uid-1234"
    assert _env(pod)["PACELINE_CHECKPOINT_INTERVAL_STEPS"] == "100"


@pytest.mark.parametrize(
    ("checkpoint", "claim"),
    [
        ({"claimName": "shared-ckpt", "intervalSteps": 20}, "shared-ckpt"),
        ({"volumeClaimTemplate": TEMPLATE}, "demo-checkpoint"),
    ],
)
def test_the_volume_is_mounted_and_each_job_writes_its_own_directory(checkpoint: dict, claim: str) -> None:
    spec = api.parse_spec(job(checkpoint=checkpoint)["spec"])
    pod = _pod(spec)
    claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"name": "paceline-checkpoint", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "paceline-checkpoint", "mountPath": "/var/run/paceline/checkpoint"} in mounts
    assert pod["spec"]["securityContext"]["fsGroup"] == api.POD_USER  # the volume is the pod group's
    assert _env(pod)["PACELINE_CHECKPOINT_DIR"] == "/var/run/paceline/checkpoint/demo"
    assert _env(pod)["PACELINE_CHECKPOINT_INTERVAL_STEPS"] == str(checkpoint.get("intervalSteps", 100))


@pytest.mark.parametrize(
    ("checkpoint", "directory"),
    [
        ({}, "/tmp/paceline/ml/demo/uid-1234"),
        ({"claimName": "shared-ckpt", "intervalSteps": 20}, "/var/run/paceline/checkpoint/demo"),
    ],
)
def test_parameter_servers_checkpoint_to_the_jobs_directory(checkpoint: dict, directory: str) -> None:
    spec = api.parse_spec(
        job(mode="Asynchronous", asynchronous={"parameterServers": 2}, checkpoint=checkpoint)["spec"]
    )
    pod = build_ps_pod(job_ref(job()), spec=spec, shard=1, workers=3, attempt=0, plan_hash="h", momentum=0.5)
    assert _env(pod)["PACELINE_CHECKPOINT_DIR"] == directory  # a replaced PS pod finds its shard's file
    assert _env(pod)["PACELINE_CHECKPOINT_INTERVAL_STEPS"] == str(checkpoint.get("intervalSteps", 100))
    mounts = pod["spec"]["containers"][0].get("volumeMounts") or []
    assert ({"name": "paceline-checkpoint", "mountPath": "/var/run/paceline/checkpoint"} in mounts) == bool(
        checkpoint
    )


def test_both_a_claim_and_a_template_is_invalid() -> None:
    with pytest.raises(api.InvalidSpec, match="claimName or volumeClaimTemplate, not both"):
        api.parse_spec(job(checkpoint={"claimName": "x", "volumeClaimTemplate": TEMPLATE})["spec"])


def _observe(tj: dict[str, Any], claims: frozenset[str]) -> Observed:
    return Observed(
        job=tj,
        spec=api.parsed(tj["spec"]),
        pods=[],
        service=None,
        control=None,
        now=T0,
        new_plan=PLAN,
        claims=claims,
    )


def test_a_missing_claim_keeps_the_job_unplanned_until_it_exists() -> None:
    tj = job(checkpoint={"claimName": "shared-ckpt"})
    waiting = decide(_observe(tj, frozenset({"other"})))
    assert waiting.create == [] and waiting.status is not None
    planned = next(c for c in waiting.status["conditions"] if c["type"] == str(ConditionType.PLANNED))
    assert planned["status"] == "False" and planned["reason"] == Reason.CHECKPOINT_VOLUME_MISSING
    assert "'shared-ckpt' does not exist in namespace ml" in planned["message"]
    assert [e.reason for e in waiting.events] == [EventReason.UNSCHEDULABLE]
    ready = decide(_observe(tj, frozenset({"shared-ckpt"})))
    assert sorted(o["kind"] for o in ready.create) == ["ConfigMap", "Pod", "Pod", "Pod", "Service"]


def test_a_claim_template_becomes_a_claim_the_job_owns() -> None:
    tj = job(checkpoint={"volumeClaimTemplate": TEMPLATE})
    first = decide(_observe(tj, frozenset()))
    (claim,) = [o for o in first.create if o["kind"] == "PersistentVolumeClaim"]
    assert claim == build_checkpoint_claim(job_ref(tj), spec=api.parse_spec(tj["spec"]))
    assert claim["metadata"]["name"] == "demo-checkpoint" and claim["spec"] == TEMPLATE
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    again = decide(_observe(tj, frozenset({"demo-checkpoint"})))
    assert not [o for o in again.create if o["kind"] == "PersistentVolumeClaim"]


def test_a_claim_template_without_access_modes_or_size_says_what_to_add() -> None:
    with pytest.raises(api.InvalidSpec, match="needs accessModes"):
        api.parse_spec(
            job(checkpoint={"volumeClaimTemplate": {"resources": {"requests": {"storage": "1Gi"}}}})["spec"]
        )
    with pytest.raises(api.InvalidSpec, match=r"resources\.requests\.storage"):
        api.parse_spec(job(checkpoint={"volumeClaimTemplate": {"accessModes": ["ReadWriteMany"]}})["spec"])
