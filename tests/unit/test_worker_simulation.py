"""Dev-only device-speed simulation: the slow-down schedule file and the compute padding."""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path

import pytest

from paceline_worker.simulation import (
    RandomDelay,
    SimulatedDevice,
    SlowdownSchedule,
    parse_random_delays,
    simulated_compute_seconds,
)


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_schedule_is_reread_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    schedule = SlowdownSchedule(path)
    assert schedule.factor() == 1.0, "no file yet: full speed"
    _write(path, '{"factor": 3.0}', 1_000_000_000)
    assert schedule.factor() == 3.0
    path.write_text('{"factor": 5.0}')  # same size, mtime forced back: treated as unchanged
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert schedule.factor() == 3.0
    _write(path, '{"factor": 0.5}', 2_000_000_000)
    assert schedule.factor() == 0.5
    _write(path, "not json", 3_000_000_000)
    assert schedule.factor() == 0.5, "a half-written file keeps the last factor"
    path.unlink()
    assert schedule.factor() == 1.0
    assert SlowdownSchedule(None).factor() == 1.0


def test_simulated_time_scales_with_batch_factor_and_speed() -> None:
    base = simulated_compute_seconds(sample_cost_s=0.01, batch_size=8, factor=1.0, speed=1.0)
    assert base == 0.08
    assert simulated_compute_seconds(sample_cost_s=0.01, batch_size=8, factor=3.0, speed=2.0) == 0.12


def test_pad_sleeps_the_remainder_after_real_compute() -> None:
    device = SimulatedDevice(speed=2.0, schedule=SlowdownSchedule(None), sample_cost_s=0.01)
    started = time.perf_counter()
    slept = device.pad(started_at=started, batch_size=10)  # 0.05 s simulated
    assert time.perf_counter() - started >= 0.05 and 0 < slept <= 0.05
    assert device.pad(started_at=time.perf_counter() - 1.0, batch_size=10) == 0.0, (
        "already slower than simulated"
    )


def test_random_delays_are_read_from_the_schedule_and_drawn_per_step(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    _write(
        path,
        json.dumps(
            {
                "factor": 1.0,
                "randomDelays": [
                    {"distribution": "gamma", "meanSeconds": 0.02, "shape": 4.0},
                    {"distribution": "exponential", "meanSeconds": 0.01, "shape": 2.0},
                ],
            }
        ),
        1_000_000_000,
    )
    schedule = SlowdownSchedule(path)
    assert schedule.factor() == 1.0
    assert schedule.delays() == (RandomDelay(mean_s=0.02, shape=4.0), RandomDelay(mean_s=0.01, shape=1.0))
    rng = random.Random(3)
    draws = [schedule.delays()[0].sample(rng) for _ in range(20_000)]
    mean = statistics.fmean(draws)
    assert mean == pytest.approx(0.02, rel=0.03)
    assert statistics.pstdev(draws) / mean == pytest.approx(0.5, rel=0.05), "gamma shape 4: cv 1/2"
    expo = [schedule.delays()[1].sample(rng) for _ in range(20_000)]
    assert statistics.pstdev(expo) / statistics.fmean(expo) == pytest.approx(1.0, rel=0.05)


def test_pad_adds_the_random_delay(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    _write(
        path, '{"factor": 1.0, "randomDelays": [{"distribution": "exponential", "meanSeconds": 0.01}]}', 10
    )
    device = SimulatedDevice(speed=1.0, schedule=SlowdownSchedule(path), sample_cost_s=0.0)
    started = time.perf_counter()
    device.pad(started_at=started, batch_size=1)
    assert device.last_delay > 0
    assert time.perf_counter() - started >= device.last_delay


def test_unknown_delay_distributions_are_rejected() -> None:
    with pytest.raises(ValueError):
        parse_random_delays([{"distribution": "uniform", "meanSeconds": 1}])
