"""Changes of regime: a persistent slowdown and its recovery restart the worker's step-time model.

A synchronous 1:1:2:4 job (B = 128, speed-proportional shares 16/16/32/64) is scraped every `period` s;
the fastest worker w3 becomes 3x slower for a while. The balancer (FleetTracker + decide_rebalance) must
move its share to the ideal one in one step once the slowdown is persistent, and back once it recovered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from paceline.api import parse_balancing
from paceline.balancer import (
    EstimatorConfig,
    FleetTracker,
    Observation,
    StepTimeEstimator,
    StepTimeModel,
    StragglerConfig,
    StragglerState,
    decide_rebalance,
)
from paceline.balancer.tracker import pooled_noise

SPEEDS = (1.0, 1.0, 2.0, 4.0)
NAMES = tuple(f"w{i}" for i in range(len(SPEEDS)))
COST_S = 0.009375  # seconds per sample at speed 1: 0.3 s per step at the equal share 32
BALANCED = (16, 16, 32, 64)
SLOWED = (24, 24, 48, 32)  # w3 at a third of its speed: 128·(1, 1, 2, 4/3)/(16/3)
PERSISTENCE_S, COOLDOWN_S, HALF_LIFE_S = 30.0, 20.0, 30.0


@dataclass
class Job:
    scale: float  # time constants and the timeline are multiplied by this
    period: float  # seconds between scrapes
    onset: float
    recovery: float
    factor: float = 3.0
    noise: float = 0.02
    shares: dict[str, int] = field(default_factory=lambda: dict(zip(NAMES, BALANCED, strict=True)))
    changes: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = parse_balancing(
            {
                "cooldownSeconds": round(COOLDOWN_S * self.scale),
                "halfLifeSeconds": round(HALF_LIFE_S * self.scale),
            }
        )
        self.fleet = FleetTracker(
            estimator_config=self.settings.estimator_config(),
            straggler_config=StragglerConfig(
                observation_interval_s=self.period, rebaseline_after_s=900.0 * self.scale
            ),
        )
        self.rng = np.random.default_rng(11)
        self.now = 0.0
        self.steps = dict.fromkeys(NAMES, 0)
        self.last_change: float | None = None

    def slow_fraction(self, start: float, end: float) -> float:
        """Share of the window [start, end] during which w3 is slow."""
        return max(0.0, min(end, self.recovery) - max(start, self.onset)) / (end - start)

    def run_until(self, end: float) -> None:
        while self.now + self.period <= end + 1e-9:
            start, self.now = self.now, self.now + self.period
            factors = {n: 1.0 for n in NAMES}
            factors["w3"] = 1.0 + (self.factor - 1.0) * self.slow_fraction(start, self.now)
            means = {n: COST_S * self.shares[n] / s * factors[n] for n, s in zip(NAMES, SPEEDS, strict=True)}
            steps = max(1, int(self.period / max(means.values())))
            for name in NAMES:
                seconds = float(np.mean(means[name] * (1 + self.noise * self.rng.standard_normal(steps))))
                self.steps[name] += steps
                obs = Observation(
                    batch=self.shares[name],
                    seconds=seconds,
                    steps=steps,
                    step=self.steps[name],
                    timestamp=self.now,
                )
                self.fleet.observe(name, obs)
            if min(t.estimator.count for t in self.fleet.workers.values()) < 3:
                continue
            recent = self.fleet.changes_since(self.last_change)
            decision = decide_rebalance(
                settings=self.settings,
                current=self.shares,
                models=self.fleet.models(),
                now=self.now,
                last_change_at=self.last_change,
                stragglers=self.fleet.stragglers(),
                regime_started_at=self.fleet.regime_started_at(),
                previous_models=self.fleet.previous_models(self.last_change) if recent else None,
                detection_delay_s=max((c.detected_at - c.onset for c in recent.values()), default=None),
            )
            if decision.apply:
                self.shares = dict(decision.shares)
                self.last_change = self.now
                self.changes.append((self.now, tuple(self.shares.values())))

    def shares_tuple(self) -> tuple[int, ...]:
        return tuple(self.shares[n] for n in NAMES)

    def changes_between(self, start: float, end: float) -> list[tuple[int, ...]]:
        return [shares for t, shares in self.changes if start <= t <= end]


def _close(shares: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 2) -> bool:
    return all(abs(s - e) <= tolerance for s, e in zip(shares, expected, strict=True))


def test_first_rebalance_after_a_persistent_slowdown_lands_on_the_ideal_share() -> None:
    """The onset is a change point: the fit restarts from the episode's observations, with no pre-slowdown
    points to draw a line through once the batch changes, so one step lands on the ideal shares."""
    job = Job(scale=1.0, period=2.0, onset=60.0, recovery=10_000.0)
    job.run_until(60.0)
    assert not job.changes, "balanced from the start"
    job.run_until(60.0 + 2 * (PERSISTENCE_S + COOLDOWN_S))
    moves = job.changes_between(60.0, job.now)
    assert moves, "the persistent straggler must be rebalanced"
    assert _close(moves[0], SLOWED), f"first rebalance {moves[0]}, ideal {SLOWED}"
    assert len(moves) == 1, f"one step should do: {moves}"
    model = job.fleet.models()["w3"]
    assert model.mean(32) == pytest.approx(3 * COST_S * 32 / 4, rel=0.05)
    assert model.noise_cv < 0.05, "the slow regime's fit has the noise of one regime"
    assert job.fleet.stragglers()["w3"].state is StragglerState.PERSISTENT


@pytest.mark.parametrize(("scale", "period"), [(1.0, 2.0), (0.2, 1.0)], ids=["defaults", "compressed"])
def test_shares_move_back_after_a_persistent_straggler_recovers(scale: float, period: float) -> None:
    onset, recovery = 60.0 * scale, 180.0 * scale
    job = Job(scale=scale, period=period, onset=onset, recovery=recovery)
    job.run_until(recovery)
    assert job.changes and job.shares_tuple()[3] < BALANCED[3] - 10, "w3's share was cut while it was slow"
    deadline = recovery + 2 * (PERSISTENCE_S + COOLDOWN_S) * scale
    job.run_until(deadline)
    assert _close(job.shares_tuple(), BALANCED), f"shares {job.shares_tuple()} after recovery"
    back = job.changes_between(recovery, deadline)
    assert back and back[0] == job.shares_tuple(), "back in one step"
    assert job.fleet.stragglers()["w3"].state is StragglerState.HEALTHY
    model = job.fleet.models()["w3"]
    assert model.mean(64) == pytest.approx(COST_S * 64 / 4, rel=0.05)
    assert model.noise_cv < 0.05, "no slow observations left in the recovered worker's fit"


def test_a_slowdown_is_acted_on_within_seconds() -> None:
    job = Job(scale=1.0, period=2.0, onset=60.0, recovery=10_000.0)
    job.run_until(70.0)
    moves = job.changes_between(60.0, 70.0)
    assert moves and _close(moves[0], SLOWED), "detected in two windows, rebalanced at once"
    status = job.fleet.stragglers()["w3"]
    assert status.detection_delay_s is not None and status.detection_delay_s <= 4.0


def test_a_short_recovery_is_detected_and_so_is_the_slowdown_after_it() -> None:
    job = Job(scale=1.0, period=2.0, onset=60.0, recovery=10_000.0)
    job.run_until(150.0)
    slow_mean = job.fleet.models()["w3"].mean(32)
    job.factor = 1.0  # w3 runs at full speed for 10 s, then is slow again
    job.run_until(160.0)
    assert job.fleet.stragglers()["w3"].state is StragglerState.HEALTHY, "the recovery is a change point"
    job.factor = 3.0
    job.run_until(200.0)
    assert job.fleet.stragglers()["w3"].state is StragglerState.PERSISTENT
    assert job.fleet.stragglers()["w3"].changes == 3
    assert job.fleet.models()["w3"].mean(32) == pytest.approx(slow_mean, rel=0.03)
    assert _close(job.shares_tuple(), SLOWED)


def test_noise_estimate_is_not_dominated_by_a_level_shift() -> None:
    """A 3x step in the level at constant batch: the mean follows with the half-life, the noise stays put."""
    rng = np.random.default_rng(5)
    est = StepTimeEstimator(config=EstimatorConfig(half_life_s=30.0))
    for i in range(60):
        level = 0.3 if i < 40 else 0.9
        seconds = float(np.mean(level * (1 + 0.02 * rng.standard_normal(10))))
        est.update(Observation(batch=32, seconds=seconds, steps=10, step=10 * (i + 1), timestamp=2.0 * i))
        model = est.model()
        assert model is not None and model.noise_cv < 0.06, f"observation {i}: cv {model.noise_cv:.2f}"
    assert model.noise_cv == pytest.approx(0.02, abs=0.01)


def test_restart_forgets_the_fit_but_keeps_noise_and_counters() -> None:
    rng = np.random.default_rng(6)
    est = StepTimeEstimator()
    for i in range(20):
        seconds = float(np.mean(0.3 * (1 + 0.02 * rng.standard_normal(10))))
        est.update(Observation(batch=32, seconds=seconds, steps=10, step=10 * (i + 1), timestamp=2.0 * i))
    before = est.model()
    assert before is not None
    est.restart()
    assert est.model() is None and est.count == 20
    est.update(Observation(batch=32, seconds=0.9, steps=10, step=1000, timestamp=50.0))
    after = est.model()
    assert after is not None and after.mean(32) == pytest.approx(0.9)
    # kept (only decayed towards the 5 % prior), and no 0.3 s → 0.9 s difference across the restart
    assert before.noise_cv <= after.noise_cv < 0.03


def test_shares_move_back_as_soon_as_the_recovery_is_detected() -> None:
    """Back at its healthy speed, w3 resumes the healthy regime it had before the slowdown: that regime's
    age counts, so the switch back is worth it at once instead of after as long again as the excursion."""
    onset, recovery = 30.0, 42.0
    job = Job(scale=0.2, period=1.0, onset=onset, recovery=recovery)
    job.run_until(recovery)
    assert job.changes and job.shares_tuple()[3] < BALANCED[3] - 10, "w3's share was cut while it was slow"
    job.run_until(recovery + 8.0)
    back = job.changes_between(recovery, job.now)
    status = job.fleet.stragglers()["w3"]
    assert back and _close(back[0], BALANCED), f"moves after the recovery: {back}"
    assert status.state is StragglerState.HEALTHY and status.detection_delay_s is not None
    first_back = min(t for t, _ in job.changes if t >= recovery)
    assert first_back <= recovery + status.detection_delay_s + 2 * job.period, (first_back, status)
    started = job.fleet.regime_started_at()
    assert started is not None and started <= recovery - onset / 2, "the healthy time before counts"


@pytest.mark.parametrize("seed", range(8))
def test_equally_noisy_workers_keep_their_shares(seed: int) -> None:
    """Every worker's steps are equally noisy (cv 0.3): their noise estimates differ only by chance, and the
    fleet's pooled noise keeps the optimiser from moving shares off the noisier-looking ones."""
    job = Job(scale=0.2, period=1.0, onset=1e9, recovery=1e9, noise=0.3)
    job.rng = np.random.default_rng(seed)
    job.run_until(60.0)
    assert not job.changes, f"shares moved on a stationary run: {job.changes}"


def test_a_persistently_noisy_worker_keeps_its_own_noise() -> None:
    models = {
        f"w{i}": StepTimeModel(
            overhead_s=0.0, per_sample_s=0.01, noise_cv=cv, observations=20.0, noise_terms=20.0
        )
        for i, cv in enumerate((0.01, 0.027, 0.03, 0.4))
    }
    pooled = pooled_noise(models)
    assert pooled["w3"].noise_cv == 0.4
    pool = (0.5 * (0.027**2 + 0.03**2)) ** 0.5
    assert [pooled[f"w{i}"].noise_cv for i in range(3)] == pytest.approx([pool] * 3)
