"""Rebalance decision: apply new shares when the expected gain over the regime outweighs the switch.

The models come from `FleetTracker`, whose change-point detector keeps unproven slow evidence out of them.
The gain of new shares is worth `gain × R` seconds of wall time, where R is the expected remaining duration
of the current regime. R is not known; the decision takes R = the regime's age (the time since the latest
confirmed change point, or since the first observation): under a heavy-tailed (Pareto, α = 2) prior on
regime durations, E[remaining | lasted A] = A — a regime that has just begun is expected to end soon, one
that has lasted an hour to last a while. The cost: `switchCostSteps` steps per switch, and — when the
regime is the consequence of a recent change point — the switch back plus the time spent at the new shares
in the old regime while its return is being detected (the detection delay measured at the onset), priced
with the pre-change models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from paceline.balancer.estimator import StepTimeModel, chi_square_quantile
from paceline.balancer.optimizer import expected_max_step_time, optimize_shares
from paceline.balancer.settings import BalancingPolicy, BalancingSettings
from paceline.balancer.straggler import StragglerState, StragglerStatus

EVENT_REASON = "Rebalanced"
_Z_99 = 2.3263  # standard normal 0.99 quantile
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
    benefit_s: float = 0.0  # expected wall seconds saved over the expected remaining regime
    cost_s: float = 0.0  # expected wall seconds the switch (and a switch back) costs


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
            parts.append(f"unconfirmed slowdown of {name} ({status.slowdown:.2f}x)")
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
    regime_started_at: float | None = None,
    previous_models: Mapping[str, StepTimeModel] | None = None,
    detection_delay_s: float | None = None,
) -> RebalanceDecision:
    """Decide whether to move to new shares (same total), given the current shares and estimates.

    `regime_started_at`: onset of the current regime (None: now, no history); `previous_models`: the
    workers' models before the change points that made this regime (None or equal to `models`: none);
    `detection_delay_s`: how long the return of the old regime would take to notice.
    """
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
    if len({m.noise_cv for m in ordered}) == 1:  # equal noise: only unequal levels can make a gain
        statistic, critical = level_heterogeneity(models=ordered, shares=[current[n] for n in names])
        if statistic < critical:
            return hold(
                f"{numbers}, but the workers' step times differ no more than their estimates' noise "
                f"explains (chi-square {statistic:.1f} < {critical:.1f}, 99 %)"
            )
    if last_change_at is not None and now - last_change_at < settings.cooldown_seconds:
        left = settings.cooldown_seconds - (now - last_change_at)
        return hold(f"{numbers}, cooldown {left:.0f}s left of {settings.cooldown_seconds}s")
    value = switch_value(
        gain=gain,
        step_s=before,
        age_s=None if regime_started_at is None else max(0.0, now - regime_started_at),
        switch_cost_steps=settings.switch_cost_steps,
        revert_loss=_revert_loss(previous_models, models, names, current, proposed),
        detection_delay_s=detection_delay_s or 0.0,
    )
    base = replace(base, benefit_s=value.benefit_s, cost_s=value.cost_s)
    if value.benefit_s <= value.cost_s:
        return hold(f"{numbers}, not worth a switch: {value.describe()}")
    reason = (
        f"{numbers}, ≥ {settings.min_gain_percent}% and worth it ({value.describe()}): "
        f"{_format_changes(changes)}{suffix}"
    )
    return replace(base, apply=True, shares=proposed, reason=reason, event_reason=EVENT_REASON)


def level_heterogeneity(*, models: list[StepTimeModel], shares: list[int]) -> tuple[float, float]:
    """(statistic, 99 % critical value) of a chi-square test that the workers' step times at `shares` are
    equal: Σ((μ̂_m − μ̄)/se_m)² over n workers, against χ²(n − 1) at 0.99 (Wilson–Hilferty); each se from
    the fit's own (`StepTimeModel.relative_standard_error`). (0, 0) when no fit reports its steps."""
    levels = [m.mean(b) for m, b in zip(models, shares, strict=True)]
    errors = [m.relative_standard_error() * level for m, level in zip(models, levels, strict=True)]
    if len(models) < 2 or min(errors) <= 0.0:
        return 0.0, 0.0
    weights = [1.0 / (e * e) for e in errors]
    mean = sum(w * x for w, x in zip(weights, levels, strict=True)) / sum(weights)
    statistic = sum(w * (x - mean) ** 2 for w, x in zip(weights, levels, strict=True))
    return statistic, chi_square_quantile(len(models) - 1, _Z_99)


@dataclass(frozen=True, kw_only=True)
class SwitchValue:
    """Expected seconds saved by switching now vs what the switch costs (see the module docstring)."""

    remaining_s: float  # expected remaining duration of the regime (inf: no history, taken as lasting)
    benefit_s: float  # gain × remaining
    switches: int  # 1, or 2 when the regime may end and the shares must move back
    switch_s: float  # one switch, in seconds
    revert_s: float  # expected loss at the new shares after the regime ended, until that is detected

    @property
    def cost_s(self) -> float:
        return self.switches * self.switch_s + self.revert_s

    def describe(self) -> str:
        if math.isinf(self.remaining_s):
            return f"no regime history, the gain is taken as lasting; a switch costs {self.switch_s:.2f}s"
        text = (
            f"saves {self.benefit_s:.2f}s over the expected remaining {self.remaining_s:.1f}s of this regime "
            f"(its age so far) vs costs {self.cost_s:.2f}s: "
            f"{self.switches} switch(es) of {self.switch_s:.2f}s"
        )
        if self.revert_s > 0:
            text += f" + {self.revert_s:.2f}s at these shares after the regime ends, until that is detected"
        return text


def switch_value(
    *,
    gain: float,
    step_s: float,
    age_s: float | None,
    switch_cost_steps: float,
    revert_loss: float | None,
    detection_delay_s: float,
) -> SwitchValue:
    """Pure cost-benefit of one switch. `revert_loss`: the fraction of time lost running the new shares in
    the previous regime (None: the regime has no known predecessor, it is not expected to end soon).
    `age_s` None: no history at all, the regime is taken as lasting (the benefit is unbounded)."""
    remaining = math.inf if age_s is None else max(0.0, age_s)
    switches = 1 if revert_loss is None else 2
    revert = 0.0 if revert_loss is None else max(0.0, revert_loss) * max(0.0, detection_delay_s)
    return SwitchValue(
        remaining_s=remaining,
        benefit_s=math.inf if math.isinf(remaining) else max(0.0, gain) * remaining,
        switches=switches,
        switch_s=switch_cost_steps * step_s,
        revert_s=revert,
    )


def _revert_loss(
    previous: Mapping[str, StepTimeModel] | None,
    models: Mapping[str, StepTimeModel],
    names: list[str],
    current: Mapping[str, int],
    proposed: Mapping[str, int],
) -> float | None:
    """Fraction of time lost at `proposed` instead of `current` if the workers went back to `previous`."""
    if previous is None or all(previous.get(n, models[n]) == models[n] for n in names):
        return None
    old = [previous.get(n, models[n]) for n in names]
    at_new = expected_max_step_time(models=old, shares=[proposed[n] for n in names])
    at_current = expected_max_step_time(models=old, shares=[current[n] for n in names])
    return max(0.0, (at_new - at_current) / at_new) if at_new > 0 else 0.0
