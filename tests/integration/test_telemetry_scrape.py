"""The operator's telemetry against a real 2-rank worker job on loopback: scrape /metrics over HTTP, feed the
control loop, PUT a new assignment to rank 0 and see both ranks switch."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from paceline.adapters.workers import put_json, scrape_all
from paceline.api import parse_balancing
from paceline.controller.rebalance import JobControl, control_step
from paceline.controller.samples import WorkerSample
from paceline_worker.wire import Assignment

START = {"version": 1, "batchSizes": [3, 5], "learningRate": None, "momentum": None}


def _scrape_until(
    urls: dict[int, str], done: Callable[[dict[int, WorkerSample]], bool], what: str, group: Any
) -> dict[int, WorkerSample]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = scrape_all(urls)
        if len(samples) == len(urls) and done(samples):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{group.logs()}")


@pytest.mark.integration
def test_scrape_control_and_push_against_a_live_job(launch: Any) -> None:
    group = launch(
        "telemetry",
        assignment=START,
        args=["--samples", "64", "--max-steps", "20000", "--lr", "0.1", "--momentum", "0.0"],
        env={"PACELINE_SIM_SPEED": "1", "PACELINE_SIM_SAMPLE_COST_S": "0.002"},  # steps of ~10-20 ms
    )
    urls = {rank: group.url(rank, "/metrics") for rank in (0, 1)}
    first = _scrape_until(urls, lambda s: all(x.steps_total >= 3 for x in s.values()), "first steps", group)
    for rank, sample in first.items():
        assert (sample.rank, sample.job) == (rank, "itest")
        assert (sample.batch_size, sample.global_batch_size) == ([3, 5][rank], 8)
        assert sample.assignment_version == 1
        assert sample.samples_total >= 3 * sample.batch_size
        assert sample.compute_seconds > 0 and sample.step_seconds >= sample.compute_seconds
        assert sample.simulated_slowdown_factor == 1.0

    assignment = Assignment(version=1, batch_sizes=(3, 5), learning_rate=0.1, momentum=0.0)
    settings = parse_balancing({})
    state = JobControl.create(settings)
    for _ in range(4):
        time.sleep(0.3)
        samples = scrape_all(urls)
        outcome = control_step(
            state=state, samples=samples, assignment=assignment, settings=settings, now=time.time()
        )
    assert state.observations >= 4, "windows of real counters reached the estimator"
    assert sorted(outcome.worker_stats) == [0, 1] and float(outcome.throughput["samplesPerSecond"]) > 0
    assert not outcome.needs_push

    newer = Assignment(version=2, batch_sizes=(6, 2), learning_rate=0.1, momentum=0.0)
    rank0 = group.url(0, "/assignment")
    assert put_json(rank0, newer.to_json(), token="not-the-jobs-token") == 403
    assert put_json(rank0, newer.to_json(), token=group.token) == 202
    assert put_json(rank0, newer.to_json(), token=group.token) == 409
    switched = _scrape_until(
        urls, lambda s: all(x.assignment_version == 2 for x in s.values()), "version 2 on both ranks", group
    )
    assert [switched[r].batch_size for r in (0, 1)] == [6, 2]
    assert all(switched[r].steps_total > first[r].steps_total for r in (0, 1))
    # the ConfigMap's version is ahead of what rank 0 runs → level-based re-push
    ahead = Assignment(version=3, batch_sizes=(4, 4), learning_rate=0.1, momentum=0.0)
    outcome = control_step(
        state=state, samples=switched, assignment=ahead, settings=settings, now=time.time()
    )
    assert outcome.needs_push and outcome.push == ahead

    group.signal(0, signal.SIGTERM)
    assert group.wait(timeout=30) == [0, 0]
