"""The stopping rule: mean return over the last N finished episodes reaches the target, or a step budget."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import StrEnum


class StopReason(StrEnum):
    TARGET_RETURN = "TargetReturnReached"
    ENV_STEP_BUDGET = "EnvStepBudgetSpent"


class ReturnWindow:
    """Returns of the last `episodes` finished episodes; `best` is the best full-window mean seen."""

    def __init__(self, episodes: int, initial: Iterable[float] = ()) -> None:
        self._returns: deque[float] = deque(initial, maxlen=episodes)
        self.episodes_seen = len(self._returns)
        self.best: float | None = self.mean

    def extend(self, returns: Iterable[float]) -> None:
        for value in returns:
            self._returns.append(float(value))
            self.episodes_seen += 1
            mean = self.mean
            if mean is not None and (self.best is None or mean > self.best):
                self.best = mean

    @property
    def full(self) -> bool:
        return len(self._returns) == self._returns.maxlen

    @property
    def mean(self) -> float | None:
        """None until the window holds N episodes."""
        return sum(self._returns) / len(self._returns) if self.full else None

    @property
    def last(self) -> float | None:
        return self._returns[-1] if self._returns else None

    def values(self) -> list[float]:
        return list(self._returns)


def stop_reason(
    window: ReturnWindow, *, target_return: int | None, env_steps: int, max_env_steps: int
) -> StopReason | None:
    mean = window.mean
    if target_return is not None and mean is not None and mean >= target_return:
        return StopReason.TARGET_RETURN
    if max_env_steps > 0 and env_steps >= max_env_steps:
        return StopReason.ENV_STEP_BUDGET
    return None
