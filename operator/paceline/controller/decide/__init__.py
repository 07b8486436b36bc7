"""The reconcile decision: observed objects in, desired changes out (pure, level-based, idempotent).

A pipeline of small stages — validate → plan → children → failures/backoff → status — each a pure function
with its own tests. Running it twice on the same observation gives the same answer; running it after a
partial apply converges.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from paceline import api
from paceline.conditions import Condition
from paceline.controller.decide.children import (
    Children,
    classify,
    deleting,
    missing,
    service,
    token_secret,
    unschedulable,
)
from paceline.controller.decide.failures import Failure, Restart, backoff_until, judge
from paceline.controller.decide.generations import generation_puts
from paceline.controller.decide.model import Decision, Event, MomentumPut, Observed, Rejection, Telemetry
from paceline.controller.decide.plan import Planned, Unplanned, adopt_plan, in_place, may_grow, needs_plan
from paceline.controller.decide.reinforcement import decide_reinforcement
from paceline.controller.decide.scale_out import Held, placeholders, scale_out
from paceline.controller.decide.status import (
    SPEC_VALID,
    carry,
    conclude,
    iso,
    live_status,
    plan_status,
    progress_conditions,
    stopped_conditions,
    worker_rows,
)
from paceline.controller.decide.validate import Finished, Invalid, Refused, Valid, phase, validate
from paceline.controller.decide.volumes import checkpoint_volume
from paceline.reasons import ConditionType, EventReason, Reason

UNSCHEDULABLE_RETRY_S = 10.0

__all__ = [
    "Decision",
    "Event",
    "MomentumPut",
    "Observed",
    "Rejection",
    "Telemetry",
    "decide",
    "may_grow",
    "needs_plan",
]


def decide(obs: Observed) -> Decision:
    """Decide every change for one TrainingJob."""
    if obs.job["metadata"].get("deletionTimestamp"):
        return Decision()  # the garbage collector removes the children
    checked = validate(obs)
    if not isinstance(checked, Valid):
        return _settled(obs, checked)
    if checked.spec.mode is api.Mode.REINFORCEMENT:
        return decide_reinforcement(obs, checked.spec)
    volume = checkpoint_volume(obs, checked.spec)
    planned = volume if isinstance(volume, Unplanned) else adopt_plan(obs, checked.spec)
    if isinstance(planned, Unplanned):
        return _waiting(obs, checked.spec, planned)
    decision = _progress(obs, checked.spec, planned)
    if not isinstance(volume, Unplanned):
        decision.create = [*volume, *decision.create]
    return decision


def _waiting(obs: Observed, spec: api.JobSpec, planned: Unplanned) -> Decision:
    """No plan fits: report why; with too few GPUs and spec.elastic.provision, ask the node autoscaler for
    the workers replicas.min still lacks."""
    old = obs.job.get("status") or {}
    status = dict(old)
    decision = Decision(requeue_after=UNSCHEDULABLE_RETRY_S)
    have = Held(products=planned.free or (), waiting=planned.free is not None)
    scaling = _scale_out(obs, spec, have, decision, status)
    kept = carry(old, [ConditionType.PLACED, ConditionType.RUNNING, ConditionType.RESTARTING])
    conds = [planned.condition, *kept, SPEC_VALID, *([scaling] if scaling is not None else [])]
    decision.status, events = conclude(obs, status, conds)
    decision.events = events + decision.events
    return decision


def _settled(obs: Observed, checked: Invalid | Refused | Finished) -> Decision:
    """A job that does not progress: an invalid spec or pod template, or a finished job."""
    old = dict(obs.job.get("status") or {})
    if isinstance(checked, Finished):
        live = [p for p in obs.pods if phase(p) not in ("Succeeded", "Failed") and not deleting(p)]
        stop = [p["metadata"]["name"] for p in live] if checked.failed else sorted(placeholders(obs.pods))
        return Decision(
            status={**old, "observedGeneration": obs.job["metadata"].get("generation") or 0}, delete_pods=stop
        )
    reason = Reason.INVALID_SPEC if isinstance(checked, Invalid) else Reason.INVALID_POD_TEMPLATE
    failed = Condition(type=ConditionType.FAILED, status=True, reason=reason, message=checked.message)
    kept = carry(old, [t for t in ConditionType if t is not ConditionType.FAILED])
    status, events = conclude(obs, old, [*kept, failed])
    return Decision(status=status, events=events)


def _progress(obs: Observed, spec: api.JobSpec, planned: Planned) -> Decision:
    """A planned job: create what is missing, react to failures, report."""
    old = obs.job.get("status") or {}
    attempt = int(old.get("attempt") or 0)
    children = classify(obs.pods, attempt=attempt, planned=planned, in_place=in_place(spec))
    decision = Decision(
        create=[
            *token_secret(obs.job, obs.token, obs.fresh_token),
            *planned.create,
            *service(obs.job, obs.service),
        ],
        patch_control=planned.patch_control,
        delete_pods=list(children.stale),
        events=list(planned.events),
    )
    status = {**old, **live_status(obs, obs.telemetry), "plan": plan_status(planned.plan)}
    status["assignmentVersion"] = planned.assignment.version
    status["membersGeneration"] = planned.members.generation
    world, restarts = len(planned.plan.workers), int(old.get("restarts") or 0)
    verdict = judge(children, spec, world=world, restarts=restarts)
    if verdict is None:
        conds = _advance(obs, spec, planned, children, decision, status)
    else:
        conds = _stop(obs, planned, children, verdict, decision, status)
    decision.status, events = conclude(obs, status, conds)
    decision.events = events + decision.events
    return decision


def _stop(
    obs: Observed,
    planned: Planned,
    children: Children,
    verdict: Failure | Restart,
    decision: Decision,
    status: dict[str, Any],
) -> list[Condition]:
    """An attempt failed: stop its pods, then restart after the backoff or fail for good."""
    old = obs.job.get("status") or {}
    pods = [*children.workers.values(), *children.servers.values()]
    status["workersReady"] = f"0/{len(planned.plan.workers)}"
    if isinstance(verdict, Restart):
        attempt, restarts = int(old.get("attempt") or 0), int(old.get("restarts") or 0)
        decision.delete_pods = sorted({*decision.delete_pods, *(p["metadata"]["name"] for p in pods)})
        decision.requeue_after = float(max(verdict.delay_s, 1))
        status |= {"restarts": restarts + 1, "attempt": attempt + 1, "workers": worker_rows(obs, planned, {})}
        status["nextRestartTime"] = iso(obs.now + timedelta(seconds=verdict.delay_s))
    else:
        live = [p["metadata"]["name"] for p in pods if phase(p) not in ("Succeeded", "Failed")]
        decision.delete_pods = sorted({*decision.delete_pods, *live})
        status["completionTime"] = iso(obs.now)
        status.pop("nextRestartTime", None)
    return stopped_conditions(planned, verdict, old)


def _scale_out(
    obs: Observed, spec: api.JobSpec, now: Planned | Held, decision: Decision, status: dict[str, Any]
) -> Condition | None:
    """Placeholders for the GPUs the job wants from the node autoscaler (spec.elastic.provision); the
    ScalingOut condition."""
    asked = scale_out(obs, spec, now)
    decision.create += asked.create
    decision.delete_pods = sorted({*decision.delete_pods, *asked.delete})
    decision.events += asked.events
    if asked.status is not None:
        status["scaleOut"] = asked.status
    else:
        status.pop("scaleOut", None)
    if asked.status and asked.status.get("requested"):
        decision.requeue_after = min(decision.requeue_after or 30.0, 30.0)  # pending timeouts are timed
    return asked.condition


def _unschedulable(
    obs: Observed,
    spec: api.JobSpec,
    planned: Planned,
    children: Children,
    decision: Decision,
    status: dict[str, Any],
) -> None:
    """Gang rule of an elastic job: a worker that no node takes for elastic.pendingTimeoutSeconds is planned
    without — its node joins status.unschedulableNodes, which the next plan avoids."""
    timeout = spec.elastic.pending_timeout_seconds
    stuck = unschedulable(children.workers, planned, obs.now, timeout)
    known = set(status.get("unschedulableNodes") or ())
    fresh = [(pod, node) for pod, node in stuck if node not in known]
    if not fresh:
        return
    status["unschedulableNodes"] = sorted(known | {node for _, node in fresh})
    for pod, node in fresh:
        message = f"{pod} found no room on {node} for {timeout}s; re-planning without {node}"
        decision.events.append(Event(type="Warning", reason=EventReason.UNSCHEDULABLE, message=message))
    decision.requeue_after = 0.5  # the next pass re-plans


def _advance(
    obs: Observed,
    spec: api.JobSpec,
    planned: Planned,
    children: Children,
    decision: Decision,
    status: dict[str, Any],
) -> list[Condition]:
    """No failure: after any backoff, create the missing pods; report progress and live telemetry."""
    old = obs.job.get("status") or {}
    waiting, scaling = backoff_until(old, obs.now), None
    if waiting is not None:
        decision.requeue_after = max(0.5, (waiting - obs.now).total_seconds())
    else:
        status.pop("nextRestartTime", None)
        created, blocked = missing(obs.job, spec, planned, children, attempt=int(old.get("attempt") or 0))
        decision.create += created
        if created and not old.get("startTime"):
            status["startTime"] = iso(obs.now)
        if blocked:
            decision.requeue_after = 1.0  # an old pod still holds the name: retry once it is gone
        if in_place(spec):
            puts, later = generation_puts(obs.job, planned, children, obs.generations_acked)
            decision.generation_puts = puts
            if later:
                decision.requeue_after = 1.0  # a kept pod or rank 0 has no address yet
        scaling = _scale_out(obs, spec, planned, decision, status)
        if spec.elastic_range:
            _unschedulable(obs, spec, planned, children, decision, status)
    conds = progress_conditions(planned, children, waiting=waiting, old=old)
    conds += [scaling] if scaling is not None else []
    running = sum(1 for p in children.workers.values() if phase(p) == "Running")
    status["workers"] = worker_rows(obs, planned, children.workers)
    status["workersReady"] = f"{running}/{len(planned.plan.workers)}"
    if any(c.type is ConditionType.SUCCEEDED and c.status for c in conds):
        status["completionTime"] = iso(obs.now)
    if obs.telemetry is not None:
        decision.events += obs.telemetry.events
        decision.push, decision.momentum_put = obs.telemetry.push, obs.telemetry.momentum_put
    return conds
