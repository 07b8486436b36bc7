"""Implicit momentum from staleness: recovers μ of geometric staleness; the 1 − 1/M prior."""

from __future__ import annotations

import numpy as np
import pytest

from paceline.momentum import StalenessEstimator, momentum_from_staleness, theory_momentum


@pytest.mark.parametrize("mu", [0.0, 0.3, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_mu_from_geometric_staleness(mu: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    staleness = rng.geometric(1.0 - mu, size=6000) - 1  # P(τ = l) = (1 − μ) μ^l, l >= 0
    est = StalenessEstimator(half_life_updates=500.0, workers=4)
    est.observe_many(int(t) for t in staleness)
    estimate = est.estimate()
    assert estimate.implicit == pytest.approx(mu, abs=0.02)
    assert estimate.effective_samples == pytest.approx(1443, rel=0.01)  # (1 + λ)/(1 − λ), λ = 2^(−1/500)


def test_follows_a_change_in_asynchrony() -> None:
    rng = np.random.default_rng(5)
    est = StalenessEstimator(half_life_updates=1000.0, workers=4)
    est.observe_many(int(t) for t in rng.geometric(1 - 0.5, size=8000) - 1)
    assert est.estimate().implicit == pytest.approx(0.5, abs=0.02)
    est.observe_many(int(t) for t in rng.geometric(1 - 0.9, size=8000) - 1)
    assert est.estimate().implicit == pytest.approx(0.9, abs=0.02)


def test_prior_before_samples_and_theory_values() -> None:
    assert theory_momentum(1) == 0.0
    assert theory_momentum(8) == pytest.approx(0.875)
    assert momentum_from_staleness(7.0) == pytest.approx(0.875)  # E[τ] = M − 1 gives 1 − 1/M
    est = StalenessEstimator(workers=8)
    estimate = est.estimate()
    assert estimate.implicit == pytest.approx(0.875) and estimate.theory == pytest.approx(0.875)
    assert estimate.effective_samples == 0.0
    est.observe_many([0] * 20)  # 20 samples against a prior worth 20: about halfway
    assert est.estimate().mean_staleness == pytest.approx(3.5, rel=0.03)


def test_reset_and_shrink() -> None:
    est = StalenessEstimator(workers=2)
    est.observe_many([9] * 1000)
    est.reset(workers=5)
    assert est.estimate().implicit == pytest.approx(0.8)
    est.observe_many([9] * 5000)  # ten half-lives: the prior is forgotten
    old_weight = est.weight
    est.shrink(0.1)
    est.observe_many([1] * 50)
    lam = est.decay
    old, new = 0.1 * old_weight * lam**50, (1 - lam**50) / (1 - lam)
    assert est.estimate().mean_staleness == pytest.approx((9 * old + new) / (old + new), rel=1e-3)
    assert est.estimate().mean_staleness < 6  # without the shrink it would still be near 8.5


def test_negative_staleness_is_rejected() -> None:
    est = StalenessEstimator(half_life_updates=50.0, workers=3)
    with pytest.raises(ValueError, match="staleness"):
        est.observe(-1)


def test_histogram_follows_the_measured_distribution_and_survives_a_restore() -> None:
    est = StalenessEstimator(half_life_updates=100.0, workers=4, prior_samples=0.0)
    est.observe_many([0, 5] * 500)
    delays = est.estimate().delays
    assert delays[0] == pytest.approx(0.5, abs=0.02) and delays[5] == pytest.approx(0.5, abs=0.02)
    one_by_one = StalenessEstimator(half_life_updates=100.0, workers=4, prior_samples=0.0)
    for value in [0, 5] * 500:
        one_by_one.observe(value)
    assert one_by_one.histogram == pytest.approx(est.histogram)
    copy = StalenessEstimator(half_life_updates=100.0, workers=4, prior_samples=0.0)
    assert copy.restore(est.to_dict())
    assert copy.estimate().delays == pytest.approx(delays, abs=1e-5)
    assert not StalenessEstimator(workers=5).restore(est.to_dict())  # another worker count: not applicable
    assert not copy.restore({"v": 2})


def test_prior_distribution_is_geometric_with_mean_m_minus_one() -> None:
    delays = StalenessEstimator(workers=4).estimate().delays
    assert sum(delays) == pytest.approx(1.0)
    assert sum(lag * p for lag, p in enumerate(delays)) == pytest.approx(3.0, rel=0.01)
