"""control_step on a simulated synchronous job: scraped counters → stragglers, rebalances and status."""

from __future__ import annotations

import itertools
import random
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from paceline import operator_metrics
from paceline.api import parse_balancing
from paceline.balancer import BalancingPolicy, BalancingSettings
from paceline.controller.rebalance import ControlOutcome, JobControl, control_step
from paceline.controller.samples import WorkerSample
from paceline.reasons import EventReason
from paceline_worker.wire import Assignment

T0 = 1_700_000_000.0  # Unix seconds: timestamps are on the samples' clock
RESYNC_S = 2.0
B = 64
SETTINGS = parse_balancing({})  # minGainPercent 5, cooldownSeconds 20, halfLifeSeconds 30


@dataclass
class FakeJob:
    """Synchronous data parallelism: a step lasts max_m(compute_m) + comm, compute_m = cost·b_m/speed_m."""

    speeds: list[float]
    shares: list[int]
    version: int = 1
    cost_s: float = 0.01  # seconds per sample at speed 1
    comm_s: float = 0.004
    noise: float = 0.02  # relative s.d. of one step's compute time
    now: float = T0
    factors: dict[int, float] = field(default_factory=dict)  # rank → slow-down factor
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        n = len(self.speeds)
        self.steps, self.samples = [0] * n, [0] * n
        self.compute, self.wall = [0.0] * n, [0.0] * n

    def run_until(self, target: float) -> None:
        while True:
            times = [
                self.cost_s * b / s * self.factors.get(r, 1.0) * (1 + self.noise * self.rng.gauss(0, 1))
                for r, (b, s) in enumerate(zip(self.shares, self.speeds, strict=True))
            ]
            wall = max(times) + self.comm_s
            if self.now + wall > target:
                self.now = target
                return
            self.now += wall
            for r, t in enumerate(times):
                self.steps[r] += 1
                self.samples[r] += self.shares[r]
                self.compute[r] += t
                self.wall[r] += wall

    def apply(self, assignment: Assignment) -> None:  # at the next step boundary, on every rank
        self.shares, self.version = list(assignment.batch_sizes), assignment.version

    def sample(self, rank: int, *, version: int | None = None) -> WorkerSample:
        return WorkerSample(
            rank=rank,
            job="demo",
            timestamp=self.now,
            steps_total=self.steps[rank],
            samples_total=self.samples[rank],
            data_seconds=0.0,
            compute_seconds=self.compute[rank],
            communication_seconds=self.wall[rank] - self.compute[rank],
            step_seconds=self.wall[rank],
            last_compute_seconds=0.0,
            batch_size=self.shares[rank],
            global_batch_size=sum(self.shares),
            assignment_version=self.version if version is None else version,
            samples_per_second=0.0,
            compute_samples_per_second=0.0,
        )


@dataclass
class Run:
    job: FakeJob
    assignment: Assignment
    state: JobControl
    outcomes: list[tuple[float, ControlOutcome]] = field(default_factory=list)

    def events(self, reason: EventReason) -> list[tuple[float, str, str]]:
        return [(t, e.type, e.message) for t, o in self.outcomes for e in o.events if e.reason == reason]

    @property
    def last(self) -> ControlOutcome:
        return self.outcomes[-1][1]


def start(speeds: list[float], shares: list[int], settings: BalancingSettings = SETTINGS) -> Run:
    assignment = Assignment(version=1, batch_sizes=tuple(shares), learning_rate=0.05, momentum=0.9)
    return Run(
        job=FakeJob(speeds=speeds, shares=shares), assignment=assignment, state=JobControl.create(settings)
    )


def drive(
    run: Run,
    *,
    seconds: float,
    settings: BalancingSettings = SETTINGS,
    max_batch: list[int] | None = None,
    before_scrape: Callable[[float], None] | None = None,
) -> None:
    """Resync every 2 s: scrape all ranks, control_step, apply a new assignment as the operator would."""
    end = run.job.now + seconds
    while run.job.now + RESYNC_S <= end + 1e-9:
        run.job.run_until(run.job.now + RESYNC_S)
        if before_scrape is not None:
            before_scrape(run.job.now - T0)
        samples = {r: run.job.sample(r) for r in range(len(run.job.speeds))}
        outcome = control_step(
            state=run.state,
            samples=samples,
            assignment=run.assignment,
            settings=settings,
            now=run.job.now,
            max_batch=max_batch,
        )
        run.outcomes.append((run.job.now - T0, outcome))
        new = outcome.new_assignment
        if new is not None:
            assert sum(new.batch_sizes) == sum(run.assignment.batch_sizes) == B
            assert new.version == run.assignment.version + 1
            assert (new.learning_rate, new.momentum) == (
                run.assignment.learning_rate,
                run.assignment.momentum,
            )
            assert outcome.push == new
            run.assignment = new
            run.job.apply(new)


def _close(shares: tuple[int, ...], expected: list[float], tolerance: float) -> bool:
    return all(abs(s - e) <= tolerance for s, e in zip(shares, expected, strict=True))


def test_unequal_speeds_with_equal_shares_are_rebalanced_toward_speed_ratio() -> None:
    run = start([1, 1, 2, 4], [16, 16, 16, 16])
    drive(run, seconds=90)
    rebalanced = run.events(EventReason.REBALANCED)
    assert rebalanced, "equal shares on 1:1:2:4 speeds must be rebalanced"
    first_t, kind, message = rebalanced[0]
    assert kind == "Normal"
    assert first_t >= 2 * RESYNC_S * 2, "needs a few windows of data before acting"
    assert "assignment version 2" in message and "w3 16→" in message and "% faster" in message
    times = [t for t, _, _ in rebalanced]
    assert all(b - a >= SETTINGS.cooldown_seconds for a, b in itertools.pairwise(times))
    assert _close(run.assignment.batch_sizes, [8, 8, 16, 32], tolerance=2), run.assignment
    assert not run.events(EventReason.STRAGGLER_DETECTED)
    # status: before the first rebalance efficiency ≈ 400/800 samples/s; afterwards close to 1
    before = next(o for t, o in run.outcomes if o.efficiency is not None)
    assert before.efficiency is not None and before.efficiency == pytest.approx(0.5, abs=0.06)
    last = run.last
    assert last.efficiency is not None and last.efficiency > 0.85
    assert last.throughput["efficiency"] == f"{last.efficiency:.2f}"
    assert float(last.throughput["samplesPerSecond"]) > 1.7 * float(before.throughput["samplesPerSecond"])
    speeds = [float(last.worker_stats[r]["relativeSpeed"]) for r in range(4)]
    assert speeds == pytest.approx([1, 1, 2, 4], rel=0.06)
    assert {s["straggler"] for s in last.worker_stats.values()} == {"Healthy"}
    assert last.needs_push is False and last.push is None
    assert last.measured_step_s is not None and last.predicted_step_s is not None
    assert last.measured_step_s == pytest.approx(last.predicted_step_s + 0.004, rel=0.1)


def test_a_one_window_spike_does_not_move_shares() -> None:
    run = start([1, 1, 2, 4], [8, 8, 16, 32])

    def spike(t: float) -> None:  # rank 1 is 3x slower during one 2 s window only
        if t == 42.0:
            run.job.factors[1] = 3.0
        elif t == 44.0:
            run.job.factors.pop(1, None)

    drive(run, seconds=40)
    drive(run, seconds=80, before_scrape=spike)
    assert not run.events(EventReason.REBALANCED)
    assert not run.events(EventReason.STRAGGLER_DETECTED)
    assert run.assignment.version == 1
    straggler_column = [o.worker_stats[1]["straggler"] for _, o in run.outcomes[1:]]
    assert "Transient" in straggler_column, "the spike is visible in status"
    assert straggler_column[-1] == "Healthy"
    assert run.state.tracker.workers["w1"].detector.transient_episodes == 1


def test_a_persistent_slowdown_is_reported_then_rebalanced() -> None:
    run = start([1, 1, 2, 4], [8, 8, 16, 32])
    drive(run, seconds=40)
    assert not run.events(EventReason.REBALANCED)
    run.job.factors[3] = 2.0  # the fastest GPU throttles to half speed from t = 40 s on
    drive(run, seconds=240)
    detected = run.events(EventReason.STRAGGLER_DETECTED)
    assert len(detected) == 1, "announced once, not every resync"
    t_detected, kind, message = detected[0]
    assert kind == "Warning"
    assert 40 < t_detected <= 40 + 3 * RESYNC_S, "a change point within a few scrapes"
    assert "rank 3 (w3) step time changed: 2.0" in message and "x slower since 2023-11-14T22:1" in message
    assert "a straggler, 2.0" in message
    # the event says what the balancer made of it: a switch now, or why not yet (cost vs benefit)
    assert "rebalancing" in message or ("not worth a switch" in message and "expected remaining" in message)
    rebalanced = run.events(EventReason.REBALANCED)
    assert rebalanced and t_detected <= rebalanced[0][0] <= t_detected + 3 * RESYNC_S
    assert "w3 32→" in rebalanced[0][2] and "persistent straggler w3" in rebalanced[0][2]
    assert "worth it" in rebalanced[0][2] and "expected remaining" in rebalanced[0][2]
    first = next(o.new_assignment for _, o in run.outcomes if o.new_assignment is not None)
    assert first is not None and first.batch_sizes[3] <= 24 and min(first.batch_sizes[:3]) > 8
    # ideal with w3 at half speed: 64·(1, 1, 2, 2)/6 ≈ (10.7, 10.7, 21.3, 21.3)
    assert _close(run.assignment.batch_sizes, [64 / 6, 64 / 6, 128 / 6, 128 / 6], tolerance=2.5)
    assert run.last.efficiency is not None and run.last.efficiency > 0.85
    assert run.last.worker_stats[3]["straggler"] == "Persistent"
    assert run.last.stragglers[3].is_straggler and run.last.stragglers[3].slowdown == pytest.approx(
        2, rel=0.1
    )


def test_memory_bound_caps_a_share() -> None:
    run = start([1, 1, 2, 4], [16, 16, 16, 16])
    drive(run, seconds=60, max_batch=[64, 64, 64, 20])
    assert run.events(EventReason.REBALANCED)
    assert run.assignment.batch_sizes[3] == 20
    assert [run.last.worker_stats[r]["maxBatch"] for r in range(4)] == ["64", "64", "64", "20"]


def test_static_policy_keeps_shares_but_reports_status() -> None:
    static = replace(SETTINGS, policy=BalancingPolicy.STATIC)
    run = start([1, 1, 2, 4], [16, 16, 16, 16], static)
    drive(run, seconds=40, settings=static)
    assert not run.events(EventReason.REBALANCED) and run.assignment.version == 1
    decision = run.last.decision
    assert decision is not None and not decision.apply and "Static" in decision.reason
    assert float(run.last.throughput["efficiency"]) == pytest.approx(0.5, abs=0.06)


def _warmed_up(shares: list[int]) -> Run:
    run = start([1, 1, 1, 1], shares)
    drive(run, seconds=10)
    return run


def test_needs_push_when_rank_zero_reports_an_older_version() -> None:
    run = _warmed_up([16, 16, 16, 16])
    newer = replace(run.assignment, version=3)
    samples = {r: run.job.sample(r, version=1) for r in range(4)}
    outcome = control_step(
        state=run.state, samples=samples, assignment=newer, settings=SETTINGS, now=run.job.now + 1
    )
    assert outcome.needs_push and outcome.push == newer and outcome.new_assignment is None
    assert outcome.decision is None, "no new decision while workers have not caught up"
    # rank 0 up to date, rank 1 behind: nothing to push (rank 0 broadcasts), still no decision
    samples = {r: run.job.sample(r, version=3 if r == 0 else 1) for r in range(4)}
    outcome = control_step(
        state=run.state, samples=samples, assignment=newer, settings=SETTINGS, now=run.job.now + 2
    )
    assert not outcome.needs_push and outcome.push is None and outcome.decision is None
    # rank 0 unreachable this round: nothing known, nothing pushed
    samples = {r: run.job.sample(r, version=3) for r in (1, 2, 3)}
    outcome = control_step(
        state=run.state, samples=samples, assignment=newer, settings=SETTINGS, now=run.job.now + 3
    )
    assert not outcome.needs_push and outcome.decision is not None


def test_new_version_exceeds_a_version_rank_zero_already_has() -> None:
    run = start([1, 1, 2, 4], [16, 16, 16, 16])
    drive(run, seconds=8, settings=replace(SETTINGS, min_gain_percent=100))  # warm up, no change
    assert run.assignment.version == 1 and run.state.observations >= 3 * 4
    run.job.run_until(run.job.now + RESYNC_S)
    # rank 0 already runs version 9 (pushed by an operator that died before saving it); the ConfigMap says 1
    samples = {r: run.job.sample(r, version=9) for r in range(4)}
    outcome = control_step(
        state=run.state, samples=samples, assignment=run.assignment, settings=SETTINGS, now=run.job.now
    )
    assert outcome.new_assignment is not None and outcome.new_assignment.version == 10
    assert not outcome.needs_push


def test_windows_across_a_batch_change_or_restart_are_not_observed() -> None:
    run = _warmed_up([16, 16, 16, 16])
    state, count = run.state, run.state.observations
    run.job.shares = [10, 22, 16, 16]  # switched without a version change: still not a valid window
    run.job.run_until(run.job.now + RESYNC_S)
    samples = {r: run.job.sample(r) for r in range(4)}
    control_step(state=state, samples=samples, assignment=run.assignment, settings=SETTINGS, now=run.job.now)
    assert state.observations == count + 2  # ranks 2 and 3 kept their batch
    assert state.skipped_windows == 2
    restarted = replace(
        samples[0], steps_total=3, samples_total=30, compute_seconds=0.3, timestamp=run.job.now + 2
    )
    control_step(
        state=state, samples={0: restarted}, assignment=run.assignment, settings=SETTINGS, now=run.job.now + 2
    )
    assert state.observations == count + 2 and state.previous[0] == restarted


def test_shrinking_the_job_forgets_removed_ranks() -> None:
    run = _warmed_up([16, 16, 16, 16])
    smaller = replace(run.assignment, version=2, batch_sizes=(32, 32))
    samples = {r: run.job.sample(r) for r in range(4)}
    outcome = control_step(
        state=run.state, samples=samples, assignment=smaller, settings=SETTINGS, now=run.job.now + 1
    )
    assert sorted(run.state.tracker.workers) == ["w0", "w1"] and sorted(run.state.previous) == [0, 1]
    assert sorted(outcome.worker_stats) == [0, 1]


def test_outcomes_are_recorded_in_operator_metrics_served_over_http() -> None:
    run = start([1, 1, 2, 4], [8, 8, 16, 32])
    drive(run, seconds=40)
    run.job.factors[3] = 2.0
    drive(run, seconds=40)
    for _, outcome in run.outcomes:
        operator_metrics.record_control(namespace="ns", job="demo", outcome=outcome)
    with operator_metrics.time_reconcile():
        pass
    server, thread = operator_metrics.serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    values = {
        (s.name, s.labels.get("rank", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("trainingjob") == "demo" or s.name.startswith("paceline_operator_reconcile")
    }
    rebalances = sum(o.new_assignment is not None for _, o in run.outcomes)
    assert rebalances >= 1
    assert values[("paceline_operator_rebalances_total", "")] == rebalances
    assert values[("paceline_operator_worker_straggler", "3")] == 1.0
    assert values[("paceline_operator_worker_straggler", "0")] == 0.0
    assert values[("paceline_operator_worker_slowdown_ratio", "3")] == pytest.approx(2, rel=0.1)
    assert values[("paceline_operator_measured_step_seconds", "")] == pytest.approx(run.last.measured_step_s)
    assert values[("paceline_operator_predicted_step_seconds", "")] == pytest.approx(
        run.last.predicted_step_s
    )
    assert values[("paceline_operator_reconcile_duration_seconds_count", "")] >= 1
    operator_metrics.forget_job(namespace="ns", job="demo")
    left = generate_latest(operator_metrics.REGISTRY).decode()
    assert 'trainingjob="demo"' in text and 'trainingjob="demo"' not in left
