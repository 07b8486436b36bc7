"""Straggler classification: transient spikes vs persistent slowdowns of one worker.

Each observation's step time is compared with the worker's reference model (the live fit while healthy,
a snapshot taken at the start of a slow episode afterwards): ratio = t_obs / T_ref(b_obs).
An episode starts when ratio >= `enter_ratio`, continues while ratio >= `exit_ratio` (hysteresis) and
becomes *persistent* once it has lasted `min_persistence_s` and `min_observations`. An episode that ends
earlier was *transient*. A persistent episode that lasts `rebaseline_after_s` is accepted as the new
normal and the worker is healthy again (the balancer has already adapted to it).

Both edges of a persistent episode are change points for the worker's step-time model, confirmed with the
same rule: the onset once the episode becomes persistent, the recovery once the step time has been back
near the reference (ratio < `exit_ratio`, and not again >= `enter_ratio`) for `min_persistence_s` and
`min_observations`. A recovery that does not last is a transient too: the episode stays persistent.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from paceline.balancer.estimator import StepTimeModel


class StragglerState(enum.StrEnum):
    HEALTHY = "Healthy"
    TRANSIENT = "Transient"  # slow now, not (yet) for long enough to act on
    PERSISTENT = "Persistent"


class Verdict(enum.StrEnum):
    """What the tracker should do with the observation just classified."""

    ACCEPT = "accept"  # ingest it
    HOLD = "hold"  # quarantine it until the episode (or the recovery) is resolved
    RELEASE = "release"  # a change of regime is confirmed: refit from the held observations and this one
    DISCARD = "discard"  # the held observations were a transient: drop them, ingest this one


@dataclass(frozen=True, kw_only=True)
class StragglerConfig:
    enter_ratio: float = 1.2
    exit_ratio: float = 1.1
    min_persistence_s: float = 30.0
    min_observations: int = 2
    rebaseline_after_s: float = 900.0
    min_baseline_observations: int = 3  # no classification before the fit has this many observations
    max_held: int = 256  # an episode holding this many observations is treated as persistent

    def __post_init__(self) -> None:
        if not 1.0 <= self.exit_ratio <= self.enter_ratio:
            raise ValueError("need 1 <= exit_ratio <= enter_ratio")
        if self.min_persistence_s < 0 or self.rebaseline_after_s < self.min_persistence_s:
            raise ValueError("need 0 <= min_persistence_s <= rebaseline_after_s")


@dataclass(frozen=True, kw_only=True)
class StragglerStatus:
    """What the operator reports for one worker (status and `StragglerDetected` events)."""

    state: StragglerState
    since: float | None = None  # timestamp the current slow episode started
    slowdown: float = 1.0  # recent step time ÷ reference step time (1.0 when healthy)
    transient_episodes: int = 0  # slow episodes that ended before becoming persistent

    @property
    def is_straggler(self) -> bool:
        return self.state is StragglerState.PERSISTENT

    def describe(self, worker: str) -> str:
        if self.state is StragglerState.HEALTHY:
            return f"{worker} healthy"
        kind = self.state.value.lower()
        return f"{worker} {kind} straggler, {self.slowdown:.2f}x slower since t={self.since:.0f}s"


@dataclass(kw_only=True)
class StragglerDetector:
    """Per-worker state machine; `classify` is called before the observation is ingested."""

    config: StragglerConfig = field(default_factory=StragglerConfig)
    state: StragglerState = StragglerState.HEALTHY
    since: float | None = None
    episode_observations: int = 0
    log_slowdown: float = 0.0  # EWMA (alpha 0.5) of log ratio within the episode
    reference: StepTimeModel | None = None  # snapshot at episode start
    transient_episodes: int = 0
    recovering_since: float | None = None  # persistent episode: first observation back near the reference
    recovery_observations: int = 0

    def status(self) -> StragglerStatus:
        slowdown = math.exp(self.log_slowdown) if self.state is not StragglerState.HEALTHY else 1.0
        return StragglerStatus(
            state=self.state, since=self.since, slowdown=slowdown, transient_episodes=self.transient_episodes
        )

    def _end_episode(self) -> None:
        self.state = StragglerState.HEALTHY
        self.since = None
        self.episode_observations = 0
        self.log_slowdown = 0.0
        self.reference = None
        self._end_recovery()

    def _end_recovery(self) -> None:
        self.recovering_since = None
        self.recovery_observations = 0

    def classify(
        self,
        *,
        batch: int,
        seconds: float,
        timestamp: float,
        live: StepTimeModel | None,
        live_count: int,
        batch_changed: bool,
    ) -> Verdict:
        """Classify one observation against the live fit (`live_count` = observations behind it)."""
        cfg = self.config
        if self.state is StragglerState.HEALTHY:
            if live is None or batch_changed or live_count < cfg.min_baseline_observations:
                return Verdict.ACCEPT
            ratio = seconds / live.mean(batch)
            if ratio < cfg.enter_ratio:
                return Verdict.ACCEPT
            self.state = StragglerState.TRANSIENT
            self.since = timestamp
            self.episode_observations = 1
            self.log_slowdown = math.log(ratio)
            self.reference = live
            return Verdict.HOLD
        assert self.reference is not None and self.since is not None
        ratio = seconds / self.reference.mean(batch)
        if self.state is StragglerState.PERSISTENT:
            return self._classify_persistent(ratio, timestamp)
        if ratio < cfg.exit_ratio:
            self._end_episode()
            self.transient_episodes += 1
            return Verdict.DISCARD
        self.episode_observations += 1
        self.log_slowdown = 0.5 * self.log_slowdown + 0.5 * math.log(ratio)
        elapsed = timestamp - self.since
        long_enough = elapsed >= cfg.min_persistence_s and self.episode_observations >= cfg.min_observations
        if long_enough or self.episode_observations >= cfg.max_held:
            self.state = StragglerState.PERSISTENT
            return Verdict.RELEASE
        return Verdict.HOLD

    def _classify_persistent(self, ratio: float, timestamp: float) -> Verdict:
        """Persistent episode: watch for a recovery, confirmed like an onset (hysteresis, persistence)."""
        cfg = self.config
        recovering = self.recovering_since is not None
        if ratio < cfg.exit_ratio or (recovering and ratio < cfg.enter_ratio):
            if self.recovering_since is None:
                self.recovering_since = timestamp
            self.recovery_observations += 1
            lasted = timestamp - self.recovering_since >= cfg.min_persistence_s
            if (lasted and self.recovery_observations >= cfg.min_observations) or (
                self.recovery_observations >= cfg.max_held
            ):
                self._end_episode()
                return Verdict.RELEASE
            return Verdict.HOLD
        verdict = Verdict.DISCARD if recovering else Verdict.ACCEPT  # a recovery that did not last
        self._end_recovery()
        self.episode_observations += 1
        self.log_slowdown = 0.5 * self.log_slowdown + 0.5 * math.log(ratio)
        assert self.since is not None
        if timestamp - self.since >= cfg.rebaseline_after_s:
            self._end_episode()
        return verdict
