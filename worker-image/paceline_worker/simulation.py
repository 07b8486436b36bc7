"""Simulated device speed (dev/test only; never used on real GPUs).

The local cluster runs every pod as a CPU process. To make heterogeneity real in time, the compute phase of
a step is padded with sleep so that it lasts  c * b_m * factor / speed  seconds, where c is a per-sample cost
(calibrated once, or PACELINE_SIM_SAMPLE_COST_S), b_m the rank's batch size, speed the fake device's relative
speed (PACELINE_SIM_SPEED) and factor a slow-down that the runtime may change at any time by rewriting the
JSON file PACELINE_SIM_SCHEDULE ({"factor": 3.0} = currently 3x slower). The same file may list random
per-step delays, {"randomDelays": [{"distribution": "exponential" | "gamma", "meanSeconds": 0.02,
"shape": 2.0}]} (the local cluster's `stragglers[].randomDelay`): each step then takes an extra delay drawn
from every listed distribution (gamma with the given shape and mean; exponential = gamma of shape 1), a
noisy, shared or throttled GPU.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RandomDelay:
    """An extra per-step delay drawn from a gamma distribution (shape 1 = exponential)."""

    mean_s: float
    shape: float = 1.0

    def sample(self, rng: random.Random) -> float:
        if self.mean_s <= 0:
            return 0.0
        return rng.gammavariate(self.shape, self.mean_s / self.shape)


def parse_random_delays(raw: Any) -> tuple[RandomDelay, ...]:
    """The schedule's "randomDelays" list; raises ValueError on an unknown distribution or bad numbers."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("randomDelays must be a list")
    delays = []
    for item in raw:
        distribution = item.get("distribution")
        mean = float(item.get("meanSeconds", 0.0))
        if distribution == "exponential":
            shape = 1.0
        elif distribution == "gamma":
            shape = float(item.get("shape", 2.0))
        else:
            raise ValueError(f"unknown delay distribution {distribution!r} (exponential or gamma)")
        if mean < 0 or not shape > 0:
            raise ValueError(f"need meanSeconds >= 0 and shape > 0, got {mean}, {shape}")
        delays.append(RandomDelay(mean_s=mean, shape=shape))
    return tuple(delays)


class SlowdownSchedule:
    """Reads {"factor": x, "randomDelays": [...]} from a file, re-read only when its mtime or size changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._factor = 1.0
        self._delays: tuple[RandomDelay, ...] = ()

    def factor(self) -> float:
        self._refresh()
        return self._factor

    def delays(self) -> tuple[RandomDelay, ...]:
        """The random per-step delays in force (read with the factor)."""
        return self._delays

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._factor, self._delays = None, 1.0, ()
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._factor, self._delays = self._read(self._path, self._factor, self._delays)

    @staticmethod
    def _read(
        path: Path, previous: float, previous_delays: tuple[RandomDelay, ...]
    ) -> tuple[float, tuple[RandomDelay, ...]]:
        try:
            data = json.loads(path.read_text())
            value = float(data["factor"])
            delays = parse_random_delays(data.get("randomDelays"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "ignoring unreadable slow-down schedule %s (%s); keeping factor %s", path, exc, previous
            )
            return previous, previous_delays
        if not value > 0:
            log.warning("ignoring non-positive slow-down factor %s in %s", value, path)
            return previous, delays
        return value, delays


def simulated_compute_seconds(*, sample_cost_s: float, batch_size: int, factor: float, speed: float) -> float:
    return sample_cost_s * batch_size * factor / speed


class SimulatedDevice:
    """Pads the real compute time of a step up to the simulated device's compute time (exponentially
    distributed with that mean when `exponential`, as asynchronous benchmarks want)."""

    def __init__(
        self,
        *,
        speed: float,
        schedule: SlowdownSchedule,
        sample_cost_s: float,
        exponential: bool = False,
        seed: int = 0,
    ) -> None:
        self.speed = speed
        self.schedule = schedule
        self.sample_cost_s = sample_cost_s
        self.exponential = exponential
        self.last_factor = 1.0
        self.last_delay = 0.0  # the random delay added to the last step
        self._rng = random.Random(seed)

    def pad(self, *, started_at: float, batch_size: int) -> float:
        """Sleep until the simulated compute time since `started_at` (perf_counter) is over; returns it."""
        self.last_factor = self.schedule.factor()
        target = simulated_compute_seconds(
            sample_cost_s=self.sample_cost_s, batch_size=batch_size, factor=self.last_factor, speed=self.speed
        )
        if self.exponential:
            target *= self._rng.expovariate(1.0)
        self.last_delay = sum(delay.sample(self._rng) for delay in self.schedule.delays())
        target += self.last_delay
        remaining = target - (time.perf_counter() - started_at)
        if remaining > 0:
            time.sleep(remaining)
            return remaining
        return 0.0
