"""Explicit momentum policy: the explicit momentum that, composed with the measured implicit momentum, gives
the target total momentum and as much of the target's step as the delayed recursion stays stable with
(docs/momentum.md), with hysteresis and triggers."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from paceline.momentum.estimator import MomentumEstimate, StalenessEstimator, geometric_delays
from paceline.momentum.settings import MomentumPolicy, MomentumSettings
from paceline.momentum.stability import largest_stable_momentum, normalised_delays

CURVATURE_MARGIN = 1.0  # the recursion must stay stable up to this multiple of the measured curvature
PRIOR_EDGE_FRACTION = 0.5  # without a curvature: stable up to this fraction of the target's own edge

EVENT_REASON = "MomentumRetuned"
REPORTED_TRIGGERS = frozenset({"workers", "speed"})  # applied (and reported) even when the value stays


@dataclass(frozen=True, kw_only=True)
class MomentumDecision:
    apply: bool
    explicit: float  # explicit momentum to run with from now (== previous when not applied)
    proposed_explicit: float
    implicit: float
    total: float  # 1 − (1 − explicit)(1 − implicit): the momenta compose multiplicatively
    previous_explicit: float | None
    mean_staleness: float
    effective_samples: float
    trigger: str = ""  # "initial", "workers", "speed" or "" (periodic)
    curvature: float | None = None  # the curvature estimate the stability bound used (None: the prior)
    reason: str = ""
    event_reason: str = ""  # "MomentumRetuned" when applied

    def to_status(self) -> dict[str, str]:
        """`status.momentum`: decimals as strings, like the spec."""
        return {
            "explicit": f"{self.explicit:.3f}",
            "implicit": f"{self.implicit:.3f}",
            "total": f"{self.total:.3f}",
        }


def total_momentum(*, explicit: float, implicit: float) -> float:
    """The momenta compose as (1 − μ_total) = (1 − μ_explicit)(1 − μ_implicit)."""
    return 1.0 - (1.0 - explicit) * (1.0 - implicit)


def composed_momentum(*, target: float, implicit: float) -> float:
    """The explicit momentum that composes with `implicit` to the target: 1 − (1 − μ*)/(1 − μ_implicit)."""
    return 1.0 - (1.0 - target) / max(1.0 - implicit, 1e-9)


def delay_models(estimate: MomentumEstimate) -> tuple[tuple[float, ...], ...]:
    """The staleness distributions the momentum must be stable for: the measured histogram (prior blended
    in) and the geometric distribution with the same mean (the paper's model for exponential step times).

    A histogram of a few hundred forgetting-weighted samples is a noisy picture of the distribution's shape,
    and the delayed recursion's stability is sensitive to it; the geometric model with the measured mean is
    the maximum-entropy distribution on τ = 0, 1, ... with that mean. Requiring both keeps a sample that
    happens to look benign from licensing momentum the steady state will not tolerate, while a heavier-tailed
    measured distribution (unequal workers: a mixture of geometrics) still lowers it.
    """
    measured = normalised_delays(estimate.delays)
    geometric = normalised_delays(geometric_delays(estimate.mean_staleness))
    same = len(geometric) == len(measured) and all(
        abs(a - b) <= 1e-9 for a, b in zip(geometric, measured, strict=True)
    )
    return (measured,) if same else (measured, geometric)


def explicit_momentum(
    *,
    target: float,
    learning_rate: float,
    estimate: MomentumEstimate,
    floor: float,
    curvature: float | None = None,
) -> float:
    """The explicit momentum for the measured staleness distribution, in [floor, target].

    With a curvature estimate h: the largest momentum whose delayed heavy-ball recursion (step
    `learning_rate`; for each of `delay_models`: the measured τ histogram and the geometric distribution
    with its mean) stays stable up to CURVATURE_MARGIN·h — as close to the target's
    effective step α/(1 − μ*) as stability allows. Without one: the composition rule (exact total
    momentum, effective step shrunk by 1 − μ_implicit), lowered further if its recursion would be
    unstable below PRIOR_EDGE_FRACTION of the target's own stability edge 2(1 + μ*)/α.
    """
    if curvature is not None and curvature > 0 and math.isfinite(curvature):
        ceiling, bound = target, CURVATURE_MARGIN * curvature
    else:
        ceiling = min(max(composed_momentum(target=target, implicit=estimate.implicit), floor), target)
        bound = PRIOR_EDGE_FRACTION * 2.0 * (1.0 + target) / learning_rate
    stable = ceiling
    for model in delay_models(estimate):
        stable = largest_stable_momentum(
            learning_rate=learning_rate, delays=model, curvature_bound=bound, floor=floor, ceiling=stable
        )
    return max(math.floor(stable * 1000.0) / 1000.0, floor)  # 3 decimals, rounded towards stability


def decide_momentum(
    *,
    settings: MomentumSettings,
    estimate: MomentumEstimate,
    current_explicit: float | None,
    trigger: str = "",
    curvature: float | None = None,
) -> MomentumDecision:
    """Propose explicit momentum; apply when |Δ| ≥ minChange; on the first decision whenever it differs from
    the value in force; always on a change of the worker set or of a worker's speed (re-evaluated and
    reported even when the proposal equals the value in force)."""
    if settings.policy is MomentumPolicy.FIXED:
        proposed = settings.target
    else:
        proposed = explicit_momentum(
            target=settings.target,
            learning_rate=settings.learning_rate,
            estimate=estimate,
            floor=settings.floor,
            curvature=curvature,
        )
    if current_explicit is None and not trigger:
        trigger = "initial"
    delta = math.inf if current_explicit is None else proposed - current_explicit
    threshold = 0.0 if trigger else settings.min_change
    apply = trigger in REPORTED_TRIGGERS or (abs(delta) >= threshold and abs(delta) > 1e-9)
    explicit = proposed if apply or current_explicit is None else current_explicit
    total = total_momentum(explicit=explicit, implicit=estimate.implicit)
    bound = "prior curvature" if curvature is None else f"curvature {curvature:.3g}"
    numbers = (
        f"implicit {estimate.implicit:.3f} from mean staleness {estimate.mean_staleness:.2f} "
        f"({estimate.effective_samples:.0f} effective samples, {estimate.workers} workers), "
        f"total {total:.3f}, target {settings.target:.3f}, stable up to {bound}"
    )
    previous = "unset" if current_explicit is None else f"{current_explicit:.3f}"
    if settings.policy is MomentumPolicy.FIXED:
        numbers = f"policy Fixed; {numbers}"
    elif proposed <= settings.floor:
        numbers = f"{numbers}, clamped at floor {settings.floor:.3f}"
    why = f" ({trigger})" if trigger else ""
    if apply and abs(delta) <= 1e-9:
        reason = f"explicit momentum stays {previous}{why}: {numbers}"
    elif apply:
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
        curvature=curvature,
    )


@dataclass(kw_only=True)
class CurvatureEstimator:
    """Exponentially weighted mean of the workers' top-Hessian-eigenvalue estimates (None before any)."""

    half_life: float = 8.0  # in reports
    value: float | None = None

    def observe(self, estimate: float) -> None:
        if not math.isfinite(estimate) or estimate <= 0:
            return
        if self.value is None:
            self.value = estimate
            return
        keep = 0.5 ** (1.0 / self.half_life)
        self.value = keep * self.value + (1.0 - keep) * estimate


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
    members: set[str] = field(default_factory=set)  # the worker set the estimate is for
    speed_change_ratio: float = 1.25
    speed_shrink: float = 0.1
    curvature: CurvatureEstimator = field(default_factory=lambda: CurvatureEstimator())

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

    def observe_curvature(self, values: Iterable[float]) -> None:
        """Workers' estimates of the loss's top Hessian eigenvalue (non-finite or ≤ 0 ignored)."""
        for value in values:
            self.curvature.observe(value)

    def _trigger(self, members: set[str], speeds: Mapping[str, float]) -> str:
        if not self.members:
            return "initial"  # the first worker set seen (the shards run the value they started with)
        if members != self.members:
            return "workers"
        for name, speed in speeds.items():
            ref = self.speeds.get(name, 0.0)
            if ref > 0 and speed > 0 and max(speed / ref, ref / speed) >= self.speed_change_ratio:
                return "speed"
        return ""

    def decide(
        self, *, worker_speeds: Mapping[str, float], workers: Collection[str] | None = None
    ) -> MomentumDecision:
        """Re-evaluate with the current worker set and speeds (e.g. samples/s per worker).

        `workers` is the worker set (default: the workers with a speed). Only a change of that set resets
        the estimate; a worker whose speed is missing this time (a missed scrape) keeps its reference speed.
        """
        members = set(worker_speeds if workers is None else workers)
        known = bool(self.members) or self.current_explicit is not None
        trigger = self._trigger(members, worker_speeds) if known else ""
        if trigger in ("workers", "initial") and members:
            self.estimator.reset(workers=len(members))
            self.speeds = {}
        elif trigger == "speed":
            self.estimator.shrink(self.speed_shrink)
        self.members = members
        for name, speed in worker_speeds.items():
            if trigger or name not in self.speeds:
                self.speeds[name] = speed
        decision = decide_momentum(
            settings=self.settings,
            estimate=self.estimator.estimate(),
            current_explicit=self.current_explicit,
            trigger=trigger,
            curvature=self.curvature.value,
        )
        if decision.apply:
            self.current_explicit = decision.explicit
        return decision
