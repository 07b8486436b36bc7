"""Change-point detection on each worker's step time: a two-sided CUSUM on the log residual.

Every observation (the mean of n steps at batch b) is compared with the worker's fitted model:

    r = log(t_obs / T(b))          the log residual
    s = sqrt(log(1 + cv²/n) · (1 + 1/d))
                                   its standard deviation under "no change": the estimator's per-step noise
                                   cv averaged over n steps, inflated for the fit's own uncertainty (d = the
                                   decayed number of observations behind it)
    z = r / s                      the residual in noise units

The detector is tuned to a relative change of at least ρ (`min_shift`, 20 % by default): in noise units the
shift is δ = log(1 + ρ)/s. Each side accumulates the log-likelihood ratio of "shifted by ±δ" against "no
change", δ·(±z − δ/2), in Page's CUSUM form S = max(0, S + increment). An alarm is raised when a sum exceeds
h = log(ARL₀), where ARL₀ is the tolerated number of observations between two false alarms (Lorden: the
average run length to a false alarm of this test is at least e^h). Consequences:

- **Noisier workers need more evidence.** s grows with cv, so δ and every increment shrink: a worker with
  cv 0.3 needs many windows to prove a 20 % shift that a quiet worker proves in two.
- **Single spikes never trigger.** One increment is capped at `spike_cap` × h (< h), so at least two
  observations are needed; after a spike an ordinary observation (|z| < δ/2) has a negative increment.
- **The onset is estimated**: the first observation after the alarming sum last stood at zero (the CUSUM
  maximum-likelihood change point). The tracker restarts the worker's estimator from there.

State per worker: `HEALTHY`, `TRANSIENT` (evidence of a slowdown is accumulating, nothing confirmed) and
`PERSISTENT` (a confirmed slowdown relative to the worker's healthy level, until a confirmed recovery, or
until it has lasted `rebaseline_after_s` and is accepted as the new normal).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from paceline.balancer.estimator import StepTimeModel

SECONDS_PER_DAY = 86_400.0


class StragglerState(enum.StrEnum):
    HEALTHY = "Healthy"
    TRANSIENT = "Transient"  # slower than its model now; not (yet) proven to be a change
    PERSISTENT = "Persistent"  # a confirmed slowdown


class Side(enum.StrEnum):
    UP = "up"  # slower
    DOWN = "down"  # faster


@dataclass(frozen=True, kw_only=True)
class StragglerConfig:
    """Detector settings (`spec.balancing`: minShiftPercent, falseAlarmDays)."""

    min_shift: float = 0.2  # ρ: the relative change in step time the test is tuned to
    false_alarm_days: float = 30.0  # expected time between two false alarms of one worker
    observation_interval_s: float = 2.0  # seconds between two observations (the scrape period)
    spike_cap: float = 0.6  # one observation adds at most this fraction of the threshold
    min_baseline_observations: int = 3  # no test before the fit has this many observations
    min_noise_terms: float = 4.0  # nor before the noise estimate has this many successive differences
    rebaseline_after_s: float = 900.0  # a slowdown this old is the new normal
    max_pending: int = 256  # evidence older than this many observations is ingested as ordinary

    def __post_init__(self) -> None:
        if not 0 < self.min_shift < 10:
            raise ValueError(f"min_shift must be in (0, 10), got {self.min_shift}")
        if self.false_alarm_days <= 0 or self.observation_interval_s <= 0:
            raise ValueError("false_alarm_days and observation_interval_s must be > 0")
        if not 0 < self.spike_cap < 1:
            raise ValueError(f"spike_cap must be in (0, 1), got {self.spike_cap}")
        if self.rebaseline_after_s < 0 or self.max_pending < 2:
            raise ValueError("need rebaseline_after_s >= 0 and max_pending >= 2")

    @property
    def threshold(self) -> float:
        return cusum_threshold(
            false_alarm_s=self.false_alarm_days * SECONDS_PER_DAY, interval_s=self.observation_interval_s
        )


def cusum_threshold(*, false_alarm_s: float, interval_s: float) -> float:
    """h = log(ARL₀) with ARL₀ = observations between false alarms (at least e: h ≥ 1)."""
    return math.log(max(math.e, false_alarm_s / interval_s))


def residual_sd(*, noise_cv: float, steps: int, fit_observations: float) -> float:
    """Log-space s.d. of one window mean of `steps` steps around a fit made of `fit_observations`."""
    per_window = math.log1p(noise_cv * noise_cv / max(1, steps))
    inflation = 1.0 + 1.0 / max(fit_observations, 1.0)
    return max(math.sqrt(per_window * inflation), 1e-6)


def shift_in_sd(*, min_shift: float, sd: float) -> float:
    """δ: the tuned relative shift ρ in units of the residual s.d."""
    return math.log1p(min_shift) / sd


def cusum_increments(*, z: float, delta: float, cap: float, margin: float = 0.0) -> tuple[float, float]:
    """Log-likelihood-ratio increments (up, down) of one standardised residual, each capped at `cap`.

    `margin` (noise units) widens the slack δ/2: the reference is itself an estimate, and its error is
    the same for every observation of the evidence, so it would accumulate like a small shift."""
    slack = 0.5 * delta + margin
    up = delta * (z - slack)
    down = delta * (-z - slack)
    return min(up, cap), min(down, cap)


def reference_margin(fit_observations: float) -> float:
    """Two standard errors of the fitted level, in noise units of one window: 2/√d."""
    return 2.0 / math.sqrt(max(fit_observations, 1.0))


def cusum_path(
    zs: Sequence[float], *, delta: float, threshold: float, spike_cap: float
) -> tuple[int | None, int | None]:
    """Run a fresh two-sided CUSUM over `zs`; (index of the first alarm, estimated onset index) or Nones.

    A pure reference for tests and docs: `StragglerDetector` does the same incrementally with a δ that
    follows the worker's noise.
    """
    up = down = 0.0
    up_start = down_start = 0
    for i, z in enumerate(zs):
        inc_up, inc_down = cusum_increments(z=z, delta=delta, cap=spike_cap * threshold)
        if up == 0.0:
            up_start = i
        if down == 0.0:
            down_start = i
        up, down = max(0.0, up + inc_up), max(0.0, down + inc_down)
        if up > threshold:
            return i, up_start
        if down > threshold:
            return i, down_start
    return None, None


@dataclass(frozen=True, kw_only=True)
class StragglerStatus:
    """What the operator reports for one worker (status and `StragglerDetected` events)."""

    state: StragglerState
    since: float | None = None  # onset of the current slowdown (or of the evidence, when transient)
    slowdown: float = 1.0  # step time ÷ healthy step time (1.0 when healthy)
    changes: int = 0  # change points confirmed so far
    transient_episodes: int = 0  # slow evidence that never became a change
    detection_delay_s: float | None = None  # alarm time − estimated onset, of the latest change point

    @property
    def is_straggler(self) -> bool:
        return self.state is StragglerState.PERSISTENT

    def describe(self, worker: str) -> str:
        if self.state is StragglerState.HEALTHY:
            return f"{worker} healthy"
        kind = self.state.value.lower()
        return f"{worker} {kind} straggler, {self.slowdown:.2f}x slower since t={self.since:.0f}s"


@dataclass(frozen=True, kw_only=True)
class ChangePoint:
    """A confirmed change of a worker's step-time level."""

    side: Side
    onset_index: int  # index into the evidence handed to `test` (observations since the sums were 0)
    onset: float  # timestamp of the first observation of the new regime
    detected_at: float
    log_shift: float  # mean log residual since the onset: the size of the change


@dataclass(kw_only=True)
class StragglerDetector:
    """Per-worker two-sided CUSUM; `test` is called for each observation before it is ingested."""

    config: StragglerConfig = field(default_factory=StragglerConfig)
    up: float = 0.0
    down: float = 0.0
    up_start: int = 0  # index into the pending evidence where the up sum last left zero
    down_start: int = 0
    residuals: list[float] = field(default_factory=list)  # log residuals of the pending evidence
    timestamps: list[float] = field(default_factory=list)
    log_slowdown: float = 0.0  # current level ÷ healthy level (log), summed over confirmed changes
    since: float | None = None  # onset of the current slowdown
    changes: int = 0
    transient_episodes: int = 0
    detection_delay_s: float | None = None
    last_z: float = 0.0
    slow_evidence: bool = False  # the up sum has been positive since the last flush
    healthy_since: float | None = None  # start of the current healthy stretch (the tracker sets the first)
    healthy_before_s: float = 0.0  # how long the worker had been healthy when its current slowdown began
    regime_onset: float | None = None  # onset of the current regime, a resumed healthy one counted whole

    @property
    def pending(self) -> int:
        return len(self.residuals)

    def status(self) -> StragglerStatus:
        if self.log_slowdown >= 0.5 * math.log1p(self.config.min_shift):
            state = StragglerState.PERSISTENT
            since, slowdown = self.since, math.exp(self.log_slowdown)
        elif self.up > 0.0 and self.last_z > 0.0:
            state = StragglerState.TRANSIENT
            since = self.timestamps[self.up_start] if self.up_start < len(self.timestamps) else None
            tail = self.residuals[self.up_start :]
            slowdown = math.exp(sum(tail) / len(tail)) if tail else 1.0
        else:
            state, since, slowdown = StragglerState.HEALTHY, None, 1.0
        return StragglerStatus(
            state=state,
            since=since,
            slowdown=slowdown,
            changes=self.changes,
            transient_episodes=self.transient_episodes,
            detection_delay_s=self.detection_delay_s,
        )

    def flush(self) -> None:
        """The evidence is over without a change (the tracker ingests it as ordinary observations)."""
        if self.slow_evidence:
            self.transient_episodes += 1
        self.slow_evidence = False
        self.up = self.down = 0.0
        self.up_start = self.down_start = 0
        self.residuals.clear()
        self.timestamps.clear()
        self.last_z = 0.0

    def drop_oldest(self) -> None:
        """The oldest pending observation leaves the evidence (it was ingested as ordinary)."""
        if not self.residuals:
            return
        self.residuals.pop(0)
        self.timestamps.pop(0)
        self.up_start = max(0, self.up_start - 1)
        self.down_start = max(0, self.down_start - 1)

    def test(
        self,
        *,
        seconds: float,
        steps: int,
        batch: int,
        timestamp: float,
        model: StepTimeModel,
        noise_cv: float | None = None,
    ) -> ChangePoint | None:
        """Add one observation to the evidence; a `ChangePoint` when a sum crosses the threshold.

        `noise_cv` overrides the model's (the tracker passes a cautious upper estimate)."""
        cfg = self.config
        self.expire(timestamp)
        residual = math.log(seconds / model.mean(batch))
        cv = model.noise_cv if noise_cv is None else noise_cv
        sd = residual_sd(noise_cv=cv, steps=steps, fit_observations=model.observations)
        z = residual / sd
        h = cfg.threshold
        inc_up, inc_down = cusum_increments(
            z=z,
            delta=shift_in_sd(min_shift=cfg.min_shift, sd=sd),
            cap=cfg.spike_cap * h,
            margin=reference_margin(model.observations),
        )
        if self.up == 0.0:
            self.up_start = self.pending
        if self.down == 0.0:
            self.down_start = self.pending
        self.residuals.append(residual)
        self.timestamps.append(timestamp)
        self.up, self.down = max(0.0, self.up + inc_up), max(0.0, self.down + inc_down)
        self.last_z = z
        self.slow_evidence = self.slow_evidence or self.up > 0.0
        side = Side.UP if self.up > h else Side.DOWN if self.down > h else None
        if side is None:
            return None
        start = self.up_start if side is Side.UP else self.down_start
        tail = self.residuals[start:]
        change = ChangePoint(
            side=side,
            onset_index=start,
            onset=self.timestamps[start],
            detected_at=timestamp,
            log_shift=sum(tail) / len(tail),
        )
        self._confirm(change)
        return change

    def _confirm(self, change: ChangePoint) -> None:
        was_slow = self.log_slowdown >= 0.5 * math.log1p(self.config.min_shift)
        self.log_slowdown = max(0.0, self.log_slowdown + change.log_shift)  # never faster than healthy
        self.regime_onset = change.onset
        if not was_slow and change.side is Side.UP:
            self.since = change.onset
            self.healthy_before_s = max(0.0, change.onset - (self.healthy_since or change.onset))
        if self.log_slowdown < 0.5 * math.log1p(self.config.min_shift):
            self.since = None
            if was_slow:  # back to its healthy level: the healthy regime resumes, with its earlier age
                self.regime_onset = change.onset - self.healthy_before_s
                self.healthy_since = self.regime_onset
        self.changes += 1
        self.detection_delay_s = change.detected_at - change.onset
        self.up = self.down = 0.0
        self.up_start = self.down_start = 0
        self.residuals.clear()
        self.timestamps.clear()
        self.last_z = 0.0
        self.slow_evidence = False

    def expire(self, now: float) -> None:
        """A slowdown that has lasted `rebaseline_after_s` becomes the worker's healthy level."""
        if self.since is not None and now - self.since >= self.config.rebaseline_after_s:
            self.log_slowdown = 0.0
            self.since = None

    @property
    def quiet(self) -> bool:
        """No evidence is accumulating: the pending observations can be ingested as ordinary."""
        return self.up == 0.0 and self.down == 0.0
