"""Explicit momentum policy: keep explicit + implicit momentum on target, with hysteresis and triggers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from paceline.momentum.estimator import MomentumEstimate, StalenessEstimator
from paceline.momentum.settings import MomentumPolicy, MomentumSettings

EVENT_REASON = "MomentumRetuned"


@dataclass(frozen=True, kw_only=True)
class MomentumDecision:
    apply: bool
    explicit: float  # explicit momentum to run with from now (== previous when not applied)
    proposed_explicit: float
    implicit: float
    total: float  # explicit + implicit
    previous_explicit: float | None
    mean_staleness: float
    effective_samples: float
    trigger: str = ""  # "initial", "workers", "speed" or "" (periodic)
    reason: str = ""
    event_reason: str = ""  # "MomentumRetuned" when applied

    def to_status(self) -> dict[str, str]:
        """`status.momentum`: decimals as strings, like the spec."""
        return {
            "explicit": f"{self.explicit:.3f}",
            "implicit": f"{self.implicit:.3f}",
            "total": f"{self.total:.3f}",
        }


def explicit_momentum(*, target: float, implicit: float, floor: float) -> float:
    """μ_explicit = clamp(μ_target − μ_implicit, μ_floor, μ_target)."""
    return min(max(target - implicit, floor), target)


def decide_momentum(
    *,
    settings: MomentumSettings,
    estimate: MomentumEstimate,
    current_explicit: float | None,
    trigger: str = "",
) -> MomentumDecision:
    """Propose explicit momentum; apply when |Δ| ≥ minChange, or on a trigger / first decision."""
    if settings.policy is MomentumPolicy.FIXED:
        proposed = settings.target
    else:
        proposed = explicit_momentum(target=settings.target, implicit=estimate.implicit, floor=settings.floor)
    if current_explicit is None and not trigger:
        trigger = "initial"
    delta = math.inf if current_explicit is None else proposed - current_explicit
    threshold = 0.0 if trigger else settings.min_change
    apply = abs(delta) >= threshold and abs(delta) > 1e-9
    explicit = proposed if apply or current_explicit is None else current_explicit
    total = explicit + estimate.implicit
    numbers = (
        f"implicit {estimate.implicit:.3f} from mean staleness {estimate.mean_staleness:.2f} "
        f"({estimate.effective_samples:.0f} effective samples, {estimate.workers} workers), "
        f"total {total:.3f}, target {settings.target:.3f}"
    )
    previous = "unset" if current_explicit is None else f"{current_explicit:.3f}"
    if settings.policy is MomentumPolicy.FIXED:
        numbers = f"policy Fixed; {numbers}"
    elif settings.target - estimate.implicit < settings.floor:
        numbers = f"{numbers}, clamped at floor {settings.floor:.3f}"
    if apply:
        why = f" ({trigger})" if trigger else ""
        reason = f"explicit momentum {previous} → {proposed:.3f}{why}: {numbers}"
    else:
        reason = (
            f"kept explicit momentum {previous} (proposed {proposed:.3f}, "
            f"|Δ| < minChange {settings.min_change}): {numbers}"
        )
    return MomentumDecision(
        apply=apply,
        explicit=explicit,
        proposed_explicit=proposed,
        implicit=estimate.implicit,
        total=total,
        previous_explicit=current_explicit,
        mean_staleness=estimate.mean_staleness,
        effective_samples=estimate.effective_samples,
        trigger=trigger,
        reason=reason,
        event_reason=EVENT_REASON if apply else "",
    )


@dataclass(kw_only=True)
class MomentumController:
    """Estimator + policy + memory of what was applied; the operator keeps one per asynchronous job.

    A change in the worker set resets the estimator to the 1 − 1/M prior for the new M; a worker whose
    speed changed by `speed_change_ratio` or more shrinks the history by `speed_shrink`. Both force a
    recompute that bypasses the minChange hysteresis.
    """

    settings: MomentumSettings
    estimator: StalenessEstimator = field(default_factory=StalenessEstimator)
    current_explicit: float | None = None
    speeds: dict[str, float] = field(default_factory=dict)  # reference speed per worker
    speed_change_ratio: float = 1.25
    speed_shrink: float = 0.1

    @classmethod
    def create(cls, *, settings: MomentumSettings, workers: int) -> MomentumController:
        return cls(
            settings=settings,
            estimator=StalenessEstimator(
                half_life_updates=float(settings.half_life_updates), workers=workers
            ),
        )

    def observe_staleness(self, values: Iterable[int]) -> None:
        self.estimator.observe_many(values)

    def _trigger(self, speeds: Mapping[str, float]) -> str:
        if set(speeds) != set(self.speeds):
            return "workers"
        for name, speed in speeds.items():
            ref = self.speeds[name]
            if ref > 0 and speed > 0 and max(speed / ref, ref / speed) >= self.speed_change_ratio:
                return "speed"
        return ""

    def decide(self, *, worker_speeds: Mapping[str, float]) -> MomentumDecision:
        """Re-evaluate with the current worker set and speeds (e.g. samples/s per worker)."""
        trigger = self._trigger(worker_speeds) if self.speeds or self.current_explicit is not None else ""
        if trigger == "workers" and worker_speeds:
            self.estimator.reset(workers=len(worker_speeds))
        elif trigger == "speed":
            self.estimator.shrink(self.speed_shrink)
        if trigger or not self.speeds:
            self.speeds = dict(worker_speeds)
        decision = decide_momentum(
            settings=self.settings,
            estimate=self.estimator.estimate(),
            current_explicit=self.current_explicit,
            trigger=trigger,
        )
        if decision.apply:
            self.current_explicit = decision.explicit
        return decision
