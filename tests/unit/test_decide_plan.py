"""Stage 2 of the decision — plan: the stored plan, a fresh one, none, and the balancer's new assignment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs import PLAN, job

from paceline import api
from paceline.builders import build_control
from paceline.controller.decide.model import Observed, Telemetry
from paceline.controller.decide.plan import (
    Planned,
    Unplanned,
    adopt_plan,
    job_ref,
    needs_plan,
    stored_assignment,
)
from paceline.controller.planning import PlanningError
from paceline.reasons import EventReason
from paceline_worker.wire import Assignment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
SPEC = api.parse_spec(job()["spec"])


def observed(*, control: dict[str, Any] | None = None, **kwargs: Any) -> Observed:
    tj = job()
    return Observed(job=tj, spec=SPEC, pods=[], service=None, control=control, now=T0, **kwargs)


def control(version: int = 1, plan_hash: str = SPEC.plan_hash()) -> dict[str, Any]:
    assignment = Assignment(version=version, batch_sizes=(56, 56, 16), learning_rate=0.05, momentum=0.9)
    return build_control(job_ref(job()), plan=PLAN, plan_hash=plan_hash, assignment=assignment)


def test_a_fresh_plan_creates_the_control_configmap_with_assignment_version_1() -> None:
    planned = adopt_plan(observed(new_plan=PLAN), SPEC)
    assert isinstance(planned, Planned) and planned.plan == PLAN
    assert planned.assignment == Assignment(
        version=1, batch_sizes=(56, 56, 16), learning_rate=0.05, momentum=0.9
    )
    assert [o["kind"] for o in planned.create] == ["ConfigMap"] and planned.patch_control is None


def test_the_stored_plan_is_adopted_without_writing_anything() -> None:
    stored = control(version=4)
    assert not needs_plan(job(), SPEC, stored)
    planned = adopt_plan(observed(control=stored), SPEC)
    assert isinstance(planned, Planned) and planned.assignment.version == 4
    assert planned.create == [] and planned.patch_control is None and planned.events == []


def test_a_spec_change_replans_with_the_next_assignment_version() -> None:
    stale = control(version=4, plan_hash="older")
    assert needs_plan(job(), SPEC, stale)
    planned = adopt_plan(observed(control=stale, new_plan=PLAN), SPEC)
    assert isinstance(planned, Planned) and planned.assignment.version == 5
    assert planned.patch_control is not None and [e.reason for e in planned.events] == [EventReason.RESIZED]


def test_no_plan_yet_is_unplanned_with_the_planners_reason() -> None:
    failed = adopt_plan(observed(new_plan=PlanningError("only 1 worker slot free")), SPEC)
    assert isinstance(failed, Unplanned) and failed.condition.status is False
    assert failed.condition.reason == "Unschedulable" and "1 worker slot" in failed.condition.message
    waiting = adopt_plan(observed(), SPEC)
    assert isinstance(waiting, Unplanned) and waiting.condition.message == "waiting for a plan"


def test_the_balancers_newer_assignment_is_written_to_the_control_configmap() -> None:
    newer = Assignment(version=5, batch_sizes=(60, 60, 8), learning_rate=0.05, momentum=0.9)
    planned = adopt_plan(observed(control=control(version=4), telemetry=Telemetry(assignment=newer)), SPEC)
    assert isinstance(planned, Planned) and planned.assignment == newer
    assert planned.patch_control is not None
    assert stored_assignment(planned.patch_control) == newer
    older = Assignment(version=3, batch_sizes=(60, 60, 8))
    kept = adopt_plan(observed(control=control(version=4), telemetry=Telemetry(assignment=older)), SPEC)
    assert isinstance(kept, Planned) and kept.patch_control is None


def test_a_stored_assignment_with_a_null_learning_rate_reads_back() -> None:
    stored = control()
    stored["data"]["assignment.json"] = (
        '{"version":2,"batchSizes":[56,56,16],"learningRate":null,"momentum":null}'
    )
    assignment = stored_assignment(stored)
    assert assignment is not None and assignment.learning_rate is None and assignment.version == 2


def test_a_lost_node_replans_and_moves_the_pods_off_it() -> None:
    """A node of the stored plan is gone: re-plan on what is left (the old placement's pods become stale),
    with a Warning `Resized` event that says from what to what and why."""
    from dataclasses import replace

    from paceline.controller.decide.plan import lost_nodes, placement_hash

    stored = control(version=4)
    nodes = {w.node for w in PLAN.workers}
    gone = sorted(nodes)[-1]
    usable = frozenset(nodes - {gone} | {"gpu-spare"})
    assert not needs_plan(job(), SPEC, stored, frozenset(nodes))
    assert needs_plan(job(), SPEC, stored, usable) and lost_nodes(PLAN, usable) == [gone]
    moved = replace(
        PLAN,
        workers=tuple(replace(w, node="gpu-spare") if w.node == gone else w for w in PLAN.workers[:-1]),
    )
    planned = adopt_plan(observed(control=stored, new_plan=moved, usable_nodes=usable), SPEC)
    assert isinstance(planned, Planned) and planned.plan == moved and planned.assignment.version == 5
    assert planned.plan_hash != placement_hash(SPEC.plan_hash(), PLAN), "pods of the old placement are stale"
    (event,) = planned.events
    assert event.type == "Warning" and event.reason is EventReason.RESIZED
    assert gone in event.message and f"from {len(PLAN.workers)} to {len(moved.workers)}" in event.message
    kept = adopt_plan(observed(control=stored, usable_nodes=frozenset(nodes)), SPEC)
    assert isinstance(kept, Planned) and kept.plan == PLAN and kept.events == []
