"""The learners' buffers (pure, not thread-safe: the learner holds the lock).

`SegmentBuffer` (on-policy, PPO): whole trajectory batches, kept while they are within maxPolicyLag; a relaxed
learner trains on the newest of them again and again, a strict one takes each fresh batch once.
`ReplayBuffer` (off-policy, DQN): a ring of transitions with the policy version that produced each one.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from .lag import LagHistogram, is_stale, policy_lag
from .segment import Segment


class SegmentBuffer:
    def __init__(self, *, max_lag: int, capacity_samples: int) -> None:
        self.max_lag = max_lag
        self.capacity_samples = capacity_samples
        self._segments: deque[Segment] = deque()  # oldest first

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self._segments)

    def add(self, segment: Segment) -> int:
        """Append; evicts the oldest batches beyond the capacity and returns how many samples that evicted."""
        self._segments.append(segment)
        evicted = 0
        while len(self._segments) > 1 and self.samples > self.capacity_samples:
            evicted += self._segments.popleft().samples
        return evicted

    def drop_stale(self, learner_version: int, lags: LagHistogram) -> int:
        """Apply the drop rule; dropped samples are counted in `lags` and returned."""
        kept = [
            s
            for s in self._segments
            if not is_stale(
                learner_version=learner_version, behaviour_version=s.version, max_lag=self.max_lag
            )
        ]
        dropped = self.samples - sum(s.samples for s in kept)
        self._segments = deque(kept)
        lags.drop(dropped)
        return dropped

    def newest(self, learner_version: int, *, limit_samples: int) -> list[Segment]:
        """Newest usable batches first, up to `limit_samples` (at least one batch when any is usable)."""
        chosen: list[Segment] = []
        total = 0
        for segment in sorted(self._segments, key=lambda s: s.version, reverse=True):
            if is_stale(
                learner_version=learner_version, behaviour_version=segment.version, max_lag=self.max_lag
            ):
                continue
            if chosen and total + segment.samples > limit_samples:
                break
            chosen.append(segment)
            total += segment.samples
        return chosen

    def fresh_samples(self, version: int) -> int:
        return sum(s.samples for s in self._segments if s.version == version)

    def fresh_actors(self, version: int) -> frozenset[int]:
        """Actors with a batch produced by exactly `version` (a strict round needs one from each)."""
        return frozenset(s.actor for s in self._segments if s.version == version)

    def take_fresh(self, version: int) -> list[Segment]:
        """Remove and return the batches produced by exactly `version` (the strict learner's round)."""
        fresh = [s for s in self._segments if s.version == version]
        self._segments = deque(s for s in self._segments if s.version != version)
        return fresh


def observe_lags(segments: list[Segment], learner_version: int, lags: LagHistogram) -> None:
    for segment in segments:
        lag = policy_lag(learner_version=learner_version, behaviour_version=segment.version)
        lags.observe(lag, segment.samples)


class ReplayBuffer:
    """A ring of transitions (obs, action, reward, next obs, done, version)."""

    def __init__(self, *, capacity: int, obs_dim: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)  # terminated (not truncated): no bootstrap
        self.versions = np.zeros(capacity, np.int64)
        self.size = 0
        self._next = 0

    def add(self, segment: Segment) -> None:
        n = segment.samples
        dim = self.obs.shape[1]
        rows = (self._next + np.arange(n)) % self.capacity
        self.obs[rows] = segment.obs.reshape(n, dim)
        self.next_obs[rows] = segment.next_obs.reshape(n, dim)
        self.actions[rows] = segment.actions.reshape(n)
        self.rewards[rows] = segment.rewards.reshape(n)
        self.dones[rows] = segment.terminated.reshape(n)
        self.versions[rows] = segment.version
        self._next = int((self._next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(
        self, rng: np.random.Generator, batch: int, *, learner_version: int, max_lag: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
        """Draw `batch` rows; returns the usable ones (within max_lag), their lags, and the dropped count."""
        rows = rng.integers(0, self.size, size=batch)
        lags = np.maximum(0, learner_version - self.versions[rows])
        usable = lags <= max_lag
        return rows[usable], lags[usable], int((~usable).sum())
