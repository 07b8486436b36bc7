"""Stage 5 — status: the conditions, the one-word phase, the per-worker table and the events that explain
each transition, computed once per pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from paceline.conditions import Condition, find, merge_conditions
from paceline.controller.decide.children import Children
from paceline.controller.decide.failures import Failure, Restart
from paceline.controller.decide.model import Event, Observed, Telemetry
from paceline.controller.decide.plan import Planned
from paceline.controller.decide.validate import generation, phase
from paceline.plan_types import JobPlan
from paceline.reasons import ConditionType, EventReason, Reason

TELEMETRY_FIELDS = ("samplesPerSecond", "relativeSpeed", "straggler", "maxBatch")
SPEC_VALID = Condition(
    type=ConditionType.FAILED, status=False, reason=Reason.SPEC_VALID, message="spec is valid"
)


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_status(plan: JobPlan) -> dict[str, Any]:
    """status.plan: the strategy the workers execute, its predictions and the DP baseline."""
    optional = {
        "predictedStepSeconds": plan.predicted_step_s,
        "baselineStepSeconds": plan.baseline_step_s,
        "predictedMemoryBytesPerGPU": plan.predicted_memory_bytes_per_gpu,
    }
    splits = [
        {
            "module": s.module,
            "layer": s.layer,
            "style": str(s.style),
            "input": str(s.input),
            "output": str(s.output),
        }
        for s in plan.splits
    ]
    return {
        "executed": str(plan.executed),
        "tensorParallel": plan.tensor_parallel,
        "searchSpace": plan.search_space,
        "strategy": plan.strategy,
        "summary": plan.summary,
        **{k: f"{v:.4g}" for k, v in optional.items() if v is not None},
        **({"splits": splits} if splits else {}),
        **({"layers": list(plan.layers)} if plan.layers else {}),
    }


def _ranges(ranks: list[int]) -> str:
    """Compact rank list: [0, 1, 2, 5] → "0-2,5"."""
    runs: list[list[int]] = []
    for r in sorted(ranks):
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def placed_message(plan: JobPlan) -> str:
    groups: dict[tuple[str, str], list[int]] = {}
    for w in plan.workers:
        groups.setdefault((w.node, w.gpu_product), []).append(w.rank)
    parts = [
        f"rank{'s' if len(r) > 1 else ''} {_ranges(r)} on {node} ({gpu})" for (node, gpu), r in groups.items()
    ]
    return f"{len(plan.workers)} worker pod(s) created: " + "; ".join(parts)


def _event_for(cond: Condition) -> tuple[str, EventReason] | None:
    """(type, reason) of the event a condition's new state calls for, if any."""
    if cond.type is ConditionType.PLANNED and cond.status is not None:
        if cond.status:
            return ("Normal", EventReason.PLANNED)
        bad_model = cond.reason is Reason.INVALID_MODEL
        return ("Warning", EventReason.INVALID_SPEC if bad_model else EventReason.UNSCHEDULABLE)
    if cond.type is ConditionType.SCALING_OUT:
        if cond.reason in (Reason.BUDGET_TOO_SMALL, Reason.NO_NODE_POOL):
            return ("Warning", EventReason.SCALE_OUT)
        return ("Normal", EventReason.SCALE_OUT) if cond.status else None
    if not cond.status:
        return None
    if cond.type is ConditionType.FAILED:
        return (
            "Warning",
            EventReason.INVALID_SPEC if cond.reason == Reason.INVALID_SPEC else EventReason.FAILED,
        )
    if cond.type is ConditionType.RESTARTING:
        return ("Warning", EventReason.WORKER_FAILED) if cond.reason == Reason.WORKER_FAILED else None
    return {
        ConditionType.PLACED: ("Normal", EventReason.PLACED),
        ConditionType.SUCCEEDED: ("Normal", EventReason.SUCCEEDED),
    }.get(cond.type)


def transition_events(old: Sequence[Mapping[str, Any]], new: Sequence[Condition]) -> list[Event]:
    """One event per condition that changed status or reason, for the transitions users care about."""
    events = []
    for cond in new:
        before = find(old, cond.type)
        if before is not None and (before.get("status"), before.get("reason")) == (
            cond.status_text,
            cond.reason,
        ):
            continue
        hit = _event_for(cond)
        if hit is not None:
            events.append(Event(type=hit[0], reason=hit[1], message=cond.message))
    return events


def carry(old: Mapping[str, Any], types: Sequence[ConditionType]) -> list[Condition]:
    """The previous conditions of these types, unchanged."""
    carried = []
    for ctype in types:
        before = find(old.get("conditions") or [], ctype)
        if before is not None:
            status = {"True": True, "False": False}.get(str(before.get("status")))
            carried.append(
                Condition(
                    type=ctype,
                    status=status,
                    reason=str(before.get("reason")),
                    message=str(before.get("message")),
                )
            )
    return carried


def phase_of(conds: Sequence[Condition]) -> str:
    """The one-word summary, derived from the conditions (never read back as state)."""
    on = {c.type for c in conds if c.status}
    for ctype in (
        ConditionType.FAILED,
        ConditionType.SUCCEEDED,
        ConditionType.RESTARTING,
        ConditionType.RUNNING,
    ):
        if ctype in on:
            return str(ctype)
    return "Pending"


def conclude(
    obs: Observed, status: dict[str, Any], conds: list[Condition]
) -> tuple[dict[str, Any], list[Event]]:
    """The final status (conditions merged per the API conventions, phase, observedGeneration) and the
    events its transitions call for."""
    old = list((obs.job.get("status") or {}).get("conditions") or [])
    gen = generation(obs.job)
    merged = merge_conditions(old, conds, now=iso(obs.now), generation=gen)
    return {
        **status,
        "conditions": merged,
        "observedGeneration": gen,
        "phase": phase_of(conds),
    }, transition_events(old, conds)


def worker_rows(
    obs: Observed, planned: Planned, workers: Mapping[int, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The per-worker table; measured fields come from this pass's telemetry, else carry over while the
    worker runs (or after it finished)."""
    old = {row.get("rank"): row for row in (obs.job.get("status") or {}).get("workers") or ()}
    stats = obs.telemetry.worker_stats if obs.telemetry is not None else {}
    shares, members = planned.assignment.batch_sizes, planned.members
    rows = []
    for w in planned.plan.workers:
        pod = workers.get(w.rank)
        state = phase(pod) if pod is not None else "Missing"
        row: dict[str, Any] = {
            "rank": w.rank,
            "pod": members.pods[w.rank] if w.rank < len(members.pods) else "",
            "node": ((pod or {}).get("spec") or {}).get("nodeName") or w.node,
            "pool": w.pool,
            "gpuProduct": w.gpu_product,
            "batchShare": shares[w.rank] if w.rank < len(shares) else w.batch_share,
            "phase": state,
        }
        if state in ("Running", "Succeeded"):
            measured = stats.get(w.rank) or {
                k: v for k, v in (old.get(w.rank) or {}).items() if k in TELEMETRY_FIELDS
            }
            row |= measured
        rows.append(row)
    return rows


def progress_conditions(
    planned: Planned, children: Children, *, waiting: datetime | None, old: Mapping[str, Any]
) -> list[Condition]:
    """Planned, Placed, Running, Restarting and Succeeded of a job whose workers are starting or running."""
    plan, workers = planned.plan, children.workers
    world = len(plan.workers)
    phases = [phase(p) for p in workers.values()]
    running, done = phases.count("Running"), len(workers) == world and phases.count("Succeeded") == world
    bound = sum(1 for p in workers.values() if (p.get("spec") or {}).get("nodeName"))
    placed = bound == world and len(workers) == world
    conds = [
        Condition(type=ConditionType.PLANNED, status=True, reason=Reason.PLAN_COMPUTED, message=plan.reason),
        Condition(
            type=ConditionType.PLACED, status=True, reason=Reason.PODS_SCHEDULED, message=placed_message(plan)
        )
        if placed
        else Condition(
            type=ConditionType.PLACED,
            status=False,
            reason=Reason.PODS_PENDING,
            message=f"{bound}/{world} worker pods bound to nodes",
        ),
        Condition(
            type=ConditionType.RUNNING,
            status=True,
            reason=Reason.WORKERS_RUNNING,
            message=f"all {world} workers running",
        )
        if running == world
        else Condition(
            type=ConditionType.RUNNING,
            status=False,
            reason=Reason.WORKERS_STOPPED if done else Reason.WORKERS_STARTING,
            message=f"{running}/{world} workers running",
        ),
    ]
    if waiting is not None:
        message = f"re-creating workers after backoff at {iso(waiting)}"
        conds.append(
            Condition(type=ConditionType.RESTARTING, status=True, reason=Reason.RESTARTED, message=message)
        )
    elif find(old.get("conditions") or [], ConditionType.RESTARTING) is not None:
        message = f"{int(old.get('restarts') or 0)} restart(s) so far"
        conds.append(
            Condition(type=ConditionType.RESTARTING, status=False, reason=Reason.NO_FAILURE, message=message)
        )
    if done:
        message = f"all {world} workers exited 0"
        conds.append(
            Condition(
                type=ConditionType.SUCCEEDED,
                status=True,
                reason=Reason.ALL_WORKERS_SUCCEEDED,
                message=message,
            )
        )
    return [*conds, SPEC_VALID]


def stopped_conditions(
    planned: Planned, verdict: Failure | Restart, old: Mapping[str, Any]
) -> list[Condition]:
    """The conditions of a job whose attempt just failed: for good, or until the restart."""
    planned_cond = Condition(
        type=ConditionType.PLANNED, status=True, reason=Reason.PLAN_COMPUTED, message=planned.plan.reason
    )
    if isinstance(verdict, Failure):
        stopped = Condition(
            type=ConditionType.RUNNING, status=False, reason=Reason.WORKERS_STOPPED, message=verdict.message
        )
        failed = Condition(
            type=ConditionType.FAILED, status=True, reason=verdict.reason, message=verdict.message
        )
        return [planned_cond, stopped, failed]
    stopped = Condition(
        type=ConditionType.RUNNING,
        status=False,
        reason=Reason.WORKERS_STOPPED,
        message="workers stopped after a failure",
    )
    restarting = Condition(
        type=ConditionType.RESTARTING, status=True, reason=Reason.WORKER_FAILED, message=verdict.message
    )
    return [planned_cond, *carry(old, [ConditionType.PLACED]), stopped, restarting, SPEC_VALID]


def live_status(obs: Observed, telemetry: Telemetry | None) -> dict[str, Any]:
    """The measured parts of status: throughput, momentum and the asynchronous mode's counters and
    persisted state from this pass, else as they were."""
    old = obs.job.get("status") or {}
    status = {k: old[k] for k in ("throughput", "momentum", "asynchronous") if k in old}
    if telemetry is not None and telemetry.throughput:
        status["throughput"] = dict(telemetry.throughput)
    if telemetry is not None and telemetry.momentum:
        status["momentum"] = dict(telemetry.momentum)
    if telemetry is not None and telemetry.asynchronous is not None:
        status["asynchronous"] = dict(telemetry.asynchronous)
    return status
