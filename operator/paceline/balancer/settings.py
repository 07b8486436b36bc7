"""The balancing settings a job runs with (parsed from spec.balancing by `paceline.api`, which holds the
defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from paceline.balancer.estimator import EstimatorConfig


class BalancingPolicy(enum.StrEnum):
    DYNAMIC = "Dynamic"  # rebalance live from measured speeds
    STATIC = "Static"  # keep the planned shares


@dataclass(frozen=True, kw_only=True)
class BalancingSettings:
    policy: BalancingPolicy
    min_gain_percent: int
    cooldown_seconds: int
    half_life_seconds: int
    min_batch_per_worker: int

    def estimator_config(self) -> EstimatorConfig:
        return EstimatorConfig(half_life_s=float(self.half_life_seconds))
