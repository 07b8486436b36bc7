"""Explicit momentum policy: clamping bounds, hysteresis, recompute triggers, Fixed policy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paceline.api import parse_momentum_tuning
from paceline.momentum import (
    MomentumController,
    MomentumEstimate,
    decide_momentum,
    explicit_momentum,
)

DEFAULT = parse_momentum_tuning({}, target=Decimal("0.9"))  # target 0.9, minChange 0.02


def _estimate(implicit: float, workers: int = 4) -> MomentumEstimate:
    return MomentumEstimate(
        implicit=implicit,
        mean_staleness=implicit / (1 - implicit),
        effective_samples=1000.0,
        theory=1 - 1 / workers,
        workers=workers,
    )


@st.composite
def bounds(draw: st.DrawFn) -> tuple[float, float, float]:
    target = draw(st.floats(0.0, 0.999))
    floor = draw(st.floats(-1.0, target))
    implicit = draw(st.floats(0.0, 0.999))
    return target, floor, implicit


@given(bounds())
def test_explicit_is_always_within_floor_and_target(case: tuple[float, float, float]) -> None:
    target, floor, implicit = case
    explicit = explicit_momentum(target=target, implicit=implicit, floor=floor)
    assert floor <= explicit <= target
    if floor <= target - implicit:
        assert explicit + implicit == pytest.approx(target)  # on target whenever the floor allows


def test_negative_explicit_momentum_at_high_asynchrony() -> None:
    assert explicit_momentum(target=0.9, implicit=0.95, floor=-0.3) == pytest.approx(-0.05)
    assert explicit_momentum(target=0.9, implicit=0.95, floor=0.0) == 0.0


def test_hysteresis_below_min_change() -> None:
    settings = DEFAULT  # target 0.9, minChange 0.02
    small = decide_momentum(settings=settings, estimate=_estimate(0.51), current_explicit=0.40)
    assert not small.apply and small.explicit == 0.40 and small.event_reason == ""
    assert small.proposed_explicit == pytest.approx(0.39)
    assert small.total == pytest.approx(0.91)
    big = decide_momentum(settings=settings, estimate=_estimate(0.55), current_explicit=0.40)
    assert big.apply and big.explicit == pytest.approx(0.35) and big.event_reason == "MomentumRetuned"
    assert big.total == pytest.approx(0.9)
    assert "0.400 → 0.350" in big.reason and "implicit 0.550" in big.reason
    assert big.to_status() == {"explicit": "0.350", "implicit": "0.550", "total": "0.900"}


def test_trigger_bypasses_hysteresis() -> None:
    decision = decide_momentum(
        settings=DEFAULT,
        estimate=_estimate(0.51),
        current_explicit=0.40,
        trigger="speed",
    )
    assert decision.apply and decision.explicit == pytest.approx(0.39)


def test_fixed_policy_uses_target() -> None:
    settings = parse_momentum_tuning({"policy": "Fixed"}, target=Decimal("0.9"))
    first = decide_momentum(settings=settings, estimate=_estimate(0.6), current_explicit=None)
    assert first.apply and first.explicit == pytest.approx(0.9) and first.total == pytest.approx(1.5)
    later = decide_momentum(settings=settings, estimate=_estimate(0.2), current_explicit=0.9)
    assert not later.apply


def test_controller_prior_then_worker_change_then_speed_change() -> None:
    controller = MomentumController.create(settings=DEFAULT, workers=4)
    speeds = {f"w{i}": 100.0 for i in range(4)}
    first = controller.decide(worker_speeds=speeds)
    assert first.apply and first.trigger == "initial"
    assert first.implicit == pytest.approx(0.75)  # prior 1 − 1/4 before any staleness arrives
    assert first.explicit == pytest.approx(0.15)
    controller.observe_staleness([3] * 2000)
    assert not controller.decide(worker_speeds=speeds).apply  # measured E[τ] = 3 agrees with the prior
    grown = {**speeds, "w4": 100.0, "w5": 100.0, "w6": 100.0, "w7": 100.0}
    resized = controller.decide(worker_speeds=grown)
    assert resized.apply and resized.trigger == "workers"
    assert resized.implicit == pytest.approx(0.875) and resized.explicit == pytest.approx(0.025)
    controller.observe_staleness([7] * 50)
    slower = {**grown, "w0": 50.0}
    retuned = controller.decide(worker_speeds=slower)
    assert retuned.trigger == "speed"
