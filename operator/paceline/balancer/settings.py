"""The TrainingJob spec's `balancing` block, parsed and validated (the spec holds no floats)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paceline.balancer.estimator import EstimatorConfig

_PATH = "spec.balancing"


class BalancingPolicy(enum.StrEnum):
    DYNAMIC = "Dynamic"  # rebalance live from measured speeds
    STATIC = "Static"  # keep the planned shares


@dataclass(frozen=True, kw_only=True)
class BalancingSettings:
    policy: BalancingPolicy = BalancingPolicy.DYNAMIC
    min_gain_percent: int = 5
    cooldown_seconds: int = 20
    half_life_seconds: int = 30
    min_batch_per_worker: int = 1

    @classmethod
    def from_spec(cls, block: Mapping[str, Any] | None) -> BalancingSettings:
        """Parse `spec.balancing`; raises ValueError naming the field and the fix."""
        if block is None:
            return cls()
        if not isinstance(block, Mapping):
            raise ValueError(f"{_PATH}: must be a mapping, got {type(block).__name__}")
        allowed = ("policy", "minGainPercent", "cooldownSeconds", "halfLifeSeconds", "minBatchPerWorker")
        unknown = sorted(set(block) - set(allowed))
        if unknown:
            raise ValueError(f"{_PATH}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        policy_raw = block.get("policy", BalancingPolicy.DYNAMIC.value)
        choices = [p.value for p in BalancingPolicy]
        if policy_raw not in choices:
            raise ValueError(f"{_PATH}.policy: must be one of {' or '.join(choices)}, got {policy_raw!r}")
        return cls(
            policy=BalancingPolicy(policy_raw),
            min_gain_percent=_int_field(block, "minGainPercent", 5, 0, 100),
            cooldown_seconds=_int_field(block, "cooldownSeconds", 20, 0, 86_400),
            half_life_seconds=_int_field(block, "halfLifeSeconds", 30, 1, 86_400),
            min_batch_per_worker=_int_field(block, "minBatchPerWorker", 1, 1, 65_536),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "policy": self.policy.value,
            "minGainPercent": self.min_gain_percent,
            "cooldownSeconds": self.cooldown_seconds,
            "halfLifeSeconds": self.half_life_seconds,
            "minBatchPerWorker": self.min_batch_per_worker,
        }

    def estimator_config(self) -> EstimatorConfig:
        return EstimatorConfig(half_life_s=float(self.half_life_seconds))


def _int_field(block: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{_PATH}.{key}: must be an integer (the spec has no floats), got {value!r}; "
            f"write e.g. {key}: {default}"
        )
    if not low <= value <= high:
        raise ValueError(f"{_PATH}.{key}: must be between {low} and {high}, got {value}")
    return value
