"""Share optimiser: exact totals, bounds, never worse than the equal split, near the brute-force optimum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paceline.balancer import (
    StepTimeModel,
    equal_split,
    expected_max_step_time,
    expected_throughput,
    ideal_throughput,
    optimize_shares,
)
from paceline.balancer.optimizer import log_normal_cdf

models_strategy = st.builds(
    lambda a, c, cv, noisy: StepTimeModel(overhead_s=a, per_sample_s=c, noise_cv=cv if noisy else 0.0),
    st.floats(0.0, 0.1),
    st.floats(1e-4, 0.05),
    st.floats(0.0, 0.3),
    st.booleans(),
)


@st.composite
def problems(draw: st.DrawFn, max_workers: int = 8, max_per_worker: int = 40) -> tuple:
    models = draw(st.lists(models_strategy, min_size=1, max_size=max_workers))
    n = len(models)
    min_batch = draw(st.integers(1, 3))
    caps = draw(
        st.lists(st.one_of(st.none(), st.integers(min_batch, max_per_worker)), min_size=n, max_size=n)
    )
    upper = sum(max_per_worker if c is None else c for c in caps)
    total = draw(st.integers(n * min_batch, upper))
    return models, total, min_batch, caps


@settings(max_examples=60, deadline=None)
@given(problems())
def test_total_and_bounds_hold_and_never_worse_than_equal_split(problem: tuple) -> None:
    models, total, min_batch, caps = problem
    solution = optimize_shares(models=models, total_batch=total, min_batch=min_batch, max_batch=caps)
    assert sum(solution.shares) == total
    for share, cap in zip(solution.shares, caps, strict=True):
        assert share >= min_batch
        assert cap is None or share <= cap
    equal = equal_split(total_batch=total, workers=len(models), min_batch=min_batch, max_batch=caps)
    assert solution.expected_step_s <= expected_max_step_time(models=models, shares=equal) * (1 + 1e-12)
    assert solution.expected_step_s == pytest.approx(
        expected_max_step_time(models=models, shares=solution.shares)
    )


@settings(max_examples=40, deadline=None)
@given(problems(max_workers=3, max_per_worker=12))
def test_within_one_sample_of_brute_force(problem: tuple) -> None:
    models, total, min_batch, caps = problem
    highs = [total if c is None else c for c in caps]
    best = math.inf
    for head in itertools.product(*(range(min_batch, h + 1) for h in highs[:-1])):
        last = total - sum(head)
        if min_batch <= last <= highs[-1]:
            best = min(best, expected_max_step_time(models=models, shares=[*head, last]))
    solution = optimize_shares(models=models, total_batch=total, min_batch=min_batch, max_batch=caps)
    one_sample = max(m.per_sample_s for m in models)
    assert solution.expected_step_s <= best + one_sample + 1e-12


def test_deterministic_shares_are_proportional_to_speed() -> None:
    fast = StepTimeModel(overhead_s=0.0, per_sample_s=0.01)
    slow = StepTimeModel(overhead_s=0.0, per_sample_s=0.02)
    solution = optimize_shares(models=[fast, slow, fast], total_batch=50)
    assert solution.shares == (20, 10, 20)
    assert solution.expected_step_s == pytest.approx(0.2)


def test_overhead_shifts_samples_to_the_worker_with_less_overhead() -> None:
    lean = StepTimeModel(overhead_s=0.0, per_sample_s=0.01)
    heavy = StepTimeModel(overhead_s=0.1, per_sample_s=0.01)
    assert optimize_shares(models=[lean, heavy], total_batch=40).shares == (25, 15)


def test_noisy_worker_gets_fewer_samples_than_an_equally_fast_steady_one() -> None:
    steady = StepTimeModel(overhead_s=0.0, per_sample_s=0.01, noise_cv=0.01)
    noisy = StepTimeModel(overhead_s=0.0, per_sample_s=0.01, noise_cv=0.3)
    shares = optimize_shares(models=[steady, noisy], total_batch=64).shares
    assert shares[0] > shares[1]


def test_expected_max_matches_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    models = [
        StepTimeModel(overhead_s=float(a), per_sample_s=float(c), noise_cv=float(v))
        for a, c, v in zip(
            rng.uniform(0, 0.05, 6), rng.uniform(0.005, 0.02, 6), rng.uniform(0.02, 0.3, 6), strict=True
        )
    ]
    shares = [20, 30, 25, 40, 10, 35]
    mu = np.array([m.mean(b) for m, b in zip(models, shares, strict=True)])
    sd = np.array([m.std(b) for m, b in zip(models, shares, strict=True)])
    draws = (mu + sd * rng.standard_normal((400_000, 6))).max(axis=1)
    assert expected_max_step_time(models=models, shares=shares) == pytest.approx(draws.mean(), rel=2e-3)


def test_single_worker_expected_max_is_its_mean() -> None:
    model = StepTimeModel(overhead_s=0.02, per_sample_s=0.01, noise_cv=0.2)
    assert expected_max_step_time(models=[model], shares=[30]) == pytest.approx(0.32, rel=1e-4)


def test_log_normal_cdf_matches_erfc() -> None:
    z = np.linspace(-30, 8, 761)
    reference = np.array([math.log(0.5 * math.erfc(-v / math.sqrt(2))) for v in z])
    assert np.allclose(log_normal_cdf(z), reference, rtol=1e-6, atol=1e-12)


def test_infeasible_totals_are_rejected() -> None:
    model = StepTimeModel(overhead_s=0.0, per_sample_s=0.01)
    with pytest.raises(ValueError, match="outside"):
        optimize_shares(models=[model, model], total_batch=3, min_batch=2)
    with pytest.raises(ValueError, match="outside"):
        optimize_shares(models=[model, model], total_batch=30, max_batch=[10, 10])


def test_equal_split() -> None:
    assert equal_split(total_batch=10, workers=3) == (4, 3, 3)
    assert equal_split(total_batch=30, workers=3, max_batch=[4, None, None]) == (4, 13, 13)


def test_throughput_helpers() -> None:
    fast = StepTimeModel(overhead_s=0.0, per_sample_s=0.01)
    slow = StepTimeModel(overhead_s=0.0, per_sample_s=0.02)
    # own capacity: 100 + 50 samples/s; synchronous equal split waits for the slow one: 40 / 0.4 s
    assert ideal_throughput(models=[fast, slow], shares=[20, 20]) == pytest.approx(150.0)
    assert expected_throughput(models=[fast, slow], shares=[20, 20]) == pytest.approx(100.0)
