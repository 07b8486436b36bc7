"""Stage 5 of the decision — status: conditions, phase, events per transition, the worker table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobs import PLAN, job, pod

from paceline import api
from paceline.conditions import Condition
from paceline.controller.decide.children import classify
from paceline.controller.decide.members import first_members
from paceline.controller.decide.model import Observed, Telemetry
from paceline.controller.decide.plan import Planned
from paceline.controller.decide.status import (
    conclude,
    phase_of,
    progress_conditions,
    transition_events,
    worker_rows,
)
from paceline.reasons import ConditionType, EventReason, Reason
from paceline_worker.wire import Assignment

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
PLANNED = Planned(
    plan=PLAN,
    assignment=Assignment(version=3, batch_sizes=(50, 50, 28)),
    plan_hash="h",
    members=first_members("demo", 3),
)


def observed(status: dict[str, Any] | None = None, telemetry: Telemetry | None = None) -> Observed:
    tj = job()
    tj["status"] = status or {}
    return Observed(
        job=tj, spec=api.parsed(tj["spec"]), pods=[], service=None, control=None, now=T0, telemetry=telemetry
    )


def running(rank: int) -> dict[str, Any]:
    return pod(f"demo-worker-{rank}", rank=rank, plan_hash="h", node=PLAN.workers[rank].node, phase="Running")


def test_all_workers_running_is_placed_and_running_with_the_placement_described() -> None:
    children = classify([running(r) for r in range(3)], attempt=0, planned=PLANNED)
    conds = progress_conditions(PLANNED, children, waiting=None, old={})
    by_type = {c.type: c for c in conds}
    assert (
        by_type[ConditionType.PLACED].status
        and "ranks 0-1 on gpu-h100-0 (H100)" in by_type[ConditionType.PLACED].message
    )
    assert by_type[ConditionType.RUNNING].reason == Reason.WORKERS_RUNNING
    assert phase_of(conds) == "Running"


def test_events_fire_on_transitions_only() -> None:
    placed = Condition(type=ConditionType.PLACED, status=True, reason=Reason.PODS_SCHEDULED, message="3 pods")
    assert [e.reason for e in transition_events([], [placed])] == [EventReason.PLACED]
    same = [{"type": "Placed", "status": "True", "reason": "PodsScheduled"}]
    assert transition_events(same, [placed]) == []
    invalid = Condition(type=ConditionType.FAILED, status=True, reason=Reason.INVALID_SPEC, message="bad")
    assert [e.type for e in transition_events([], [invalid])] == ["Warning"]
    restarted = Condition(
        type=ConditionType.RESTARTING, status=True, reason=Reason.RESTARTED, message="after backoff"
    )
    assert transition_events([], [restarted]) == []  # only the failure that caused the restart is an event


def test_conclude_keeps_transition_times_and_reports_the_generation() -> None:
    before = {
        "type": "Placed",
        "status": "True",
        "reason": "PodsScheduled",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    placed = Condition(type=ConditionType.PLACED, status=True, reason=Reason.PODS_SCHEDULED, message="m")
    status, events = conclude(observed({"conditions": [before]}), {}, [placed])
    assert status["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert status["observedGeneration"] == 1 and status["phase"] == "Pending" and events == []


def test_worker_rows_take_this_passes_measurements_else_keep_the_last() -> None:
    workers = {r: running(r) for r in range(3)}
    old = {"workers": [{"rank": 2, "samplesPerSecond": "9.0", "straggler": "Healthy"}]}
    live = Telemetry(
        worker_stats={0: {"samplesPerSecond": "40.5", "relativeSpeed": "4.00", "straggler": "Healthy"}}
    )
    rows = worker_rows(observed(old, live), PLANNED, workers)
    assert [r["batchShare"] for r in rows] == [50, 50, 28]  # the assignment in force, not the plan's shares
    assert rows[0]["samplesPerSecond"] == "40.5" and rows[2]["samplesPerSecond"] == "9.0"
    assert "samplesPerSecond" not in rows[1]
    assert worker_rows(observed(old), PLANNED, {})[2]["phase"] == "Missing"
