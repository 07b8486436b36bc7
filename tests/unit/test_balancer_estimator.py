"""Step-time estimator: recovers T(b) = a + c·b, follows changes, survives a restart."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.balancer import EstimatorConfig, Observation, StepTimeEstimator


def _feed(
    est: StepTimeEstimator,
    rng: np.random.Generator,
    *,
    a: float,
    c: float,
    cv: float,
    batches: list[int],
    start: float,
    count: int,
    steps: int = 10,
    period_s: float = 2.0,
    first_step: int = 0,
) -> int:
    step = first_step
    for i in range(count):
        b = batches[(i // 5) % len(batches)]  # b changes only every 5 observations
        mean = a + c * b
        seconds = float(np.mean(mean * (1 + cv * rng.standard_normal(steps))))
        step += steps
        est.update(
            Observation(batch=b, seconds=seconds, steps=steps, step=step, timestamp=start + i * period_s)
        )
    return step


def test_recovers_overhead_per_sample_cost_and_noise() -> None:
    rng = np.random.default_rng(1)
    est = StepTimeEstimator(config=EstimatorConfig(half_life_s=120.0))
    _feed(est, rng, a=0.05, c=0.01, cv=0.03, batches=[16, 24, 32, 48], start=0.0, count=400)
    model = est.model()
    assert model is not None and model.identified
    assert model.overhead_s == pytest.approx(0.05, abs=0.008)
    assert model.per_sample_s == pytest.approx(0.01, rel=0.03)
    assert 0.02 <= model.noise_cv <= 0.04  # per-step noise, recovered from 10-step window averages


def test_constant_batch_uses_prior_split_and_still_tracks_cost() -> None:
    rng = np.random.default_rng(2)
    est = StepTimeEstimator(config=EstimatorConfig(half_life_s=60.0))
    _feed(est, rng, a=0.02, c=0.01, cv=0.01, batches=[32], start=0.0, count=100)
    model = est.model(prior_overhead_s=0.03)
    assert model is not None and not model.identified
    assert model.overhead_s == pytest.approx(0.03, rel=1e-6)
    assert model.mean(32) == pytest.approx(0.02 + 0.01 * 32, rel=0.01)
    without_prior = est.model()
    assert without_prior is not None and without_prior.overhead_s == 0.0
    assert without_prior.per_sample_s == pytest.approx((0.02 + 0.32) / 32, rel=0.01)


def test_forgetting_follows_a_step_change() -> None:
    rng = np.random.default_rng(3)
    est = StepTimeEstimator(config=EstimatorConfig(half_life_s=30.0))
    step = _feed(est, rng, a=0.02, c=0.01, cv=0.02, batches=[32], start=0.0, count=100)
    before = est.model()
    assert before is not None and before.mean(32) == pytest.approx(0.34, rel=0.02)
    # the worker becomes 2x slower per sample at t = 200 s; 5 half-lives later the fit has followed
    _feed(est, rng, a=0.02, c=0.02, cv=0.02, batches=[32], start=200.0, count=76, first_step=step)
    after = est.model()
    assert after is not None and after.mean(32) == pytest.approx(0.66, rel=0.04)


def test_half_life_in_observations() -> None:
    est = StepTimeEstimator(config=EstimatorConfig(half_life_s=None, half_life_observations=4.0))
    for i in range(40):
        seconds = 1.0 if i < 20 else 2.0
        est.update(Observation(batch=10, seconds=seconds, step=i + 1, timestamp=0.0))  # same timestamp
    model = est.model()
    assert model is not None
    # 20 observations = 5 half-lives: the old regime keeps 1/32 of the weight
    assert model.mean(10) == pytest.approx(2.0 - 1.0 / 32, rel=1e-3)


def test_repeated_scrape_is_ignored() -> None:
    est = StepTimeEstimator()
    assert est.update(Observation(batch=8, seconds=0.5, step=10, timestamp=1.0))
    assert not est.update(Observation(batch=8, seconds=9.0, step=10, timestamp=2.0))
    model = est.model()
    assert model is not None and model.mean(8) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 0, "seconds": 1.0}, "batch"),
        ({"batch": 4, "seconds": 0.0}, "seconds"),
        ({"batch": 4, "seconds": float("nan")}, "seconds"),
    ],
)
def test_invalid_observation_is_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Observation(step=1, timestamp=0.0, **kwargs)  # type: ignore[arg-type]


def test_config_needs_exactly_one_half_life() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EstimatorConfig(half_life_s=10.0, half_life_observations=5.0)
