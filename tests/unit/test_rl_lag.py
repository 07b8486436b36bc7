"""Reinforcement mode: policy-lag accounting and the drop rule."""

from __future__ import annotations

import pytest

from paceline_worker.reinforcement.lag import LagHistogram, is_stale, policy_lag


def test_lag_counts_versions_between_the_samples_policy_and_the_learners() -> None:
    assert policy_lag(learner_version=7, behaviour_version=4) == 3
    assert policy_lag(learner_version=4, behaviour_version=4) == 0


def test_a_sample_from_a_newer_policy_than_a_resumed_learners_counts_as_fresh() -> None:
    assert policy_lag(learner_version=2, behaviour_version=5) == 0


@pytest.mark.parametrize(
    ("lag", "max_lag", "stale"), [(0, 0, False), (1, 0, True), (2, 2, False), (3, 2, True)]
)
def test_drop_rule_drops_exactly_the_samples_beyond_max_policy_lag(
    lag: int, max_lag: int, stale: bool
) -> None:
    assert is_stale(learner_version=10, behaviour_version=10 - lag, max_lag=max_lag) is stale


def test_histogram_mean_and_quantiles_weight_by_samples() -> None:
    lags = LagHistogram()
    lags.observe(0, 100)
    lags.observe(1, 300)
    lags.observe(4, 0)  # nothing trained at lag 4: not listed
    lags.drop(50)
    assert lags.mean == pytest.approx(0.75)
    assert (lags.quantile(0.25), lags.quantile(0.5), lags.quantile(0.9)) == (0, 1, 1)
    doc = lags.to_json_dict()
    assert doc["counts"] == {"0": 100, "1": 300}
    assert doc["droppedSamples"] == 50 and doc["max"] == 1


def test_status_groups_large_lags_in_power_of_two_ranges() -> None:
    lags = LagHistogram()
    for lag in (3, 8, 9, 16, 17, 100):
        lags.observe(lag, 1)
    assert lags.bucketed() == {"3": 1, "8": 1, "9-16": 2, "17-32": 1, "65-128": 1}


def test_empty_histogram_reports_zero_lag() -> None:
    assert LagHistogram().mean == 0.0
    assert LagHistogram().quantile(0.9) == 0
