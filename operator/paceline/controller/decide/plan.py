"""Stage 2 — plan: adopt the plan stored in the control ConfigMap, or a fresh one, and the assignment in
force (a new version from the balancer replaces it)."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
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
    plan_hash: str  # the spec's plan hash and the placement: the identity of this plan's pods
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


def placement_hash(spec_hash: str, plan: JobPlan) -> str:
    """Identity of a plan's pods: the spec's plan hash plus where the workers run (a re-plan after a node was
    lost keeps the spec hash but moves pods, and the pods of the old placement become stale)."""
    nodes = ",".join(f"{w.rank}:{w.node}" for w in plan.workers)
    return f"{spec_hash}.{hashlib.sha256(nodes.encode()).hexdigest()[:10]}"


def lost_nodes(plan: JobPlan, usable: Collection[str] | None) -> list[str]:
    """Nodes of the plan that are no longer usable GPU nodes (deleted, NotReady or cordoned)."""
    if usable is None:
        return []
    return sorted({w.node for w in plan.workers if w.node not in usable})


def needs_plan(
    job: Mapping[str, Any],
    spec: api.JobSpec | api.InvalidSpec,
    control: Mapping[str, Any] | None,
    usable_nodes: Collection[str] | None = None,
) -> bool:
    """True when the caller must compute a fresh plan before deciding: no valid stored plan, or one whose
    workers lost their node (`usable_nodes`: the GPU nodes pods can run on now; None = not known)."""
    if isinstance(spec, api.InvalidSpec):
        return False
    if terminal(job.get("status") or {}, generation(job)):
        return False
    stored = stored_plan(control, spec.plan_hash())
    return stored is None or bool(lost_nodes(stored[0], usable_nodes))


def adopt_plan(obs: Observed, spec: api.JobSpec) -> Planned | Unplanned:
    """Stage 2: the plan in force and the control ConfigMap writes it needs."""
    plan_hash = spec.plan_hash()
    stored = stored_plan(obs.control, plan_hash)
    ref = job_ref(obs.job)
    lost = lost_nodes(stored[0], obs.usable_nodes) if stored is not None else []
    if stored is not None and not lost:
        plan, assignment = stored
        pods = placement_hash(plan_hash, plan)
        newer = obs.telemetry.assignment if obs.telemetry is not None else None
        if newer is None or newer.version <= assignment.version:
            return Planned(plan=plan, assignment=assignment, plan_hash=pods)
        control = build_control(ref, plan=plan, plan_hash=plan_hash, assignment=newer)
        return Planned(plan=plan, assignment=newer, plan_hash=pods, patch_control=control)
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
    pods = placement_hash(plan_hash, plan)
    if obs.control is None:
        return Planned(plan=plan, assignment=assignment, plan_hash=pods, create=[control])
    return Planned(
        plan=plan,
        assignment=assignment,
        plan_hash=pods,
        patch_control=control,
        events=[_resized(stored, lost, plan)],
    )


def _resized(stored: tuple[JobPlan, Assignment] | None, lost: list[str], plan: JobPlan) -> Event:
    """Why the job was re-planned, from what to what."""
    if stored is not None and lost:
        before = stored[0]
        why = f"node(s) {', '.join(lost)} lost (deleted, NotReady or cordoned)"
        message = (
            f"{why}: re-planned from {len(before.workers)} to {len(plan.workers)} worker(s), "
            f"{plan.summary}; workers resume from the last checkpoint"
        )
        return Event(type="Warning", reason=EventReason.RESIZED, message=message)
    return Event(
        type="Normal", reason=EventReason.RESIZED, message=f"spec changed: re-planned as {plan.summary}"
    )
