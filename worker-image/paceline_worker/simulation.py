"""Simulated device speed (dev/test only; never used on real GPUs).

The local cluster runs every pod as a CPU process. To make heterogeneity real in time, the compute phase of
a step is padded with sleep so that it lasts  c * b_m * factor / speed  seconds, where c is a per-sample cost
(calibrated once, or PACELINE_SIM_SAMPLE_COST_S), b_m the rank's batch size, speed the fake device's relative
speed (PACELINE_SIM_SPEED) and factor a slow-down that the runtime may change at any time by rewriting the
JSON file PACELINE_SIM_SCHEDULE ({"factor": 3.0} = currently 3x slower).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

log = logging.getLogger(__name__)


class SlowdownSchedule:
    """Reads {"factor": x} from a file, re-reading only when its mtime or size changes."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._factor = 1.0

    def factor(self) -> float:
        if self._path is None:
            return 1.0
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._factor = None, 1.0
            return self._factor
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._factor = self._read(self._path, self._factor)
        return self._factor

    @staticmethod
    def _read(path: Path, previous: float) -> float:
        try:
            value = float(json.loads(path.read_text())["factor"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "ignoring unreadable slow-down schedule %s (%s); keeping factor %s", path, exc, previous
            )
            return previous
        if not value > 0:
            log.warning("ignoring non-positive slow-down factor %s in %s", value, path)
            return previous
        return value


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
        self._rng = random.Random(seed)

    def pad(self, *, started_at: float, batch_size: int) -> float:
        """Sleep until the simulated compute time since `started_at` (perf_counter) is over; returns it."""
        self.last_factor = self.schedule.factor()
        target = simulated_compute_seconds(
            sample_cost_s=self.sample_cost_s, batch_size=batch_size, factor=self.last_factor, speed=self.speed
        )
        if self.exponential:
            target *= self._rng.expovariate(1.0)
        remaining = target - (time.perf_counter() - started_at)
        if remaining > 0:
            time.sleep(remaining)
            return remaining
        return 0.0
