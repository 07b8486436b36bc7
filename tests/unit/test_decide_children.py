"""Stage 3 of the decision — children: this attempt's pods vs stale ones, and what is still missing."""

from __future__ import annotations

from jobs import PLAN, job, pod

from paceline import api
from paceline.controller.decide.children import (
    classify,
    initial_explicit_momentum,
    missing,
    service,
)
from paceline.controller.decide.members import first_members
from paceline.controller.decide.plan import Planned
from paceline_worker.wire import Assignment

SPEC = api.parse_spec(job()["spec"])
HASH = SPEC.plan_hash()
PLANNED = Planned(
    plan=PLAN,
    assignment=Assignment(version=1, batch_sizes=(56, 56, 16)),
    plan_hash=HASH,
    members=first_members("demo", 3),
)


def test_pods_of_another_attempt_or_plan_are_stale_and_deleting_ones_are_left_alone() -> None:
    pods = [
        pod("demo-worker-0", rank=0, plan_hash=HASH),
        pod("demo-worker-1", rank=1, attempt=1, plan_hash=HASH),  # a later attempt's
        pod("demo-worker-2", rank=2, plan_hash="older"),
        pod("demo-ps-0", role="ps", rank=0, plan_hash=HASH),
    ]
    pods[1]["metadata"]["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    children = classify(pods, attempt=0, planned=PLANNED)
    assert list(children.workers) == [0] and list(children.servers) == [0]
    assert children.stale == ["demo-worker-2"]
    assert "demo-worker-1" in children.names


def test_only_missing_pods_are_built_and_a_name_still_held_blocks() -> None:
    pods = [pod("demo-worker-0", rank=0, plan_hash=HASH), pod("demo-worker-2", rank=2, plan_hash="older")]
    children = classify(pods, attempt=0, planned=PLANNED)
    created, blocked = missing(job(), SPEC, PLANNED, children, attempt=0)
    assert [p["metadata"]["name"] for p in created] == ["demo-worker-1"]
    assert blocked  # rank 2's name is held by the stale pod until it is gone


def test_the_service_is_built_once() -> None:
    assert [s["kind"] for s in service(job(), None)] == ["Service"]
    assert service(job(), {"metadata": {"name": "demo"}}) == []


def test_asynchronous_servers_start_from_the_theory_momentum_and_fixed_keeps_the_target() -> None:
    spec = api.parse_spec(job(mode="Asynchronous", asynchronous={"parameterServers": 2})["spec"])
    initial = initial_explicit_momentum(spec, workers=4)
    assert -0.3 <= initial <= 1 - 0.1 / 0.25 + 1e-9  # at most the composition rule's 0.6 for M = 4
    fixed = api.parse_spec(job(mode="Asynchronous", momentumTuning={"policy": "Fixed"})["spec"])
    assert initial_explicit_momentum(fixed, workers=4) == 0.9
    created, _ = missing(job(), spec, PLANNED, classify([], attempt=0, planned=PLANNED), attempt=0)
    assert sorted(p["metadata"]["name"] for p in created if "-ps-" in p["metadata"]["name"]) == [
        "demo-ps-0",
        "demo-ps-1",
    ]
