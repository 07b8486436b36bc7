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


def test_a_lost_node_replans_keeps_the_pods_it_can_and_names_the_new_ones_afresh() -> None:
    """gpu-h100-0 is gone: re-plan on what is left; the T4 pod keeps its pod and becomes rank 0 of
    generation 1, the two moved workers get names no pod holds; a Warning `Resized` says what and why."""
    from dataclasses import replace

    from jobs import pod

    from paceline.controller.decide.plan import lost_nodes

    stored = control(version=4)
    usable = frozenset({"gpu-t4-0", "gpu-spare"})
    assert not needs_plan(job(), SPEC, stored, frozenset({"gpu-h100-0", "gpu-t4-0"}))
    assert needs_plan(job(), SPEC, stored, usable) and lost_nodes(PLAN, usable) == ["gpu-h100-0"]
    moved = replace(
        PLAN,
        workers=(
            replace(PLAN.workers[0], node="gpu-spare"),
            replace(PLAN.workers[1], node="gpu-spare"),
            PLAN.workers[2],
        ),
    )
    pods = [
        pod("demo-worker-0", rank=0, node="gpu-h100-0", phase="Running"),
        pod("demo-worker-1", rank=1, node="gpu-h100-0", phase="Running"),
        pod("demo-worker-2", rank=2, node="gpu-t4-0", phase="Running"),
    ]
    obs = Observed(
        job=job(),
        spec=SPEC,
        pods=pods,
        service=None,
        control=stored,
        now=T0,
        new_plan=moved,
        usable_nodes=usable,
    )
    planned = adopt_plan(obs, SPEC)
    assert isinstance(planned, Planned) and planned.assignment.version == 5
    assert planned.members.generation == 1
    assert planned.members.pods == ("demo-worker-2", "demo-worker-3", "demo-worker-4")
    assert [(w.rank, w.node) for w in planned.plan.workers] == [
        (0, "gpu-t4-0"),
        (1, "gpu-spare"),
        (2, "gpu-spare"),
    ]
    assert planned.assignment.batch_sizes == (16, 56, 56), "shares follow the workers they belong to"
    assert "members.json" in (planned.patch_control or {})["data"]
    (event,) = planned.events
    assert event.type == "Warning" and event.reason is EventReason.RESIZED
    assert (
        "gpu-h100-0" in event.message and "from 3 to 3" in event.message and "1 pod(s) kept" in event.message
    )
    kept = adopt_plan(observed(control=stored, usable_nodes=frozenset({"gpu-h100-0", "gpu-t4-0"})), SPEC)
    assert isinstance(kept, Planned) and kept.plan == PLAN and kept.events == []
    assert kept.members.pods == ("demo-worker-0", "demo-worker-1", "demo-worker-2")


def test_growth_is_adopted_only_when_the_gain_beats_the_pause() -> None:
    """A candidate with more workers replaces the stored plan only when its predicted throughput over the
    horizon, less the pause, exceeds minGainPercent."""
    from dataclasses import replace

    stored = control(version=2)
    current = replace(PLAN, predicted_step_s=1.0)
    stored = build_control(
        job_ref(job()), plan=current, plan_hash=SPEC.plan_hash(), assignment=stored_assignment(stored)
    )
    extra = replace(PLAN.workers[2], rank=3, node="gpu-t4-1")
    small = replace(current, workers=(*PLAN.workers, extra), predicted_step_s=0.95)  # +5 %
    large = replace(current, workers=(*PLAN.workers, extra), predicted_step_s=0.6)  # +67 %
    held = adopt_plan(observed(control=stored, new_plan=small), SPEC)
    assert isinstance(held, Planned) and held.plan == current and held.patch_control is None
    grown = adopt_plan(observed(control=stored, new_plan=large), SPEC)
    assert isinstance(grown, Planned) and len(grown.plan.workers) == 4 and grown.members.generation == 1
    (event,) = grown.events
    assert event.type == "Normal" and "from 3 to 4" in event.message
    assert SPEC.elastic.worth_resizing(old_samples_per_s=100, new_samples_per_s=130)
    assert not SPEC.elastic.worth_resizing(old_samples_per_s=100, new_samples_per_s=105)


def test_a_deleted_control_configmap_is_recreated_as_last_seen() -> None:
    seen = control(version=4)
    planned = adopt_plan(observed(control=None, lost_control=seen), SPEC)
    assert isinstance(planned, Planned) and planned.plan == PLAN and planned.assignment.version == 4
    (again,) = planned.create
    assert seen["data"].items() <= again["data"].items() and planned.patch_control is None
    assert [e.reason for e in planned.events] == [EventReason.CONTROL_RECREATED]
    assert "version 4" in planned.events[0].message


def test_a_lost_control_of_another_spec_is_not_recreated_the_job_replans() -> None:
    stale = control(version=4, plan_hash="older")
    planned = adopt_plan(observed(control=None, lost_control=stale, new_plan=PLAN), SPEC)
    assert isinstance(planned, Planned) and [e.reason for e in planned.events] == []


def test_without_any_control_the_version_goes_on_from_the_status() -> None:
    tj = job()
    tj["status"] = {"assignmentVersion": 7}
    obs = Observed(job=tj, spec=SPEC, pods=[], service=None, control=None, now=T0, new_plan=PLAN)
    planned = adopt_plan(obs, SPEC)
    assert isinstance(planned, Planned) and planned.assignment.version == 8


def test_a_control_lost_while_the_operator_was_down_keeps_the_pods_the_status_names() -> None:
    """The status says generation 2 runs on demo-worker-2 (T4) and demo-worker-5 (H100): with no control
    ConfigMap and nothing remembered, the job re-plans and keeps both pods (generation 3, ranks restart in
    place); pods named by rank are kept as they are, in the generation the status names."""
    from jobs import pod

    tj = job()
    rows = [{"rank": 0, "pod": "demo-worker-2"}, {"rank": 1, "pod": "demo-worker-5"}]
    tj["status"] = {"assignmentVersion": 6, "membersGeneration": 2, "workers": rows}
    pods = [
        pod("demo-worker-2", rank=0, node="gpu-t4-0", phase="Running"),
        pod("demo-worker-5", rank=1, node="gpu-h100-0", phase="Running"),
    ]
    obs = Observed(job=tj, spec=SPEC, pods=pods, service=None, control=None, now=T0, new_plan=PLAN)
    planned = adopt_plan(obs, SPEC)
    assert isinstance(planned, Planned) and planned.members.generation == 3
    assert planned.members.pods[:2] == ("demo-worker-2", "demo-worker-5")  # kept pods first, in their order
    assert planned.assignment.version == 7
    tj["status"] = {"membersGeneration": 1, "workers": [{"pod": f"demo-worker-{r}"} for r in range(3)]}
    by_rank = adopt_plan(
        Observed(job=tj, spec=SPEC, pods=[], service=None, control=None, now=T0, new_plan=PLAN), SPEC
    )
    assert isinstance(by_rank, Planned) and by_rank.members.generation == 1
    assert by_rank.members.pods == ("demo-worker-0", "demo-worker-1", "demo-worker-2")
