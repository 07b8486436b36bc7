"""Rebalance decisions: hysteresis (gain threshold, cooldown), policy, transient stragglers not chased."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.api import parse_balancing
from paceline.balancer import (
    FleetTracker,
    Observation,
    StepTimeModel,
    StragglerConfig,
    decide_rebalance,
)
from paceline.balancer.decision import level_heterogeneity

FAST = StepTimeModel(overhead_s=0.0, per_sample_s=0.01, noise_cv=0.02)
SLOW = StepTimeModel(overhead_s=0.0, per_sample_s=0.02, noise_cv=0.02)
CURRENT = {"w0": 32, "w1": 32}


def test_applies_a_large_gain_with_numbers_in_the_reason() -> None:
    decision = decide_rebalance(
        settings=parse_balancing({}),
        current=CURRENT,
        models={"w0": FAST, "w1": SLOW},
        now=100.0,
        last_change_at=50.0,
    )
    assert decision.apply and decision.event_reason == "Rebalanced"
    assert sum(decision.shares.values()) == 64
    assert decision.shares["w0"] > decision.shares["w1"]
    assert decision.predicted_step_s_now is not None and decision.predicted_step_s_after is not None
    assert decision.predicted_step_s_after < decision.predicted_step_s_now
    expected_gain = 1 - decision.predicted_step_s_after / decision.predicted_step_s_now
    assert decision.gain_fraction == pytest.approx(expected_gain)
    assert decision.gain_fraction > 0.25
    assert f"w0 32→{decision.shares['w0']}" in decision.reason
    assert f"{decision.predicted_step_s_now:.3f}s → {decision.predicted_step_s_after:.3f}s" in decision.reason


def test_gain_below_threshold_keeps_shares() -> None:
    steady = StepTimeModel(overhead_s=0.0, per_sample_s=0.01)
    almost = StepTimeModel(overhead_s=0.0, per_sample_s=0.0108)  # 8 % slower: 3 % gain from 33/31
    decision = decide_rebalance(
        settings=parse_balancing({}),
        current=CURRENT,
        models={"w0": steady, "w1": almost},
        now=100.0,
        last_change_at=0.0,
    )
    assert not decision.apply and decision.shares == CURRENT and decision.event_reason == ""
    assert decision.proposed == {"w0": 33, "w1": 31}
    assert decision.gain_fraction == pytest.approx(1 - 0.0108 * 31 / (0.0108 * 32))
    assert "below minGainPercent 5%" in decision.reason
    lenient = parse_balancing({"minGainPercent": 1})
    assert decide_rebalance(
        settings=lenient, current=CURRENT, models={"w0": steady, "w1": almost}, now=100.0, last_change_at=0.0
    ).apply


def test_cooldown_blocks_until_it_has_passed() -> None:
    models = {"w0": FAST, "w1": SLOW}
    settings = parse_balancing({"cooldownSeconds": 20})
    blocked = decide_rebalance(settings=settings, current=CURRENT, models=models, now=105, last_change_at=100)
    assert not blocked.apply and blocked.shares == CURRENT
    assert "cooldown 15s left of 20s" in blocked.reason
    allowed = decide_rebalance(settings=settings, current=CURRENT, models=models, now=121, last_change_at=100)
    assert allowed.apply


def test_static_policy_and_missing_estimates_keep_shares() -> None:
    static = parse_balancing({"policy": "Static"})
    models = {"w0": FAST, "w1": SLOW}
    assert not decide_rebalance(
        settings=static, current=CURRENT, models=models, now=0, last_change_at=None
    ).apply
    partial = decide_rebalance(
        settings=parse_balancing({}), current=CURRENT, models={"w0": FAST}, now=0, last_change_at=None
    )
    assert not partial.apply and "w1" in partial.reason


def test_memory_bound_and_min_batch_are_respected() -> None:
    decision = decide_rebalance(
        settings=parse_balancing({"minBatchPerWorker": 20}),
        current=CURRENT,
        models={"w0": FAST, "w1": SLOW},
        now=0,
        last_change_at=None,
        max_batch={"w0": 40},
    )
    assert decision.apply and decision.shares == {"w0": 40, "w1": 24}


def test_infeasible_bounds_keep_shares_with_a_reason() -> None:
    decision = decide_rebalance(
        settings=parse_balancing({"minBatchPerWorker": 40}),
        current=CURRENT,
        models={"w0": FAST, "w1": SLOW},
        now=0,
        last_change_at=None,
    )
    assert not decision.apply and decision.shares == CURRENT
    assert "cannot rebalance: total batch 64 is outside" in decision.reason


def _scrape(
    fleet: FleetTracker, shares: dict[str, int], i: int, slow: float, rng: np.random.Generator
) -> None:
    for name, b in shares.items():
        factor = slow if name == "w1" else 1.0
        seconds = 0.01 * b * factor * (1 + 0.01 * rng.standard_normal())
        fleet.observe(
            name, Observation(batch=b, seconds=seconds, steps=10, step=10 * (i + 1), timestamp=5.0 * i)
        )


def test_transient_straggler_is_not_chased_but_a_persistent_one_is() -> None:
    rng = np.random.default_rng(0)
    fleet = FleetTracker(straggler_config=StragglerConfig(observation_interval_s=5.0))
    settings = parse_balancing({})
    for i in range(20):
        _scrape(fleet, CURRENT, i, 1.0, rng)
    _scrape(fleet, CURRENT, 20, 4.0, rng)  # one-off 4x spike on w1
    for i in range(21, 24):
        _scrape(fleet, CURRENT, i, 1.0, rng)
        decision = decide_rebalance(
            settings=settings,
            current=CURRENT,
            models=fleet.models(),
            now=5.0 * i,
            last_change_at=None,
            stragglers=fleet.stragglers(),
        )
        assert not decision.apply, decision.reason
    # now w1 becomes 2x slower for good
    decisions = []
    for i in range(24, 40):
        _scrape(fleet, CURRENT, i, 2.0, rng)
        decisions.append(
            decide_rebalance(
                settings=settings,
                current=CURRENT,
                models=fleet.models(),
                now=5.0 * i,
                last_change_at=None,
                stragglers=fleet.stragglers(),
            )
        )
    applied = [d for d in decisions if d.apply]
    assert not decisions[0].apply  # the first slow scrapes are held back
    assert applied and applied[0].shares["w0"] > applied[0].shares["w1"]
    assert "persistent straggler w1" in applied[0].reason


def test_level_heterogeneity_tells_an_imbalance_from_estimation_noise() -> None:
    def model(per_sample_s: float) -> StepTimeModel:
        return StepTimeModel(
            overhead_s=0.0, per_sample_s=per_sample_s, noise_cv=0.3, steps=50.0, noise_terms=20.0
        )

    shares = [16, 16, 32, 64]
    near = [model(0.0095 * f / s) for f, s in zip((1.03, 0.97, 1.02, 0.98), (1, 1, 2, 4), strict=True)]
    statistic, critical = level_heterogeneity(models=near, shares=shares)
    assert statistic < critical, "3 % apart with 5-8 % standard errors: noise"
    halved = [model(0.0095 / s) for s in (1, 1, 2, 2)]
    statistic, critical = level_heterogeneity(models=halved, shares=shares)
    assert statistic > critical, "a worker twice as slow as its share assumes is no accident"
    assert level_heterogeneity(models=[model(0.01), model(0.01)], shares=[1, 1])[0] == 0.0
