"""Rebalance decision with hysteresis: apply new shares only for a real gain and after a cooldown.

Transient stragglers are not chased: the models come from `FleetTracker`, which keeps observations of a
slow episode out of the estimator until the episode has persisted (`StragglerConfig.min_persistence_s`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from paceline.balancer.estimator import StepTimeModel
from paceline.balancer.optimizer import expected_max_step_time, optimize_shares
from paceline.balancer.settings import BalancingPolicy, BalancingSettings
from paceline.balancer.straggler import StragglerState, StragglerStatus

EVENT_REASON = "Rebalanced"
_MAX_LISTED = 8


@dataclass(frozen=True, kw_only=True)
class ShareChange:
    worker: str
    old: int
    new: int


@dataclass(frozen=True, kw_only=True)
class RebalanceDecision:
    apply: bool
    shares: dict[str, int]  # the shares to run with from now on (== current when not applied)
    proposed: dict[str, int] = field(default_factory=dict)  # the optimizer's shares, applied or not
    predicted_step_s_now: float | None = None
    predicted_step_s_after: float | None = None
    gain_fraction: float = 0.0  # (now − after) / now
    changes: tuple[ShareChange, ...] = ()  # workers whose share differs in the proposal
    reason: str = ""  # one line with the numbers, for the event message / status
    event_reason: str = ""  # "Rebalanced" when applied


def _format_changes(changes: tuple[ShareChange, ...]) -> str:
    parts = [f"{c.worker} {c.old}→{c.new}" for c in changes[:_MAX_LISTED]]
    if len(changes) > _MAX_LISTED:
        parts.append(f"+{len(changes) - _MAX_LISTED} more")
    return ", ".join(parts)


def _format_stragglers(stragglers: Mapping[str, StragglerStatus]) -> str:
    parts = []
    for name, status in sorted(stragglers.items()):
        if status.state is StragglerState.PERSISTENT:
            parts.append(
                f"persistent straggler {name}: {status.slowdown:.2f}x slower since t={status.since:.0f}s"
            )
        elif status.state is StragglerState.TRANSIENT:
            parts.append(f"ignoring transient slowdown of {name} ({status.slowdown:.2f}x)")
    return "; ".join(parts)


def decide_rebalance(
    *,
    settings: BalancingSettings,
    current: Mapping[str, int],
    models: Mapping[str, StepTimeModel],
    now: float,
    last_change_at: float | None,
    max_batch: Mapping[str, int] | None = None,
    stragglers: Mapping[str, StragglerStatus] | None = None,
) -> RebalanceDecision:
    """Decide whether to move to new shares (same total), given the current shares and estimates."""
    keep = dict(current)
    if not current:
        return RebalanceDecision(apply=False, shares=keep, reason="no workers")
    if settings.policy is BalancingPolicy.STATIC:
        return RebalanceDecision(apply=False, shares=keep, reason="balancing policy is Static")
    missing = sorted(set(current) - set(models))
    if missing:
        return RebalanceDecision(
            apply=False, shares=keep, reason=f"waiting for step-time estimates of {', '.join(missing)}"
        )
    names = list(current)
    ordered = [models[n] for n in names]
    total = sum(current.values())
    limits = [None if max_batch is None else max_batch.get(n) for n in names]
    try:
        solution = optimize_shares(
            models=ordered, total_batch=total, min_batch=settings.min_batch_per_worker, max_batch=limits
        )
    except ValueError as err:  # bounds cannot hold the total batch
        return RebalanceDecision(apply=False, shares=keep, reason=f"cannot rebalance: {err}")
    before = expected_max_step_time(models=ordered, shares=[current[n] for n in names])
    after = solution.expected_step_s
    proposed = dict(zip(names, solution.shares, strict=True))
    changes = tuple(
        ShareChange(worker=n, old=current[n], new=proposed[n]) for n in names if proposed[n] != current[n]
    )
    gain = (before - after) / before if before > 0 else 0.0
    numbers = f"predicted step {before:.3f}s → {after:.3f}s ({100 * gain:.1f}% faster)"
    notes = _format_stragglers(stragglers or {})
    suffix = f"; {notes}" if notes else ""
    base = RebalanceDecision(
        apply=False,
        shares=keep,
        proposed=proposed,
        predicted_step_s_now=before,
        predicted_step_s_after=after,
        gain_fraction=gain,
        changes=changes,
    )

    def hold(why: str) -> RebalanceDecision:
        return replace(base, reason=f"kept shares: {why}{suffix}")

    if not changes or gain <= 0:
        return hold(f"already balanced, {numbers}")
    threshold = settings.min_gain_percent / 100.0
    if gain < threshold:
        return hold(f"{numbers}, below minGainPercent {settings.min_gain_percent}%")
    if last_change_at is not None and now - last_change_at < settings.cooldown_seconds:
        left = settings.cooldown_seconds - (now - last_change_at)
        return hold(f"{numbers}, cooldown {left:.0f}s left of {settings.cooldown_seconds}s")
    reason = f"{numbers}, ≥ {settings.min_gain_percent}%: {_format_changes(changes)}{suffix}"
    return replace(base, apply=True, shares=proposed, reason=reason, event_reason=EVENT_REASON)
