"""Explicit momentum policy: composition, the delayed recursion's stability, hysteresis, triggers, Fixed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paceline.api import parse_momentum_tuning
from paceline.momentum import (
    MomentumController,
    MomentumEstimate,
    StalenessEstimator,
    decide_momentum,
    explicit_momentum,
)
from paceline.momentum.estimator import geometric_delays
from paceline.momentum.policy import composed_momentum, delay_models, total_momentum
from paceline.momentum.stability import largest_stable_momentum, normalised_delays, stable_for

DEFAULT = parse_momentum_tuning({}, target=Decimal("0.9"))  # target 0.9, lr 0.1, minChange 0.02


def _prior(workers: int):  # type: ignore[no-untyped-def]
    return StalenessEstimator(workers=workers).estimate()


def test_composition_rule_gives_the_target_total() -> None:
    for implicit in (0.0, 0.5, 0.75, 0.875):
        explicit = composed_momentum(target=0.9, implicit=implicit)
        assert total_momentum(explicit=explicit, implicit=implicit) == pytest.approx(0.9)
    assert composed_momentum(target=0.9, implicit=0.5) == pytest.approx(0.8)
    assert composed_momentum(target=0.9, implicit=0.95) < 0  # negative explicit at high asynchrony


def test_without_staleness_the_target_is_kept() -> None:
    assert explicit_momentum(target=0.9, learning_rate=0.1, estimate=_prior(1), floor=-0.3) == 0.9
    assert (
        explicit_momentum(target=0.9, learning_rate=0.1, estimate=_prior(1), floor=-0.3, curvature=2.0) == 0.9
    )


@pytest.mark.parametrize("curvature", [1.0, 3.0, 10.0])
def test_more_staleness_or_curvature_means_less_explicit_momentum_and_the_result_is_stable(
    curvature: float,
) -> None:
    chosen = [
        explicit_momentum(target=0.9, learning_rate=0.1, estimate=_prior(m), floor=-0.3, curvature=curvature)
        for m in (1, 2, 4, 8)
    ]
    assert chosen == sorted(chosen, reverse=True) and chosen[-1] < chosen[0]
    for m, mu in zip((2, 4, 8), chosen[1:], strict=True):
        delays = normalised_delays(geometric_delays(m - 1))
        assert stable_for(momentum=mu, learning_rate=0.1, delays=delays, curvature_bound=curvature)
        if mu < 0.9:  # the largest such: a little more is unstable
            assert not stable_for(
                momentum=mu + 0.02, learning_rate=0.1, delays=delays, curvature_bound=curvature
            )
    higher = explicit_momentum(target=0.9, learning_rate=0.1, estimate=_prior(8), floor=-0.3, curvature=30.0)
    assert higher <= chosen[-1]


def test_the_bound_is_the_floor_when_nothing_is_stable() -> None:
    delays = normalised_delays(geometric_delays(15.0))
    assert (
        largest_stable_momentum(
            learning_rate=1.0, delays=delays, curvature_bound=50.0, floor=-0.3, ceiling=0.9
        )
        == -0.3
    )


def test_the_distribution_not_only_the_mean_matters() -> None:
    # same mean staleness 3: geometric vs. always exactly 3
    geometric = normalised_delays(geometric_delays(3.0))
    constant = (0.0, 0.0, 0.0, 1.0)
    results = [
        largest_stable_momentum(learning_rate=0.1, delays=d, curvature_bound=3.0, floor=-0.3, ceiling=0.9)
        for d in (geometric, constant)
    ]
    assert abs(results[0] - results[1]) > 0.02


def _measured(delays: list[float], workers: int = 4) -> MomentumEstimate:
    probabilities = normalised_delays(delays)
    mean = sum(lag * p for lag, p in enumerate(probabilities))
    return MomentumEstimate(
        implicit=mean / (1.0 + mean),
        mean_staleness=mean,
        effective_samples=100.0,
        theory=1.0 - 1.0 / workers,
        workers=workers,
        delays=probabilities,
    )


def test_a_benign_looking_histogram_does_not_license_more_than_the_geometric_model() -> None:
    # mean staleness 3, mostly fresh with a few very stale updates: in expectation the fresh gradient
    # dominates and the histogram alone tolerates all the momentum; geometric staleness does not
    estimate = _measured([0.75, *[0.0] * 11, 0.25])
    measured, geometric = delay_models(estimate)
    assert geometric == normalised_delays(geometric_delays(3.0))
    alone = [
        largest_stable_momentum(learning_rate=0.1, delays=d, curvature_bound=3.0, floor=-0.3, ceiling=0.9)
        for d in (measured, geometric)
    ]
    assert alone[0] > alone[1] + 0.02
    chosen = explicit_momentum(target=0.9, learning_rate=0.1, estimate=estimate, floor=-0.3, curvature=3.0)
    assert chosen == pytest.approx(alone[1], abs=1e-3)


def test_geometric_staleness_is_one_model() -> None:
    assert len(delay_models(_prior(8))) == 1  # the prior alone is geometric: nothing to add
    assert len(delay_models(_prior(1))) == 1  # synchronous: τ = 0 only


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12).filter(
        lambda w: sum(w) > 0.01
    ),
    curvature=st.floats(min_value=0.3, max_value=10.0),
)
def test_the_momentum_is_stable_for_the_histogram_and_the_geometric_model(
    weights: list[float], curvature: float
) -> None:
    estimate = _measured(weights)
    chosen = explicit_momentum(
        target=0.9, learning_rate=0.1, estimate=estimate, floor=-0.3, curvature=curvature
    )
    assert -0.3 <= chosen <= 0.9
    if chosen > -0.3:
        for delays in delay_models(estimate):
            assert stable_for(momentum=chosen, learning_rate=0.1, delays=delays, curvature_bound=curvature)
    measured_only = largest_stable_momentum(
        learning_rate=0.1,
        delays=normalised_delays(weights),
        curvature_bound=curvature,
        floor=-0.3,
        ceiling=0.9,
    )
    assert chosen <= measured_only + 1e-9


def test_hysteresis_below_min_change_and_trigger_bypasses_it() -> None:
    estimate = _prior(4)
    proposed = explicit_momentum(target=0.9, learning_rate=0.1, estimate=estimate, floor=-0.3)
    kept = decide_momentum(settings=DEFAULT, estimate=estimate, current_explicit=proposed + 0.01)
    assert not kept.apply and kept.explicit == pytest.approx(proposed + 0.01) and kept.event_reason == ""
    forced = decide_momentum(
        settings=DEFAULT, estimate=estimate, current_explicit=proposed + 0.01, trigger="workers"
    )
    assert forced.apply and forced.explicit == proposed and forced.event_reason == "MomentumRetuned"
    assert forced.total == pytest.approx(total_momentum(explicit=proposed, implicit=0.75))


def test_a_trigger_is_reported_even_when_the_proposal_equals_the_value_in_force() -> None:
    estimate = _prior(2)
    proposed = explicit_momentum(target=0.9, learning_rate=0.1, estimate=estimate, floor=-0.3, curvature=0.5)
    same = decide_momentum(
        settings=DEFAULT, estimate=estimate, current_explicit=proposed, trigger="workers", curvature=0.5
    )
    assert same.apply and same.explicit == proposed and same.event_reason == "MomentumRetuned"
    assert f"stays {proposed:.3f} (workers)" in same.reason and "2 workers" in same.reason
    quiet = decide_momentum(settings=DEFAULT, estimate=estimate, current_explicit=proposed, curvature=0.5)
    assert not quiet.apply and quiet.event_reason == ""


def test_fixed_policy_uses_target() -> None:
    settings = parse_momentum_tuning({"policy": "Fixed"}, target=Decimal("0.9"))
    decision = decide_momentum(settings=settings, estimate=_prior(8), current_explicit=None)
    assert decision.apply and decision.explicit == 0.9 and "policy Fixed" in decision.reason


def test_controller_a_missed_scrape_is_not_a_worker_change_a_real_one_is() -> None:
    controller = MomentumController.create(settings=DEFAULT, workers=4)
    names = [f"w{i}" for i in range(4)]
    speeds = dict.fromkeys(names, 100.0)
    first = controller.decide(worker_speeds=speeds, workers=names)
    assert first.apply and first.trigger == "initial" and first.implicit == pytest.approx(0.75)
    controller.observe_staleness([1] * 2000)  # much less staleness than the prior's 3
    measured = controller.decide(worker_speeds=speeds, workers=names)
    assert measured.implicit < 0.6
    missed = controller.decide(worker_speeds={"w0": 100.0, "w1": 100.0}, workers=names)  # two scrapes failed
    assert missed.trigger == "" and missed.implicit == pytest.approx(measured.implicit)
    gone = controller.decide(worker_speeds=speeds | {"w4": 100.0}, workers=[*names, "w4"])
    assert gone.trigger == "workers" and gone.implicit == pytest.approx(0.8)  # prior for M = 5
    slower = controller.decide(worker_speeds=speeds | {"w4": 50.0}, workers=[*names, "w4"])
    assert slower.trigger == "speed"


def test_curvature_reports_drive_the_bound() -> None:
    controller = MomentumController.create(settings=DEFAULT, workers=8)
    names = [f"w{i}" for i in range(8)]
    prior = controller.decide(worker_speeds=dict.fromkeys(names, 1.0), workers=names)
    assert prior.curvature is None and "prior curvature" in prior.reason
    controller.observe_curvature([float("nan"), -1.0, 2.0])  # only the positive finite one counts
    assert controller.curvature.value == 2.0
    measured = controller.decide(worker_speeds=dict.fromkeys(names, 1.0), workers=names)
    assert measured.curvature == 2.0 and "curvature 2" in measured.reason
    assert measured.explicit > prior.explicit  # a measured small curvature allows more momentum
