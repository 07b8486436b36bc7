"""Stage 2 — plan: adopt the plan stored in the control ConfigMap, or a fresh one, and the assignment in
force (a new version from the balancer replaces it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paceline import api
from paceline.builders import JobRef, build_control, plan_from_json
from paceline.conditions import Condition
from paceline.controller.decide.model import Event, Observed
from paceline.controller.decide.validate import generation, terminal
from paceline.controller.planning import PlanningError
from paceline.plan_types import JobPlan
from paceline.reasons import ConditionType, EventReason, Reason
from paceline_worker.wire import Assignment, parse_assignment


@dataclass(frozen=True, kw_only=True)
class Planned:
    plan: JobPlan
    assignment: Assignment  # the one in force after this pass
    plan_hash: str
    create: list[dict[str, Any]] = field(default_factory=list)  # a new control ConfigMap
    patch_control: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Unplanned:
    condition: Condition  # Planned=False with the reason


def job_ref(job: Mapping[str, Any]) -> JobRef:
    """Identity of the job for ownerReferences."""
    meta = job["metadata"]
    return JobRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def stored_assignment(control: Mapping[str, Any] | None) -> Assignment | None:
    data = (control or {}).get("data") or {}
    return parse_assignment(data["assignment.json"], world_size=None) if "assignment.json" in data else None


def stored_plan(control: Mapping[str, Any] | None, plan_hash: str) -> tuple[JobPlan, Assignment] | None:
    """The plan and assignment kept in the control ConfigMap, if they were made for this spec."""
    data = (control or {}).get("data") or {}
    assignment = stored_assignment(control)
    if data.get("planHash") != plan_hash or "plan.json" not in data or assignment is None:
        return None
    return plan_from_json(data["plan.json"]), assignment


def needs_plan(
    job: Mapping[str, Any], spec: api.JobSpec | api.InvalidSpec, control: Mapping[str, Any] | None
) -> bool:
    """True when the caller must compute a fresh plan before deciding (no valid stored plan)."""
    if isinstance(spec, api.InvalidSpec):
        return False
    if terminal(job.get("status") or {}, generation(job)):
        return False
    return stored_plan(control, spec.plan_hash()) is None


def adopt_plan(obs: Observed, spec: api.JobSpec) -> Planned | Unplanned:
    """Stage 2: the plan in force and the control ConfigMap writes it needs."""
    plan_hash = spec.plan_hash()
    stored = stored_plan(obs.control, plan_hash)
    ref = job_ref(obs.job)
    if stored is not None:
        plan, assignment = stored
        newer = obs.telemetry.assignment if obs.telemetry is not None else None
        if newer is None or newer.version <= assignment.version:
            return Planned(plan=plan, assignment=assignment, plan_hash=plan_hash)
        control = build_control(ref, plan=plan, plan_hash=plan_hash, assignment=newer)
        return Planned(plan=plan, assignment=newer, plan_hash=plan_hash, patch_control=control)
    if not isinstance(obs.new_plan, JobPlan):
        message = str(obs.new_plan) if obs.new_plan is not None else "waiting for a plan"
        cause = obs.new_plan.reason if isinstance(obs.new_plan, PlanningError) else Reason.UNSCHEDULABLE
        return Unplanned(
            condition=Condition(type=ConditionType.PLANNED, status=False, reason=cause, message=message)
        )
    plan, previous = obs.new_plan, stored_assignment(obs.control)
    assignment = Assignment(
        version=previous.version + 1 if previous else 1,
        batch_sizes=tuple(w.batch_share for w in plan.workers),
        learning_rate=float(spec.learning_rate),
        momentum=float(spec.momentum),
    )
    control = build_control(ref, plan=plan, plan_hash=plan_hash, assignment=assignment)
    if obs.control is None:
        return Planned(plan=plan, assignment=assignment, plan_hash=plan_hash, create=[control])
    resized = Event(
        type="Normal", reason=EventReason.RESIZED, message=f"spec changed: re-planned as {plan.summary}"
    )
    return Planned(
        plan=plan, assignment=assignment, plan_hash=plan_hash, patch_control=control, events=[resized]
    )
