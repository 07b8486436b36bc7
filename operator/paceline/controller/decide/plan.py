"""Stage 2 — plan: adopt the plan stored in the control ConfigMap, or a fresh one (the spec changed, a node
of the job was lost, or capacity appeared that is worth growing into), with its membership (which pod runs
which rank) and the assignment in force (a new version from the balancer replaces it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from paceline import api
from paceline.builders import JobRef, build_control, plan_from_json
from paceline.conditions import Condition
from paceline.controller.decide.members import Members, first_members, regroup, stored_members
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
    plan_hash: str  # the spec's plan hash: pods made for another spec are stale
    members: Members  # which pod runs which rank, this generation
    create: list[dict[str, Any]] = field(default_factory=list)  # a new control ConfigMap
    patch_control: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Unplanned:
    condition: Condition  # Planned=False with the reason
    free: tuple[str, ...] | None = None  # too few worker slots: the GPU type of each free one


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


def avoided(job: Mapping[str, Any]) -> frozenset[str]:
    """Nodes this job plans without: where a worker found no room for elastic.pendingTimeoutSeconds."""
    return frozenset((job.get("status") or {}).get("unschedulableNodes") or ())


def lost_nodes(plan: JobPlan, usable: Collection[str] | None, avoid: Collection[str] = ()) -> list[str]:
    """Nodes of the plan that are no longer usable GPU nodes (deleted, NotReady or cordoned) or avoided."""
    return sorted(
        {w.node for w in plan.workers if (usable is not None and w.node not in usable) or w.node in avoid}
    )


def needs_plan(
    job: Mapping[str, Any],
    spec: api.JobSpec | api.InvalidSpec,
    control: Mapping[str, Any] | None,
    usable_nodes: Collection[str] | None = None,
) -> bool:
    """True when the caller must compute a fresh plan before deciding: no valid stored plan, or one whose
    workers lost their node (`usable_nodes`: the GPU nodes pods can run on now; None = not known)."""
    if isinstance(spec, api.InvalidSpec) or spec.mode is api.Mode.REINFORCEMENT:  # no plan: learners, actors
        return False
    if terminal(job.get("status") or {}, generation(job)):
        return False
    stored = stored_plan(control, spec.plan_hash())
    return stored is None or bool(lost_nodes(stored[0], usable_nodes, avoided(job)))


def may_grow(
    job: Mapping[str, Any], spec: api.JobSpec | api.InvalidSpec, control: Mapping[str, Any] | None
) -> bool:
    """True when a running elastic job could use more workers than its plan has (worth a candidate plan
    when capacity appears)."""
    if isinstance(spec, api.InvalidSpec) or not spec.elastic_range or spec.mode is api.Mode.REINFORCEMENT:
        return False
    if (job.get("status") or {}).get("phase") != "Running":
        return False
    stored = stored_plan(control, spec.plan_hash())
    return stored is not None and len(stored[0].workers) < spec.replicas_max


def in_place(spec: api.JobSpec) -> bool:
    """Whether pods of this job survive a resize (their launcher restarts the ranks for a new generation)."""
    return spec.mode is api.Mode.SYNCHRONOUS and spec.elastic_range


def _rates(spec: api.JobSpec, current: JobPlan, candidate: JobPlan) -> tuple[float, float] | None:
    """Predicted throughput of both plans: samples/s from the cost model when both have a step time, else
    the plans' summed peak FLOP/s (plain data parallel with speed-proportional shares); None: unknown."""
    if current.predicted_step_s and candidate.predicted_step_s:
        return spec.global_batch / current.predicted_step_s, spec.global_batch / candidate.predicted_step_s
    if current.peak_flops and candidate.peak_flops:
        return current.peak_flops, candidate.peak_flops
    return None


def worth_growing(spec: api.JobSpec, current: JobPlan, candidate: JobPlan) -> bool:
    """A candidate plan with more workers is adopted when its predicted gain, net of the pause, is enough."""
    rates = _rates(spec, current, candidate)
    if len(candidate.workers) <= len(current.workers) or rates is None:
        return False
    return spec.elastic.worth_resizing(old_samples_per_s=rates[0], new_samples_per_s=rates[1])


def adopt_plan(obs: Observed, spec: api.JobSpec) -> Planned | Unplanned:
    """Stage 2: the plan in force and the control ConfigMap writes it needs."""
    plan_hash = spec.plan_hash()
    if obs.control is None and obs.lost_control is not None:
        recreated = _recreated(obs, spec)
        if recreated is not None:
            return recreated
    stored = stored_plan(obs.control, plan_hash)
    lost = lost_nodes(stored[0], obs.usable_nodes, avoided(obs.job)) if stored is not None else []
    grow = (
        stored is not None
        and not lost
        and isinstance(obs.new_plan, JobPlan)
        and worth_growing(spec, stored[0], obs.new_plan)
    )
    if stored is not None and not lost and not grow:
        return _kept(obs, spec, *stored)
    if not isinstance(obs.new_plan, JobPlan):
        message = str(obs.new_plan) if obs.new_plan is not None else "waiting for a plan"
        cause = obs.new_plan.reason if isinstance(obs.new_plan, PlanningError) else Reason.UNSCHEDULABLE
        return Unplanned(
            condition=Condition(type=ConditionType.PLANNED, status=False, reason=cause, message=message),
            free=obs.new_plan.free if isinstance(obs.new_plan, PlanningError) else None,
        )
    return _replanned(obs, spec, obs.new_plan, stored, lost)


def _kept(obs: Observed, spec: api.JobSpec, plan: JobPlan, assignment: Assignment) -> Planned:
    """The stored plan stays; a newer assignment from the balancer replaces the stored one."""
    plan_hash, name = spec.plan_hash(), obs.job["metadata"]["name"]
    members = stored_members(obs.control, name, len(plan.workers))
    newer = obs.telemetry.assignment if obs.telemetry is not None else None
    if newer is None or newer.version <= assignment.version:
        return Planned(plan=plan, assignment=assignment, plan_hash=plan_hash, members=members)
    control = build_control(
        job_ref(obs.job), plan=plan, plan_hash=plan_hash, assignment=newer, members=members.to_json()
    )
    return Planned(plan=plan, assignment=newer, plan_hash=plan_hash, members=members, patch_control=control)


def _recreated(obs: Observed, spec: api.JobSpec) -> Planned | None:
    """The control ConfigMap was deleted by hand: write it again as last seen (plan, assignment, membership),
    so the running workers go on untouched; None when what was seen belongs to another spec."""
    assert obs.lost_control is not None
    stored = stored_plan(obs.lost_control, spec.plan_hash())
    if stored is None:
        return None
    kept = _kept(dataclasses.replace(obs, control=obs.lost_control, lost_control=None), spec, *stored)
    control = build_control(
        job_ref(obs.job),
        plan=kept.plan,
        plan_hash=kept.plan_hash,
        assignment=kept.assignment,
        members=kept.members.to_json(),
    )
    name = control["metadata"]["name"]
    event = Event(
        type="Warning",
        reason=EventReason.CONTROL_RECREATED,
        message=f"control ConfigMap {name} was deleted; recreated as last seen (assignment version "
        f"{kept.assignment.version}, generation {kept.members.generation}): the workers go on",
    )
    return dataclasses.replace(kept, create=[control], patch_control=None, events=[*kept.events, event])


def _replanned(
    obs: Observed,
    spec: api.JobSpec,
    plan: JobPlan,
    stored: tuple[JobPlan, Assignment] | None,
    lost: list[str],
) -> Planned:
    """A fresh plan: its membership (pods kept where a resize can keep them), assignment and ConfigMap."""
    ref, plan_hash = job_ref(obs.job), spec.plan_hash()
    previous_assignment = stored_assignment(obs.control)
    previous = first_members(ref.name, 0)
    if obs.control is None:
        plan, members = _recovered(obs, spec, plan)
    else:
        previous = stored_members(obs.control, ref.name, _stored_world(obs.control))
        if stored is None:  # the spec changed: every pod is new, named by rank again
            members = first_members(ref.name, len(plan.workers), previous.generation + 1)
        else:
            plan, members = regroup(plan, previous, obs.pods, job=ref.name, keep=in_place(spec))
    # without a control ConfigMap (a new job, or one deleted while the operator was down) the version the
    # status last reported goes on, so running workers accept the new assignment
    last_version = (obs.job.get("status") or {}).get("assignmentVersion") or 0
    assignment = Assignment(
        version=(previous_assignment.version if previous_assignment else int(last_version)) + 1,
        batch_sizes=tuple(w.batch_share for w in plan.workers),
        learning_rate=float(spec.learning_rate),
        momentum=float(spec.momentum),
    )
    control = build_control(
        ref, plan=plan, plan_hash=plan_hash, assignment=assignment, members=members.to_json()
    )
    planned = Planned(plan=plan, assignment=assignment, plan_hash=plan_hash, members=members)
    if obs.control is None:
        return dataclasses.replace(planned, create=[control])
    kept = len(set(members.pods) & set(previous.pods)) if stored is not None else 0
    event = _resized(stored, lost, plan, members, kept=kept)
    return dataclasses.replace(planned, patch_control=control, events=[event])


def _recovered(obs: Observed, spec: api.JobSpec, plan: JobPlan) -> tuple[JobPlan, Members]:
    """No control ConfigMap: a new job's first membership — or, for a job whose ConfigMap was deleted while
    the operator was down, the membership its status last reported (status.workers' pods and
    status.membersGeneration), so its pods are kept: as they are when named by rank, else regrouped onto
    `plan` (their launchers restart the ranks in place)."""
    name, old = obs.job["metadata"]["name"], obs.job.get("status") or {}
    rows = tuple(str(row.get("pod") or "") for row in old.get("workers") or ())
    generation = int(old.get("membersGeneration") or 0)
    if rows and rows == first_members(name, len(plan.workers)).pods:
        return plan, first_members(name, len(plan.workers), generation)
    if not rows or not all(rows) or not in_place(spec):
        return plan, first_members(name, len(plan.workers))
    return regroup(plan, Members(generation=generation, pods=rows), obs.pods, job=name, keep=True)


def _stored_world(control: Mapping[str, Any]) -> int:
    data = control.get("data") or {}
    return len(plan_from_json(data["plan.json"]).workers) if "plan.json" in data else 0


def _resized(
    stored: tuple[JobPlan, Assignment] | None, lost: list[str], plan: JobPlan, members: Members, *, kept: int
) -> Event:
    """Why the job was re-planned, from what to what."""
    if stored is None:
        return Event(
            type="Normal", reason=EventReason.RESIZED, message=f"spec changed: re-planned as {plan.summary}"
        )
    before = stored[0]
    sizes = f"from {len(before.workers)} to {len(plan.workers)} worker(s)"
    if lost:
        why = f"node(s) {', '.join(lost)} lost (deleted, NotReady or cordoned) or without room for a worker"
        kind = "Warning"
    else:
        why = "GPUs became free and the predicted gain is worth the pause"
        kind = "Normal"
    message = (
        f"{why}: re-planned {sizes}, {plan.summary}; generation {members.generation}, "
        f"{kept} pod(s) kept, their processes too where the plan splits no module; training goes on "
        "from the latest state"
    )
    return Event(type=kind, reason=EventReason.RESIZED, message=message)
