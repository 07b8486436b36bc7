"""Live rebalancing, one resync at a time (pure: scraped samples in, decisions and status out).

Each pass the caller scrapes every rank (`paceline.adapters.workers.scrape_all`) and calls `control_step`
with the job's `JobControl` (in-memory state kept between resyncs). Cumulative worker counters become
per-step window means (Δcompute seconds / Δsteps at batch b), which feed the balancer's `FleetTracker`;
`decide_rebalance` then says whether new shares are worth a new assignment version. See
docs/balancing.md ("Control loop").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from paceline.balancer import (
    BalancingSettings,
    ChangePoint,
    FleetTracker,
    Observation,
    RebalanceDecision,
    StragglerState,
    StragglerStatus,
    decide_rebalance,
    ideal_throughput,
)
from paceline.controller.decide.model import Event
from paceline.controller.samples import WorkerSample
from paceline.plan_types import JobPlan
from paceline.planner.devices import GIB, DeviceCatalog
from paceline.planner.memory_bounds import MemoryFootprint, max_batch
from paceline.reasons import EventReason
from paceline_worker.wire import Assignment

_CATALOG = DeviceCatalog()

OBSERVATION_INTERVAL_S = 2.0  # the operator observes a running job every 2 s (controller/reconcile.py)
RATE_WINDOW_S = 10.0  # measured rates (status, metrics) span the samples of about the last 10 s
MIN_OBSERVATIONS = 3  # windows per worker before its estimate may move shares


def worker_name(rank: int) -> str:
    """The balancer's name for a rank (as it appears in `Rebalanced` messages: "w0 32→43")."""
    return f"w{rank}"


@dataclass(kw_only=True)
class JobControl:
    """Per-job control state, kept in memory between resyncs (a restart starts it afresh)."""

    tracker: FleetTracker
    previous: dict[int, WorkerSample] = field(default_factory=dict)  # last sample per rank
    recent: dict[int, deque[WorkerSample]] = field(default_factory=dict)  # samples of the rate window
    last_change_at: float | None = None  # when control_step last produced a new assignment
    reported_stragglers: set[int] = field(default_factory=set)  # persistent stragglers already announced
    min_observations: int = MIN_OBSERVATIONS
    resyncs: int = 0
    observations: int = 0  # windows fed to the tracker
    skipped_windows: int = 0  # windows dropped because the batch size or version changed within them
    rebalances: int = 0
    stragglers_detected: int = 0
    change_points: int = 0
    observation_interval_s: float = OBSERVATION_INTERVAL_S
    reported_changes: dict[str, float] = field(default_factory=dict)  # worker → detected_at already announced

    @classmethod
    def create(
        cls, settings: BalancingSettings, *, observation_interval_s: float = OBSERVATION_INTERVAL_S
    ) -> JobControl:
        tracker = FleetTracker(
            estimator_config=settings.estimator_config(),
            straggler_config=settings.straggler_config(observation_interval_s=observation_interval_s),
        )
        return cls(tracker=tracker, observation_interval_s=observation_interval_s)


@dataclass(frozen=True, kw_only=True)
class ControlOutcome:
    """What one resync decided. The caller patches the control ConfigMap, pushes, emits and records."""

    new_assignment: Assignment | None  # version + 1 with new batch sizes, or None to keep the current one
    needs_push: bool  # rank 0 reports an older version than the current assignment: PUT it again
    push: Assignment | None  # what to PUT to rank 0 now: new_assignment, else the current one if needs_push
    events: list[Event]
    worker_stats: dict[int, dict[str, str]]  # rank → samplesPerSecond, relativeSpeed, straggler, maxBatch
    throughput: dict[str, str]  # samplesPerSecond, efficiency (either may be absent without data)
    decision: RebalanceDecision | None  # None while waiting (no models, workers not on the current version)
    stragglers: dict[int, StragglerStatus]  # per rank with data
    predicted_step_s: float | None  # E[max compute time] at the shares in force (model)
    measured_step_s: float | None  # mean wall seconds per step over the rate window (all ranks' mean)
    samples_per_second: float | None  # achieved job throughput, Σ ranks
    efficiency: float | None  # achieved ÷ ideal (Σ each worker's own capacity at its share)


def _fmt_rate(value: float) -> str:
    return f"{value:.1f}"


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ingest(state: JobControl, rank: int, sample: WorkerSample) -> None:
    """Turn the counters since the previous sample into one observation (same batch and version only)."""
    prev = state.previous.get(rank)
    recent = state.recent.setdefault(rank, deque())
    restarted = prev is not None and (
        sample.steps_total < prev.steps_total or sample.compute_seconds < prev.compute_seconds
    )
    if restarted:  # the worker process restarted: its counters began again at zero
        recent.clear()
        prev = None
    elif prev is not None and sample.timestamp <= prev.timestamp:
        return  # an old or repeated scrape
    state.previous[rank] = sample
    recent.append(sample)
    while len(recent) > 2 and sample.timestamp - recent[1].timestamp >= RATE_WINDOW_S:
        recent.popleft()
    if prev is None:
        return
    steps = sample.steps_total - prev.steps_total
    if steps < 1:
        return
    if sample.batch_size != prev.batch_size or sample.assignment_version != prev.assignment_version:
        state.skipped_windows += 1
        return
    seconds = (sample.compute_seconds - prev.compute_seconds) / steps
    if sample.batch_size < 1 or seconds <= 0:
        return
    observation = Observation(
        batch=sample.batch_size,
        seconds=seconds,
        steps=steps,
        step=sample.steps_total,
        timestamp=sample.timestamp,
    )
    if state.tracker.observe(worker_name(rank), observation) is not None:
        state.observations += 1


@dataclass(frozen=True, kw_only=True)
class _Rates:
    samples_per_second: float  # achieved, including waiting
    compute_samples_per_second: float | None  # samples / compute seconds: speed without waiting
    step_seconds: float | None  # mean wall seconds per step


def _rates(recent: Sequence[WorkerSample]) -> _Rates | None:
    if len(recent) < 2:
        return None
    first, last = recent[0], recent[-1]
    elapsed = last.timestamp - first.timestamp
    if elapsed <= 0:
        return None
    samples = last.samples_total - first.samples_total
    steps = last.steps_total - first.steps_total
    compute = last.compute_seconds - first.compute_seconds
    return _Rates(
        samples_per_second=samples / elapsed,
        compute_samples_per_second=samples / compute if compute > 0 and samples > 0 else None,
        step_seconds=(last.step_seconds - first.step_seconds) / steps if steps > 0 else None,
    )


def _change_event(
    rank: int, change: ChangePoint, status: StragglerStatus | None, decision: RebalanceDecision | None
) -> Event:
    """A confirmed change point, with what the balancer decided about it (cost-benefit in the reason)."""
    factor = math.exp(change.log_shift)
    what = f"{factor:.2f}x slower" if factor >= 1 else f"{1 / factor:.2f}x faster"
    message = (
        f"rank {rank} ({worker_name(rank)}) step time changed: {what} since {_iso(change.onset)} "
        f"(change point detected {change.detected_at - change.onset:.1f}s after its onset)"
    )
    if status is not None and status.is_straggler:
        message += f"; a straggler, {status.slowdown:.2f}x its healthy step time"
    elif change.log_shift < 0:
        message += "; back to its healthy speed" if status is not None else ""
    if decision is None:
        message += "; shares decided once every rank has reported the current version"
    elif decision.apply:
        message += "; rebalancing (see the Rebalanced event)"
    else:
        message += f"; {decision.reason}"
    kind = "Warning" if change.log_shift > 0 else "Normal"
    return Event(type=kind, reason=EventReason.STRAGGLER_DETECTED, message=message)


def control_step(
    *,
    state: JobControl,
    samples: Mapping[int, WorkerSample],
    assignment: Assignment,
    settings: BalancingSettings,
    now: float,
    max_batch: Sequence[int | None] | None = None,
) -> ControlOutcome:
    """One resync: ingest this round's samples, detect stragglers, maybe rebalance, summarise.

    `samples` holds the ranks scraped this round (missing ranks keep their history); `assignment` is the
    one in force (control ConfigMap); `now` uses the samples' clock (Unix seconds); `max_batch[rank]`
    bounds a rank's share (memory). Mutates `state`; returns data only (no I/O, no metrics).
    """
    state.resyncs += 1
    world = len(assignment.batch_sizes)
    config = settings.estimator_config()
    if state.tracker.estimator_config != config:  # spec.balancing.halfLifeSeconds changed
        state.tracker.estimator_config = config
        for tracker in state.tracker.workers.values():
            tracker.estimator.config = config
    detector_config = settings.straggler_config(observation_interval_s=state.observation_interval_s)
    if state.tracker.straggler_config != detector_config:  # spec.balancing detector settings changed
        state.tracker.set_straggler_config(detector_config)
    for rank in [r for r in {*state.previous, *state.recent} if not 0 <= r < world]:  # the job shrank
        state.previous.pop(rank, None)
        state.recent.pop(rank, None)
        state.tracker.remove(worker_name(rank))
        state.reported_stragglers.discard(rank)
    in_world = {rank: s for rank, s in sorted(samples.items()) if 0 <= rank < world}
    for rank, sample in in_world.items():
        _ingest(state, rank, sample)

    statuses = state.tracker.stragglers()
    stragglers = {r: statuses[worker_name(r)] for r in range(world) if worker_name(r) in statuses}
    events: list[Event] = []
    persistent = {r for r, status in stragglers.items() if status.is_straggler}
    state.stragglers_detected += len(persistent - state.reported_stragglers)
    state.reported_stragglers = persistent
    fresh: dict[int, ChangePoint] = {}
    for rank in range(world):
        worker = state.tracker.workers.get(worker_name(rank))
        change = worker.last_change if worker is not None else None
        if change is not None and state.reported_changes.get(worker_name(rank)) != change.detected_at:
            fresh[rank] = change
            state.reported_changes[worker_name(rank)] = change.detected_at
            state.change_points += 1

    reported_versions = [s.assignment_version for s in in_world.values()]
    rank0 = in_world.get(0)
    needs_push = rank0 is not None and rank0.assignment_version < assignment.version
    lagging = any(v < assignment.version for v in reported_versions)

    names = [worker_name(r) for r in range(world)]
    current = dict(zip(names, assignment.batch_sizes, strict=True))
    all_models = state.tracker.models()
    models = {n: all_models[n] for n in names if n in all_models}
    counts = {n: t.estimator.count for n, t in state.tracker.workers.items()}
    warmed_up = all(counts.get(n, 0) >= state.min_observations for n in names)
    decision: RebalanceDecision | None = None
    new_assignment: Assignment | None = None
    if world > 0 and warmed_up and not lagging:
        limits = (
            None
            if max_batch is None
            else {worker_name(r): int(b) for r, b in enumerate(max_batch) if b is not None}
        )
        recent = state.tracker.changes_since(state.last_change_at)
        delays = [c.detected_at - c.onset for c in recent.values()]
        decision = decide_rebalance(
            settings=settings,
            current=current,
            models=models,
            now=now,
            last_change_at=state.last_change_at,
            max_batch=limits,
            stragglers={worker_name(r): s for r, s in stragglers.items()},
            regime_started_at=state.tracker.regime_started_at(),
            previous_models=state.tracker.previous_models(state.last_change_at) if recent else None,
            detection_delay_s=max(delays, default=None),
        )
        if decision.apply:
            version = max([assignment.version, *reported_versions]) + 1
            new_assignment = replace(
                assignment, version=version, batch_sizes=tuple(decision.shares[n] for n in names)
            )
            state.last_change_at = now
            state.rebalances += 1
            events.append(
                Event(
                    type="Normal",
                    reason=EventReason.REBALANCED,
                    message=f"assignment version {version}: {decision.reason}",
                )
            )

    for rank, change in sorted(fresh.items()):
        events.insert(0, _change_event(rank, change, stragglers.get(rank), decision))

    rates = {rank: r for rank in range(world) if (r := _rates(state.recent.get(rank, ()))) is not None}
    speeds = {r: v.compute_samples_per_second for r, v in rates.items()}
    known_speeds = [v for v in speeds.values() if v is not None]
    slowest = min(known_speeds) if known_speeds else None
    worker_stats: dict[int, dict[str, str]] = {}
    for rank, rate in rates.items():
        speed = speeds[rank]
        stats = {"samplesPerSecond": _fmt_rate(rate.samples_per_second)}
        if speed is not None and slowest:
            stats["relativeSpeed"] = _fmt_ratio(speed / slowest)
        status = stragglers.get(rank)
        stats["straggler"] = (status.state if status is not None else StragglerState.HEALTHY).value
        if max_batch is not None and rank < len(max_batch) and max_batch[rank] is not None:
            stats["maxBatch"] = str(max_batch[rank])
        worker_stats[rank] = stats

    achieved = sum(r.samples_per_second for r in rates.values()) if len(rates) == world > 0 else None
    efficiency: float | None = None
    if achieved is not None and len(models) == world:
        ideal = ideal_throughput(models=[models[n] for n in names], shares=list(assignment.batch_sizes))
        efficiency = achieved / ideal if ideal > 0 else None
    throughput: dict[str, str] = {}
    if achieved is not None:
        throughput["samplesPerSecond"] = _fmt_rate(achieved)
    if efficiency is not None:
        throughput["efficiency"] = _fmt_ratio(efficiency)
    step_times = [r.step_seconds for r in rates.values() if r.step_seconds is not None]

    return ControlOutcome(
        new_assignment=new_assignment,
        needs_push=needs_push,
        push=new_assignment if new_assignment is not None else (assignment if needs_push else None),
        events=events,
        worker_stats=worker_stats,
        throughput=throughput,
        decision=decision,
        stragglers=stragglers,
        predicted_step_s=None if decision is None else decision.predicted_step_s_now,
        measured_step_s=sum(step_times) / len(step_times) if step_times else None,
        samples_per_second=achieved,
        efficiency=efficiency,
    )


def worker_max_batch(
    plan: JobPlan, samples: Mapping[int, WorkerSample], catalog: DeviceCatalog = _CATALOG
) -> list[int | None] | None:
    """Per rank, the largest batch share its GPUs' memory holds (planner/memory_bounds): the GPU's total
    memory from NVML where the rank reports one, else the catalog's for its GPU type. None when the plan
    has no model footprint (no model graph) or does not match the assignment's ranks."""
    fixed, per_sample = plan.memory_fixed_bytes_per_gpu, plan.memory_bytes_per_sample_per_gpu
    if fixed is None or per_sample is None:
        return None
    held = MemoryFootprint(fixed_bytes=fixed, bytes_per_sample=per_sample)
    bounds: list[int | None] = []
    for worker in plan.workers:
        sample = samples.get(worker.rank)
        capacity = sample.gpu_memory_bytes if sample is not None else None
        if capacity is None:
            capacity = catalog.lookup(worker.gpu_product).memory_gib * GIB
        bounds.append(
            max_batch(held, capacity_bytes=capacity, gpus=worker.gpus, tensor_parallel=plan.tensor_parallel)
        )
    return bounds
