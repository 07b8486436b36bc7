"""The balancing settings a job runs with (parsed from spec.balancing by `paceline.api`, which holds the
defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from paceline.balancer.estimator import EstimatorConfig
from paceline.balancer.straggler import StragglerConfig


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
    min_shift_percent: int  # the change in a worker's step time the detector is tuned to
    false_alarm_days: int  # expected days between two false change points of one worker
    switch_cost_steps: int  # what one change of shares costs, in steps

    def estimator_config(self) -> EstimatorConfig:
        return EstimatorConfig(half_life_s=float(self.half_life_seconds))

    def straggler_config(self, *, observation_interval_s: float = 2.0) -> StragglerConfig:
        return StragglerConfig(
            min_shift=self.min_shift_percent / 100.0,
            false_alarm_days=float(self.false_alarm_days),
            observation_interval_s=observation_interval_s,
        )
