"""The spec's `balancing` block: defaults, parsing, and error messages that say what to fix."""

from __future__ import annotations

import pytest

from paceline.balancer import BalancingPolicy, BalancingSettings


def test_defaults_and_round_trip() -> None:
    settings = BalancingSettings.from_spec(None)
    assert settings == BalancingSettings()
    assert settings.to_spec() == {
        "policy": "Dynamic",
        "minGainPercent": 5,
        "cooldownSeconds": 20,
        "halfLifeSeconds": 30,
        "minBatchPerWorker": 1,
    }
    assert BalancingSettings.from_spec(settings.to_spec()) == settings
    assert settings.estimator_config().half_life_s == 30.0


def test_parses_a_full_block() -> None:
    block = {"policy": "Static", "minGainPercent": 10, "cooldownSeconds": 0, "halfLifeSeconds": 60}
    settings = BalancingSettings.from_spec(block)
    assert settings.policy is BalancingPolicy.STATIC
    assert (settings.min_gain_percent, settings.cooldown_seconds, settings.half_life_seconds) == (10, 0, 60)
    assert settings.min_batch_per_worker == 1


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"minGainPercent": 5.5}, r"spec\.balancing\.minGainPercent: must be an integer"),
        ({"cooldownSeconds": "20"}, r"spec\.balancing\.cooldownSeconds: must be an integer"),
        ({"halfLifeSeconds": True}, r"spec\.balancing\.halfLifeSeconds: must be an integer"),
        ({"halfLifeSeconds": 0}, r"spec\.balancing\.halfLifeSeconds: must be between 1 and"),
        ({"minBatchPerWorker": 0}, r"spec\.balancing\.minBatchPerWorker: must be between 1 and"),
        ({"minGainPercent": 101}, r"spec\.balancing\.minGainPercent: must be between 0 and 100"),
        ({"policy": "dynamic"}, r"spec\.balancing\.policy: must be one of Dynamic or Static"),
        ({"minGain": 5}, r"spec\.balancing: unknown field\(s\) minGain"),
    ],
)
def test_invalid_blocks_name_the_field(block: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BalancingSettings.from_spec(block)
