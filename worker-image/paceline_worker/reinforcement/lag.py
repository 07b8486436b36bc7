"""Policy lag: how many parameter versions the policy that produced a sample is behind the learner's.

The drop rule: a sample whose lag exceeds maxPolicyLag is not trained on (PPO's ratio against the behaviour
policy's log-probability corrects the lag that is left; the bound keeps that correction small).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXACT_UP_TO = 8  # status lists lags up to this one by one, larger ones in power-of-two ranges


def policy_lag(*, learner_version: int, behaviour_version: int) -> int:
    """Versions between the sample's policy and the learner's (never negative: a resumed learner may restart
    its count below an actor's last version, and such samples are treated as fresh)."""
    return max(0, learner_version - behaviour_version)


def is_stale(*, learner_version: int, behaviour_version: int, max_lag: int) -> bool:
    """The drop rule."""
    return policy_lag(learner_version=learner_version, behaviour_version=behaviour_version) > max_lag


@dataclass
class LagHistogram:
    """Samples trained on, per policy lag, and samples dropped by the drop rule."""

    counts: dict[int, int] = field(default_factory=dict)
    dropped: int = 0

    def observe(self, lag: int, samples: int) -> None:
        if samples > 0:
            self.counts[lag] = self.counts.get(lag, 0) + samples

    def drop(self, samples: int) -> None:
        self.dropped += samples

    @property
    def samples(self) -> int:
        return sum(self.counts.values())

    @property
    def mean(self) -> float:
        total = self.samples
        return sum(lag * n for lag, n in self.counts.items()) / total if total else 0.0

    def quantile(self, q: float) -> int:
        """The smallest lag with at least a fraction q of the samples at or below it (0 when empty)."""
        total, seen = self.samples, 0
        for lag in sorted(self.counts):
            seen += self.counts[lag]
            if total and seen >= q * total:
                return lag
        return 0

    def bucketed(self) -> dict[str, int]:
        """Sample counts per lag: exact up to 8, then in power-of-two ranges ("9-16", "17-32", ...)."""
        out: dict[str, int] = {}
        for lag, n in sorted(self.counts.items()):
            if lag <= EXACT_UP_TO:
                key = str(lag)
            else:
                high = 1 << (lag - 1).bit_length()
                key = f"{high // 2 + 1}-{high}"
            out[key] = out.get(key, 0) + n
        return out

    def to_json_dict(self) -> dict[str, object]:
        return {
            "counts": self.bucketed(),
            "mean": round(self.mean, 4),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "max": max(self.counts, default=0),
            "droppedSamples": self.dropped,
        }
