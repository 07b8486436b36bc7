"""Straggler classification through the fleet tracker: spikes are ignored, slowdowns are followed."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.balancer import (
    EstimatorConfig,
    FleetTracker,
    Observation,
    StragglerConfig,
    StragglerState,
)

PERIOD_S = 5.0


def _fleet() -> FleetTracker:
    return FleetTracker(
        estimator_config=EstimatorConfig(half_life_s=30.0),
        straggler_config=StragglerConfig(min_persistence_s=30.0, rebaseline_after_s=600.0),
    )


def _run(
    fleet: FleetTracker, slowdown_at: dict[int, float], *, count: int, seed: int = 0, start: int = 0
) -> None:
    """Worker w1 of two; `slowdown_at[i]` multiplies its step time at observation i."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        for name in ("w0", "w1"):
            factor = slowdown_at.get(i, 1.0) if name == "w1" else 1.0
            seconds = 0.32 * factor * (1 + 0.01 * rng.standard_normal())
            obs = Observation(batch=32, seconds=seconds, steps=10, step=10 * (i + 1), timestamp=i * PERIOD_S)
            fleet.observe(name, obs)


def test_one_off_spike_is_transient_and_does_not_move_the_model() -> None:
    clean, spiky = _fleet(), _fleet()
    _run(clean, {}, count=40)
    _run(spiky, {20: 3.0}, count=40)
    status = spiky.stragglers()["w1"]
    assert status.state is StragglerState.HEALTHY
    assert status.transient_episodes == 1
    assert spiky.models()["w1"].mean(32) == pytest.approx(clean.models()["w1"].mean(32), rel=0.01)


def test_spike_is_reported_as_transient_while_it_lasts() -> None:
    fleet = _fleet()
    _run(fleet, {20: 3.0, 21: 3.0}, count=22)
    status = fleet.stragglers()["w1"]
    assert status.state is StragglerState.TRANSIENT
    assert status.since == 20 * PERIOD_S
    assert not status.is_straggler


def test_persistent_slowdown_is_flagged_with_onset_and_factor_then_followed() -> None:
    fleet = _fleet()
    slow = {i: 2.0 for i in range(20, 60)}
    _run(fleet, slow, count=27)  # 6 slow observations = 30 s: persistent
    status = fleet.stragglers()["w1"]
    assert status.state is StragglerState.PERSISTENT and status.is_straggler
    assert status.since == 20 * PERIOD_S
    assert status.slowdown == pytest.approx(2.0, rel=0.05)
    assert fleet.stragglers()["w0"].state is StragglerState.HEALTHY
    _run(fleet, slow, count=33, start=27)  # 5 more half-lives: the model has followed the slowdown
    assert fleet.models()["w1"].mean(32) == pytest.approx(0.64, rel=0.05)
    assert fleet.models()["w0"].mean(32) == pytest.approx(0.32, rel=0.02)


def test_slowdown_below_enter_ratio_is_not_a_straggler() -> None:
    fleet = _fleet()
    _run(fleet, {i: 1.1 for i in range(20, 40)}, count=40)
    assert fleet.stragglers()["w1"].state is StragglerState.HEALTHY


def test_long_slowdown_becomes_the_new_normal() -> None:
    fleet = FleetTracker(straggler_config=StragglerConfig(min_persistence_s=10.0, rebaseline_after_s=60.0))
    _run(fleet, {i: 2.0 for i in range(10, 40)}, count=40)
    assert fleet.stragglers()["w1"].state is StragglerState.HEALTHY
    assert fleet.models()["w1"].mean(32) == pytest.approx(0.64, rel=0.05)


def test_unidentified_worker_borrows_pooled_overhead_fraction() -> None:
    fleet = FleetTracker()
    for i in range(60):
        b = (16, 32, 48)[(i // 4) % 3]
        fleet.observe("varied", Observation(batch=b, seconds=0.1 + 0.01 * b, step=i + 1, timestamp=2.0 * i))
        fleet.observe("fixed", Observation(batch=32, seconds=0.84, step=i + 1, timestamp=2.0 * i))
    models = fleet.models()
    assert models["varied"].identified and not models["fixed"].identified
    assert models["varied"].overhead_s == pytest.approx(0.1, rel=0.01)
    assert models["varied"].per_sample_s == pytest.approx(0.01, rel=0.01)
    # pooled: overhead as a fraction of the step time at the varied worker's mean batch
    mean_batch = fleet.workers["varied"].estimator.mean_batch
    fraction = 0.1 / (0.1 + 0.01 * mean_batch)
    assert fleet.pooled_overhead_fraction() == pytest.approx(fraction, rel=0.02)
    assert models["fixed"].overhead_s == pytest.approx(0.84 * fraction, rel=0.02)
