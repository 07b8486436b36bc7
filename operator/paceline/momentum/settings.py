"""The momentum-tuning settings an asynchronous job runs with (parsed from spec.momentumTuning and the
target spec.optimizer.momentum by `paceline.api`, which holds the defaults)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

_PATH = "spec.momentumTuning"


class MomentumPolicy(enum.StrEnum):
    AUTO = "Auto"  # explicit momentum from measured staleness (and curvature), see policy.py
    FIXED = "Fixed"  # explicit momentum = target, implicit only reported


@dataclass(frozen=True, kw_only=True)
class MomentumSettings:
    policy: MomentumPolicy
    target: float
    floor: float
    min_change: float
    half_life_updates: int
    learning_rate: float = 0.1  # spec.optimizer.learningRate: the step the target was tuned with

    def __post_init__(self) -> None:
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"spec.optimizer.momentum: must be in [0, 1), got {self.target}")
        if not -1.0 <= self.floor <= self.target:
            raise ValueError(
                f"{_PATH}.floor ({self.floor}) must lie in [-1, the target spec.optimizer.momentum "
                f"({self.target})]"
            )
        if not 0.0 <= self.min_change <= 0.5:
            raise ValueError(f"{_PATH}.minChange: must be in [0, 0.5], got {self.min_change}")
        if not self.learning_rate > 0:
            raise ValueError(f"spec.optimizer.learningRate: must be > 0, got {self.learning_rate}")
        if self.half_life_updates < 1:
            raise ValueError(f"{_PATH}.halfLifeUpdates: must be >= 1, got {self.half_life_updates}")
