"""The spec's `momentumTuning` block: decimal strings, bounds, and error messages."""

from __future__ import annotations

import pytest

from paceline.momentum import MomentumPolicy, MomentumSettings


def test_defaults_and_round_trip() -> None:
    settings = MomentumSettings.from_spec(None)
    assert settings == MomentumSettings()
    assert settings.to_spec() == {
        "policy": "Auto",
        "target": "0.9",
        "floor": "-0.3",
        "minChange": "0.02",
        "halfLifeUpdates": 200,
    }
    assert MomentumSettings.from_spec(settings.to_spec()) == settings


def test_parses_decimal_strings() -> None:
    block = {"policy": "Fixed", "target": "0.95", "floor": "0", "minChange": "0.05", "halfLifeUpdates": 100}
    settings = MomentumSettings.from_spec(block)
    assert settings.policy is MomentumPolicy.FIXED
    assert (settings.target, settings.floor, settings.min_change) == (0.95, 0.0, 0.05)
    assert settings.half_life_updates == 100


def test_target_from_spec_optimizer_momentum() -> None:
    settings = MomentumSettings.from_spec({"floor": "0"}, target="0.95")
    assert settings.target == 0.95 and settings.floor == 0.0
    with pytest.raises(ValueError, match=r"spec\.optimizer\.momentum: must be in \[0, 1\)"):
        MomentumSettings.from_spec(None, target="1.5")
    with pytest.raises(
        ValueError, match=r"spec\.momentumTuning\.target: the target is spec\.optimizer\.momentum"
    ):
        MomentumSettings.from_spec({"target": "0.9"}, target="0.9")
    with pytest.raises(ValueError, match=r"spec\.momentumTuning\.floor: must be in \[-1, 0\.5\]"):
        MomentumSettings.from_spec({"floor": "0.6"}, target="0.5")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"target": 0.9}, r"spec\.momentumTuning\.target: must be a decimal string"),
        ({"target": "abc"}, r"spec\.momentumTuning\.target: 'abc' is not a decimal number"),
        ({"target": "1.0"}, r"spec\.momentumTuning\.target: must be in \[0, 1\)"),
        ({"target": "NaN"}, r"spec\.momentumTuning\.target: must be a finite decimal"),
        ({"floor": "0.95"}, r"spec\.momentumTuning\.floor: must be in \[-1, 0\.9\]"),
        ({"floor": "-1.5"}, r"spec\.momentumTuning\.floor: must be in \[-1, 0\.9\]"),
        ({"minChange": "0.9"}, r"spec\.momentumTuning\.minChange: must be in \[0, 0\.5\]"),
        ({"halfLifeUpdates": "500"}, r"spec\.momentumTuning\.halfLifeUpdates: must be an integer"),
        ({"halfLifeUpdates": 0}, r"spec\.momentumTuning\.halfLifeUpdates: must be between 1"),
        ({"policy": "auto"}, r"spec\.momentumTuning\.policy: must be one of Auto or Fixed"),
        ({"mu": "0.9"}, r"spec\.momentumTuning: unknown field\(s\) mu"),
    ],
)
def test_invalid_blocks_name_the_field(block: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MomentumSettings.from_spec(block)
