"""Observe: what a pass reads besides the watch cache — the running workers' /metrics and the parameter
servers' staleness logs — turned by the live policies (balancer, momentum) into this pass's `Telemetry`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paceline import api, operator_metrics
from paceline.adapters import workers
from paceline.balancer import BalancingPolicy
from paceline.builders import plan_from_json
from paceline.controller.decide.children import initial_explicit_momentum
from paceline.controller.decide.members import Members, stored_members
from paceline.controller.decide.model import Event, MomentumPut, Rejection, Telemetry
from paceline.controller.decide.plan import stored_assignment
from paceline.controller.rebalance import JobControl, control_step, worker_max_batch
from paceline.controller.retune import AsyncControl, count_dropped, persisted, restore, retune_step
from paceline.reasons import EventReason
from paceline_worker.wire import Route

OBSERVE_EVERY_S = 1.8  # a Running job's workers are scraped at most this often (passes come every 2 s)
PERSIST_EVERY_S = 30.0  # the momentum state goes into the status at least this often (and on every change)


@dataclass(kw_only=True)
class JobMemory:
    """What a job's passes remember between them (in memory; an operator restart starts afresh)."""

    balance: JobControl | None = None
    momentum: AsyncControl | None = None
    generation: int = 0  # the membership generation `balance` measured
    generations_acked: dict[str, int] = field(default_factory=dict)  # pod uid → generation it holds
    rejected: Rejection | None = None
    observed_at: float = 0.0  # when the workers were last scraped (monotonic seconds)
    parsed: tuple[int, api.JobSpec | api.InvalidSpec] | None = None  # (generation, spec)
    token: str | None = None  # the job's control token, once read from (or written to) its Secret

    def spec(self, job: Mapping[str, Any]) -> api.JobSpec | api.InvalidSpec:
        """The job's spec parsed once per generation (the API server bumps it on every spec change)."""
        generation = int(job["metadata"].get("generation") or 0)
        if self.parsed is None or self.parsed[0] != generation:
            self.parsed = (generation, api.parsed(job.get("spec") or {}))
        return self.parsed[1]


def running_urls(
    pods: Sequence[Mapping[str, Any]], *, role: str, attempt: str, members: Members | None = None
) -> dict[int, str]:
    """rank → http://podIP:port of the running pods of one role in this attempt; with `members`, only
    their pods, ranked by the membership (a pod kept through a resize may hold another rank now)."""
    urls = {}
    for p in pods:
        meta, status = p["metadata"], p.get("status") or {}
        labels = meta["labels"]
        if not (
            status.get("phase") == "Running"
            and status.get("podIP")
            and labels.get(api.LABEL_ROLE) == role
            and labels.get(api.LABEL_ATTEMPT) == attempt
        ):
            continue
        rank = int(labels[api.LABEL_RANK]) if members is None else members.rank(meta["name"])
        if rank is not None:
            urls[rank] = f"http://{status['podIP']}:{api.METRICS_PORT}"
    return urls


def running_uids(pods: Sequence[Mapping[str, Any]], *, role: str, attempt: str) -> dict[int, str]:
    """rank → pod uid of the running pods of one role in this attempt (a new uid: a new incarnation)."""
    uids = {}
    for p in pods:
        meta, status = p["metadata"], p.get("status") or {}
        labels = meta["labels"]
        if (
            status.get("phase") == "Running"
            and labels.get(api.LABEL_ROLE) == role
            and labels.get(api.LABEL_ATTEMPT) == attempt
        ):
            uids[int(labels[api.LABEL_RANK])] = str(meta.get("uid") or meta["name"])
    return uids


def telemetry(
    job: Mapping[str, Any],
    spec: api.JobSpec,
    pods: Sequence[Mapping[str, Any]],
    control: Mapping[str, Any] | None,
    memory: JobMemory,
) -> Telemetry | None:
    """Scrape a Running job's workers and run its live policy; None when there is nothing to observe (or it
    was observed moments ago)."""
    status = job.get("status") or {}
    now = time.monotonic()
    if status.get("phase") != "Running" or now - memory.observed_at < OBSERVE_EVERY_S:
        return None  # passes woken by events in between keep the last measurements
    memory.observed_at = now
    attempt = str(status.get("attempt") or 0)
    if spec.mode is api.Mode.ASYNCHRONOUS:
        return _momentum(job, spec, pods, attempt, memory)
    if spec.balancing.policy is BalancingPolicy.DYNAMIC:
        return _balance(job, spec, pods, control, attempt, memory)
    return None


def _balance(
    job: Mapping[str, Any],
    spec: api.JobSpec,
    pods: Sequence[Mapping[str, Any]],
    control: Mapping[str, Any] | None,
    attempt: str,
    memory: JobMemory,
) -> Telemetry | None:
    """Synchronous jobs: measured speeds → the balancer → maybe a new assignment version."""
    assignment = stored_assignment(control)
    if assignment is None:
        return None
    members = stored_members(control, job["metadata"]["name"], assignment.world_size)
    urls = running_urls(pods, role="worker", attempt=attempt, members=members)
    if len(urls) != assignment.world_size:
        return None
    if memory.balance is None or memory.generation != members.generation:
        memory.balance, memory.generation = JobControl.create(spec.balancing), members.generation
    samples = workers.scrape_all({rank: f"{url}{Route.METRICS}" for rank, url in urls.items()})
    data = (control or {}).get("data") or {}
    plan = plan_from_json(data["plan.json"]) if "plan.json" in data else None
    outcome = control_step(
        state=memory.balance,
        samples=samples,
        assignment=assignment,
        settings=spec.balancing,
        now=time.time(),
        max_batch=None if plan is None else worker_max_batch(plan, samples),
    )
    meta = job["metadata"]
    operator_metrics.record_control(namespace=meta["namespace"], job=meta["name"], outcome=outcome)
    return Telemetry(
        worker_stats=outcome.worker_stats,
        throughput=outcome.throughput,
        assignment=outcome.new_assignment,
        push=(f"{urls[0]}{Route.ASSIGNMENT}", outcome.push) if outcome.push is not None else None,
        events=tuple(outcome.events),
    )


def _momentum(
    job: Mapping[str, Any],
    spec: api.JobSpec,
    pods: Sequence[Mapping[str, Any]],
    attempt: str,
    memory: JobMemory,
) -> Telemetry | None:
    """Asynchronous jobs: measured staleness and worker speeds → the explicit momentum the shards hold."""
    world = len((job.get("status") or {}).get("workers") or []) or 1
    ranks = running_urls(pods, role="worker", attempt=attempt)
    shards = running_urls(pods, role="ps", attempt=attempt)
    if len(shards) != spec.parameter_servers or len(ranks) != world:
        return None  # only a complete worker set is a worker-count change worth retuning for
    if memory.momentum is None:
        memory.momentum = _resumed(job, spec, world)
    state = memory.momentum
    if state.attempt != attempt:
        state.attempt, state.cursors = attempt, {}
    incarnations = running_uids(pods, role="ps", attempt=attempt)
    logs, dropped = {}, {}
    for shard, url in shards.items():
        log_key = incarnations.get(shard, str(shard))  # a new PS pod has a new log: read it from 0
        read = workers.read_staleness(url, state.cursors.get(log_key, 0))
        if read is not None:
            logs[log_key] = read
        dropped[log_key] = workers.read_dropped(url)
    dropped_before = state.dropped_total
    count_dropped(state, dropped, running=set(dropped))
    samples = workers.scrape_all({rank: f"{url}{Route.METRICS}" for rank, url in ranks.items()})
    retune = retune_step(
        state,
        staleness=logs,
        worker_speeds={f"w{rank}": s.compute_samples_per_second for rank, s in samples.items()},
        workers=[f"w{rank}" for rank in ranks],
        curvature={f"w{rank}": s.curvature for rank, s in samples.items() if s.curvature is not None},
    )
    if retune is None:
        return None
    applied = retune.applied
    meta = job["metadata"]
    operator_metrics.record_momentum(
        namespace=meta["namespace"], job=meta["name"], momentum=state.status, retuned=applied is not None
    )
    events = (
        (Event(type="Normal", reason=EventReason.MOMENTUM_RETUNED, message=applied.reason),)
        if applied
        else ()
    )
    put = MomentumPut(urls=tuple(shards.values()), version=retune.version, momentum=retune.momentum)
    changed = applied is not None or state.dropped_total != dropped_before
    now = time.monotonic()
    if changed or state.saved_at is None or now - state.saved_at >= PERSIST_EVERY_S:
        state.saved_at = now
        asynchronous = {"staleUpdatesDropped": state.dropped_total, "momentumState": persisted(state)}
    else:
        asynchronous = None  # the status keeps the last persisted state: no write for every pass
    return Telemetry(momentum=dict(state.status), momentum_put=put, events=events, asynchronous=asynchronous)


def _resumed(job: Mapping[str, Any], spec: api.JobSpec, world: int) -> AsyncControl:
    """The job's momentum state: as persisted in its status (an operator restart), else from the prior."""
    initial = initial_explicit_momentum(spec, workers=world)
    saved = ((job.get("status") or {}).get("asynchronous") or {}).get("momentumState")
    if isinstance(saved, str):
        state = restore(saved, settings=spec.momentum_tuning, workers=world, initial_explicit=initial)
        if state is not None:
            return state
    return AsyncControl.create(settings=spec.momentum_tuning, workers=world, initial_explicit=initial)


def learner_statuses(pods: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """Reinforcement mode: learner index → its GET /status, for the running learners that answer."""
    out: dict[int, dict[str, Any]] = {}
    for p in pods:
        meta, status = p["metadata"], p.get("status") or {}
        labels = meta.get("labels") or {}
        rank = str(labels.get(api.LABEL_RANK, ""))
        if labels.get(api.LABEL_ROLE) != "learner" or status.get("phase") != "Running" or not rank.isdigit():
            continue
        if not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        try:
            doc = workers.http_json(f"http://{status['podIP']}:{api.METRICS_PORT}{Route.STATUS}")
        except (OSError, ValueError):
            continue  # starting, or gone: the next pass asks again
        if isinstance(doc, dict):
            out[int(rank)] = doc
    return out
