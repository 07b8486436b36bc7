"""The reconcile decision: observed objects in, desired changes out (pure, level-based, idempotent).

Given the TrainingJob, its pods, service and control ConfigMap (and a fresh plan when one is needed), decide
what to create, patch and delete, the new status, and the events that explain each decision. Running it twice
on the same observation gives the same answer; running it after a partial apply converges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from paceline import api
from paceline.builders import (
    Assignment,
    JobRef,
    build_control,
    build_ps_pod,
    build_service,
    build_worker_pod,
    plan_from_json,
)
from paceline.conditions import Condition, find, merge_conditions
from paceline.momentum import MomentumPolicy, MomentumSettings, explicit_momentum, theory_momentum
from paceline.plan_types import JobPlan, sharding_json
from paceline.planning import PlanningError
from paceline.reasons import ConditionType, EventReason, Reason

MAX_BACKOFF_S = 300
UNSCHEDULABLE_RETRY_S = 10.0


@dataclass(frozen=True, kw_only=True)
class Event:
    """A Kubernetes event about the job."""

    type: str  # Normal | Warning
    reason: EventReason
    message: str


@dataclass(frozen=True, kw_only=True)
class Observed:
    """Everything the decision reads."""

    job: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    service: Mapping[str, Any] | None
    control: Mapping[str, Any] | None
    now: datetime
    new_plan: JobPlan | PlanningError | None = None  # computed by the caller when `needs_plan` says so


@dataclass(kw_only=True)
class Decision:
    """What to change. Apply order: events, status, creates/patches, deletes."""

    create: list[dict[str, Any]] = field(default_factory=list)
    patch_control: dict[str, Any] | None = None
    delete_pods: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def initial_explicit_momentum(spec: api.JobSpec, *, workers: int) -> float:
    """Explicit momentum before any staleness is measured: target − (1 − 1/M), the theory for M workers."""
    tuning = MomentumSettings.from_spec(spec.momentum_tuning, target=str(spec.momentum))
    if tuning.policy is MomentumPolicy.FIXED:
        return float(spec.momentum)
    return explicit_momentum(target=tuning.target, implicit=theory_momentum(workers), floor=tuning.floor)


def job_ref(job: Mapping[str, Any]) -> JobRef:
    """Identity of the job for ownerReferences."""
    meta = job["metadata"]
    return JobRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def stored_plan(control: Mapping[str, Any] | None, plan_hash: str) -> tuple[JobPlan, Assignment] | None:
    """The plan and assignment kept in the control ConfigMap, if they were made for this spec."""
    data = (control or {}).get("data") or {}
    if data.get("planHash") != plan_hash or "plan.json" not in data or "assignment.json" not in data:
        return None
    return plan_from_json(data["plan.json"]), Assignment.from_json(data["assignment.json"])


def needs_plan(job: Mapping[str, Any], control: Mapping[str, Any] | None) -> bool:
    """True when the caller must compute a fresh plan before deciding (no valid stored plan)."""
    try:
        spec = api.parse_spec(job.get("spec") or {})
    except api.InvalidSpec:
        return False
    if _terminal(job.get("status") or {}, int(job["metadata"].get("generation") or 0)):
        return False
    return stored_plan(control, spec.plan_hash()) is None


def _terminal(status: Mapping[str, Any], generation: int) -> bool:
    """Succeeded, or Failed for good (an invalid spec or pod template is retried once the spec changes)."""
    conds = status.get("conditions") or []
    failed = find(conds, ConditionType.FAILED)
    succeeded = find(conds, ConditionType.SUCCEEDED)
    if succeeded is not None and succeeded.get("status") == "True":
        return True
    if failed is None or failed.get("status") != "True" or failed.get("reason") == Reason.INVALID_SPEC:
        return False
    if failed.get("reason") == Reason.INVALID_POD_TEMPLATE:
        return failed.get("observedGeneration") == generation
    return True


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _deleting(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _label(pod: Mapping[str, Any], key: str) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(key)


def exit_info(pod: Mapping[str, Any]) -> tuple[int | None, str, str]:
    """(exit code, finishedAt, reason) of the first terminated container of a failed pod; the reason carries
    the container's termination message when it wrote one (e.g. a plan that does not match the model)."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            why = str(term.get("reason") or "Error")
            said = str(term.get("message") or "").strip()
            return term.get("exitCode"), str(term.get("finishedAt") or ""), f"{why}: {said}" if said else why
    return None, "", str(status.get("reason") or "Failed")


def retryable(policy: api.RestartPolicy, exit_code: int | None) -> bool:
    """Exit-code semantics: ExitCode retries 128+ (signals: OOM kill, preemption) and unknown codes only."""
    if policy is api.RestartPolicy.NEVER:
        return False
    if policy is api.RestartPolicy.ON_FAILURE:
        return True
    return exit_code is None or exit_code >= 128 or exit_code < 0


def plan_status(plan: JobPlan) -> dict[str, Any]:
    """status.plan: the strategy the workers execute, its predictions and the DP baseline."""
    optional = {
        "predictedStepSeconds": plan.predicted_step_s,
        "baselineStepSeconds": plan.baseline_step_s,
        "predictedMemoryBytesPerGPU": plan.predicted_memory_bytes_per_gpu,
    }
    return {
        "executed": str(plan.executed),
        "tensorParallel": plan.tensor_parallel,
        "searchSpace": plan.search_space,
        "strategy": plan.strategy,
        "summary": plan.summary,
        **{k: f"{v:.4g}" for k, v in optional.items() if v is not None},
        **(
            {
                "splits": [
                    {"module": s.module, "layer": s.layer, "style": str(s.style)}
                    | {"input": str(s.input), "output": str(s.output)}
                    for s in plan.splits
                ]
            }
            if plan.splits
            else {}
        ),
        **({"layers": list(plan.layers)} if plan.layers else {}),
    }


def _placed_message(plan: JobPlan) -> str:
    groups: dict[tuple[str, str], list[int]] = {}
    for w in plan.workers:
        groups.setdefault((w.node, w.gpu_product), []).append(w.rank)
    parts = [
        f"rank{'s' if len(r) > 1 else ''} {_ranges(r)} on {node} ({product})"
        for (node, product), r in groups.items()
    ]
    return f"{len(plan.workers)} worker pod(s) created: " + "; ".join(parts)


def _ranges(ranks: list[int]) -> str:
    """Compact rank list: [0, 1, 2, 5] → "0-2,5"."""
    runs: list[list[int]] = []
    for r in sorted(ranks):
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _transition_events(
    old: Sequence[Mapping[str, Any]], new: Sequence[Condition], plan: JobPlan | None
) -> list[Event]:
    events: list[Event] = []
    for cond in new:
        before = find(old, cond.type)
        if (
            before is not None
            and before.get("status") == cond.status_text
            and before.get("reason") == cond.reason
        ):
            continue
        if cond.type is ConditionType.PLANNED and cond.status:
            events.append(Event(type="Normal", reason=EventReason.PLANNED, message=cond.message))
        elif cond.type is ConditionType.PLANNED and cond.status is False:
            events.append(Event(type="Warning", reason=EventReason.UNSCHEDULABLE, message=cond.message))
        elif cond.type is ConditionType.PLACED and cond.status and plan is not None:
            events.append(Event(type="Normal", reason=EventReason.PLACED, message=cond.message))
        elif cond.type is ConditionType.RESTARTING and cond.status and cond.reason == Reason.WORKER_FAILED:
            events.append(Event(type="Warning", reason=EventReason.WORKER_FAILED, message=cond.message))
        elif cond.type is ConditionType.SUCCEEDED and cond.status:
            events.append(Event(type="Normal", reason=EventReason.SUCCEEDED, message=cond.message))
        elif cond.type is ConditionType.FAILED and cond.status:
            reason = EventReason.INVALID_SPEC if cond.reason == Reason.INVALID_SPEC else EventReason.FAILED
            events.append(Event(type="Warning", reason=reason, message=cond.message))
    return events


TELEMETRY_FIELDS = ("samplesPerSecond", "relativeSpeed", "straggler")


def _worker_rows(
    plan: JobPlan,
    assignment: Assignment,
    pods_by_rank: Mapping[int, Mapping[str, Any]],
    job: str,
    old_rows: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The per-worker status table; measured fields of running workers carry over between resyncs."""
    previous = {row.get("rank"): row for row in old_rows}
    rows = []
    for w in plan.workers:
        pod = pods_by_rank.get(w.rank)
        phase = _phase(pod) if pod is not None else "Missing"
        row = {
            "rank": w.rank,
            "pod": api.worker_pod_name(job, w.rank),
            "node": ((pod or {}).get("spec") or {}).get("nodeName") or w.node,
            "pool": w.pool,
            "gpuProduct": w.gpu_product,
            "batchShare": assignment.batch_sizes[w.rank]
            if w.rank < len(assignment.batch_sizes)
            else w.batch_share,
            "phase": phase,
        }
        if phase in ("Running", "Succeeded"):  # keep the last measurements of finished workers
            row |= {k: v for k, v in (previous.get(w.rank) or {}).items() if k in TELEMETRY_FIELDS}
        rows.append(row)
    return rows


def _carry(old: Mapping[str, Any], ctypes: Sequence[ConditionType]) -> list[Condition]:
    carried = []
    for ctype in ctypes:
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


def pod_rejected(job: Mapping[str, Any], pod: str, error: str, *, now: datetime) -> Decision:
    """The API server refused a worker pod built from the template: Failed until the spec changes."""
    old = dict(job.get("status") or {})
    generation = int(job["metadata"].get("generation") or 0)
    message = f"the API server rejected worker pod {pod} built from spec.template: {error}; fix spec.template"
    failed = Condition(
        type=ConditionType.FAILED, status=True, reason=Reason.INVALID_POD_TEMPLATE, message=message
    )
    kept = _carry(old, [t for t in ConditionType if t is not ConditionType.FAILED])
    status = {
        **old,
        "phase": "Failed",
        "conditions": merge_conditions(
            old.get("conditions") or [], [*kept, failed], now=_iso(now), generation=generation
        ),
    }
    return Decision(status=status, events=[Event(type="Warning", reason=EventReason.FAILED, message=message)])


def decide(obs: Observed) -> Decision:
    """Decide every change for one TrainingJob."""
    job = obs.job
    meta = job["metadata"]
    if meta.get("deletionTimestamp"):
        return Decision()  # the garbage collector removes the children
    generation = int(meta.get("generation") or 0)
    old = dict(job.get("status") or {})
    old_conds: list[Mapping[str, Any]] = list(old.get("conditions") or [])
    now = _iso(obs.now)
    ref = job_ref(job)
    decision = Decision()

    def finish(conds: list[Condition], status: dict[str, Any], plan: JobPlan | None) -> Decision:
        decision.events = _transition_events(old_conds, conds, plan) + decision.events
        status["conditions"] = merge_conditions(old_conds, conds, now=now, generation=generation)
        status["observedGeneration"] = generation
        failed = next((c for c in conds if c.type is ConditionType.FAILED and c.status), None)
        by_type = {c.type: c.status for c in conds}
        if failed is not None:
            status["phase"] = "Failed"
        elif by_type.get(ConditionType.SUCCEEDED):
            status["phase"] = "Succeeded"
        elif by_type.get(ConditionType.RESTARTING):
            status["phase"] = "Restarting"
        elif by_type.get(ConditionType.RUNNING):
            status["phase"] = "Running"
        else:
            status["phase"] = "Pending"
        decision.status = status
        return decision

    try:
        spec = api.parse_spec(job.get("spec") or {})
    except api.InvalidSpec as err:
        kept = _carry(old, [t for t in ConditionType if t is not ConditionType.FAILED])
        running = sum(1 for p in obs.pods if _phase(p) == "Running")
        note = f" ({running} running worker(s) left untouched)" if running else ""
        failed = Condition(
            type=ConditionType.FAILED, status=True, reason=Reason.INVALID_SPEC, message=f"{err}{note}"
        )
        return finish([*kept, failed], {**old}, None)

    if _terminal(old, generation):
        terminal_status = {**old}
        if (find(old_conds, ConditionType.FAILED) or {}).get("status") == "True":
            decision.delete_pods = [
                p["metadata"]["name"]
                for p in obs.pods
                if _phase(p) not in ("Succeeded", "Failed") and not _deleting(p)
            ]
        decision.status = terminal_status | {"observedGeneration": generation}
        return decision

    plan_hash = spec.plan_hash()
    stored = stored_plan(obs.control, plan_hash)
    spec_ok = Condition(
        type=ConditionType.FAILED, status=False, reason=Reason.SPEC_VALID, message="spec is valid"
    )
    if stored is None:
        if isinstance(obs.new_plan, PlanningError) or obs.new_plan is None:
            message = str(obs.new_plan) if obs.new_plan is not None else "waiting for a plan"
            cause = obs.new_plan.reason if obs.new_plan is not None else Reason.UNSCHEDULABLE
            unplanned = Condition(type=ConditionType.PLANNED, status=False, reason=cause, message=message)
            decision.requeue_after = UNSCHEDULABLE_RETRY_S
            kept = _carry(old, [ConditionType.PLACED, ConditionType.RUNNING, ConditionType.RESTARTING])
            return finish([unplanned, *kept, spec_ok], {**old}, None)
        plan = obs.new_plan
        old_assignment = (
            Assignment.from_json(obs.control["data"]["assignment.json"])
            if obs.control and "assignment.json" in (obs.control.get("data") or {})
            else None
        )
        assignment = Assignment(
            version=(old_assignment.version + 1) if old_assignment else 1,
            batch_sizes=tuple(w.batch_share for w in plan.workers),
            learning_rate=float(spec.learning_rate),
            momentum=float(spec.momentum),
        )
        control = build_control(ref, plan=plan, plan_hash=plan_hash, assignment=assignment)
        if obs.control is None:
            decision.create.append(control)
        else:
            decision.patch_control = control
            decision.events.append(
                Event(
                    type="Normal",
                    reason=EventReason.RESIZED,
                    message=f"spec changed: re-planned as {plan.summary}",
                )
            )
    else:
        plan, assignment = stored

    port = api.master_port(ref.uid)
    if obs.service is None:
        decision.create.append(build_service(ref, port=port))

    attempt = int(old.get("attempt") or 0)
    restarts = int(old.get("restarts") or 0)
    status: dict[str, Any] = {**old}
    current: dict[int, Mapping[str, Any]] = {}  # workers of this attempt, by rank
    servers: dict[int, Mapping[str, Any]] = {}  # parameter servers of this attempt, by shard
    names_present = set()
    for pod in obs.pods:
        name = pod["metadata"]["name"]
        names_present.add(name)
        is_current = (
            _label(pod, api.LABEL_ATTEMPT) == str(attempt)
            and ((pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_PLAN_HASH)) == plan_hash
        )
        role = _label(pod, api.LABEL_ROLE)
        if is_current and not _deleting(pod) and role in ("worker", "ps"):
            (current if role == "worker" else servers)[int(_label(pod, api.LABEL_RANK) or -1)] = pod
        elif not _deleting(pod):
            decision.delete_pods.append(name)

    planned = Condition(
        type=ConditionType.PLANNED, status=True, reason=Reason.PLAN_COMPUTED, message=plan.reason
    )
    status["plan"] = plan_status(plan)
    status["assignmentVersion"] = assignment.version
    world = len(plan.workers)

    # failures of the current attempt
    workers_done = len(current) == world and all(_phase(p) == "Succeeded" for p in current.values())
    failed_pods = [p for p in current.values() if _phase(p) == "Failed"]
    if not workers_done:  # a parameter server failing stops the workers' progress too
        failed_pods += [p for p in servers.values() if _phase(p) == "Failed"]
    if failed_pods:
        first = min(failed_pods, key=lambda p: exit_info(p)[1] or "~")
        code, _, why = exit_info(first)
        rank = _label(first, api.LABEL_RANK)
        where = (
            f"rank {rank} (pod {first['metadata']['name']} on {(first.get('spec') or {}).get('nodeName')})"
        )
        detail = f"{where} exited with code {code} ({why})" if code is not None else f"{where} failed ({why})"
        policy = spec.run_policy
        failure: tuple[Reason, str] | None = None
        if not retryable(policy.restart_policy, code):
            rule = (
                "restartPolicy Never"
                if policy.restart_policy is api.RestartPolicy.NEVER
                else "restartPolicy ExitCode treats codes 1–127 as permanent: fix the training script"
            )
            failure = (Reason.PERMANENT_FAILURE, f"{detail}; {rule}")
        elif restarts >= policy.backoff_limit:
            failure = (
                Reason.BACKOFF_LIMIT_EXCEEDED,
                f"{detail}; backoffLimit {policy.backoff_limit} reached after {restarts} restart(s)",
            )
        if failure is not None:
            return _fail(
                decision, finish, [*current.values(), *servers.values()], status, now, plan, planned, *failure
            )
        delay = min(MAX_BACKOFF_S, policy.backoff_seconds * (2**restarts))
        status["restarts"] = restarts + 1
        status["attempt"] = attempt + 1
        status["nextRestartTime"] = _iso(obs.now + timedelta(seconds=delay))
        decision.delete_pods = sorted(
            set(decision.delete_pods)
            | {p["metadata"]["name"] for p in [*current.values(), *servers.values()]}
        )
        decision.requeue_after = float(max(delay, 1))
        restarting = Condition(
            type=ConditionType.RESTARTING,
            status=True,
            reason=Reason.WORKER_FAILED,
            message=f"{detail}; restart {restarts + 1} of {policy.backoff_limit} in {delay} s",
        )
        status["workers"] = _worker_rows(plan, assignment, {}, ref.name, ())
        status["workersReady"] = f"0/{world}"
        stopped = Condition(
            type=ConditionType.RUNNING,
            status=False,
            reason=Reason.WORKERS_STOPPED,
            message="workers stopped after a failure",
        )
        return finish(
            [planned, *_carry(old, [ConditionType.PLACED]), stopped, restarting, spec_ok], status, plan
        )

    # backoff before re-creating pods after a restart
    next_restart = old.get("nextRestartTime")
    waiting = False
    if next_restart:
        due = datetime.fromisoformat(next_restart.replace("Z", "+00:00"))
        if obs.now < due:
            waiting = True
            decision.requeue_after = max(0.5, (due - obs.now).total_seconds())
        else:
            status.pop("nextRestartTime", None)

    created = 0
    if not waiting:
        for w in plan.workers:
            name = api.worker_pod_name(ref.name, w.rank)
            if w.rank in current or name in names_present:
                continue
            decision.create.append(
                build_worker_pod(
                    ref,
                    spec=spec,
                    placement=w,
                    world_size=world,
                    attempt=attempt,
                    plan_hash=plan_hash,
                    assignment=assignment,
                    port=port,
                    sharding=sharding_json(plan),
                )
            )
            created += 1
        initial_momentum = (
            initial_explicit_momentum(spec, workers=world) if spec.mode is api.Mode.ASYNCHRONOUS else 0.0
        )
        for shard in range(spec.parameter_servers):
            name = api.ps_pod_name(ref.name, shard)
            if shard in servers or name in names_present:
                continue
            decision.create.append(
                build_ps_pod(
                    ref,
                    spec=spec,
                    shard=shard,
                    workers=world,
                    attempt=attempt,
                    plan_hash=plan_hash,
                    momentum=initial_momentum,
                )
            )
            created += 1
        if created and not old.get("startTime"):
            status["startTime"] = now
        if any(
            name in names_present and w_rank not in current
            for w_rank, name in ((w.rank, api.worker_pod_name(ref.name, w.rank)) for w in plan.workers)
        ):
            decision.requeue_after = 1.0  # an old pod still holds the name: retry once it is gone

    phases = [_phase(p) for p in current.values()]
    running = phases.count("Running")
    bound = sum(1 for p in current.values() if (p.get("spec") or {}).get("nodeName"))
    status["workers"] = _worker_rows(plan, assignment, current, ref.name, old.get("workers") or ())
    status["workersReady"] = f"{running}/{world}"
    conds = [planned]
    if bound == world and len(current) == world:
        conds.append(
            Condition(
                type=ConditionType.PLACED,
                status=True,
                reason=Reason.PODS_SCHEDULED,
                message=_placed_message(plan),
            )
        )
    else:
        conds.append(
            Condition(
                type=ConditionType.PLACED,
                status=False,
                reason=Reason.PODS_PENDING,
                message=f"{bound}/{world} worker pods bound to nodes",
            )
        )
    succeeded = len(current) == world and phases.count("Succeeded") == world
    if running == world:
        conds.append(
            Condition(
                type=ConditionType.RUNNING,
                status=True,
                reason=Reason.WORKERS_RUNNING,
                message=f"all {world} workers running",
            )
        )
    else:
        conds.append(
            Condition(
                type=ConditionType.RUNNING,
                status=False,
                reason=Reason.WORKERS_STOPPED if succeeded else Reason.WORKERS_STARTING,
                message=f"{running}/{world} workers running",
            )
        )
    if waiting:
        conds.append(
            Condition(
                type=ConditionType.RESTARTING,
                status=True,
                reason=Reason.RESTARTED,
                message=f"re-creating workers after backoff at {next_restart}",
            )
        )
    elif find(old_conds, ConditionType.RESTARTING) is not None:
        conds.append(
            Condition(
                type=ConditionType.RESTARTING,
                status=False,
                reason=Reason.NO_FAILURE,
                message=f"{restarts} restart(s) so far",
            )
        )
    if succeeded:
        status["completionTime"] = now
        conds.append(
            Condition(
                type=ConditionType.SUCCEEDED,
                status=True,
                reason=Reason.ALL_WORKERS_SUCCEEDED,
                message=f"all {world} workers exited 0",
            )
        )
    conds.append(spec_ok)
    return finish(conds, status, plan)


def _fail(
    decision: Decision,
    finish: Any,
    pods: Sequence[Mapping[str, Any]],
    status: dict[str, Any],
    now: str,
    plan: JobPlan,
    planned: Condition,
    reason: Reason,
    message: str,
) -> Decision:
    decision.delete_pods = sorted(
        set(decision.delete_pods)
        | {p["metadata"]["name"] for p in pods if _phase(p) not in ("Succeeded", "Failed")}
    )
    status["completionTime"] = now
    status.pop("nextRestartTime", None)
    status["workersReady"] = f"0/{len(plan.workers)}"
    failed = Condition(type=ConditionType.FAILED, status=True, reason=reason, message=message)
    stopped = Condition(
        type=ConditionType.RUNNING, status=False, reason=Reason.WORKERS_STOPPED, message=message
    )
    result: Decision = finish([planned, stopped, failed], status, plan)
    return result
