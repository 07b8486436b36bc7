"""A live 2-rank job: assignments PUT to rank 0 over HTTP switch all ranks at the same step, change lr and
momentum in the optimiser, keep every sample exactly once per epoch and show in /metrics; SIGTERM stops
cleanly."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

SAMPLES = 53  # not a multiple of any global batch: every epoch ends with a partial step
GLOBAL_BATCH = 8
START: dict[str, Any] = {"version": 1, "batchSizes": [4, 4], "learningRate": None, "momentum": None}
UPDATES: list[dict[str, Any]] = [
    {"version": 2, "batchSizes": [2, 6], "learningRate": 0.05, "momentum": 0.5},
    {"version": 3, "batchSizes": [7, 1], "learningRate": None, "momentum": 0.9},
    {"version": 4, "batchSizes": [5, 3], "learningRate": 0.02, "momentum": None},
]


@dataclass
class LiveRun:
    responses: dict[str, tuple[int, Any]]
    metrics: list[dict[str, Any]]
    assignment_views: list[Any]
    exit_codes: list[int]
    results: list[dict[str, Any]]


def _wait_for_version(group: Any, version: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(group.http("GET", rank, "/assignment")[1]["current"]["version"] == version for rank in (0, 1)):
            return
        time.sleep(0.05)
    raise AssertionError(f"version {version} was not applied within {timeout}s\n{group.logs()}")


def _metric_samples(text: str) -> dict[str, Any]:
    samples: dict[str, Any] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return dict(samples)


@pytest.fixture(scope="module")
def live_run(module_launch: Any) -> LiveRun:
    group = module_launch(
        "live",
        assignment=START,
        args=["--samples", str(SAMPLES), "--max-steps", "3000", "--lr", "0.1", "--momentum", "0.0"],
        env={"PACELINE_SIM_SPEED": "1", "PACELINE_SIM_SAMPLE_COST_S": "0.003"},  # steps of ~25 ms
    )
    responses: dict[str, tuple[int, Any]] = {
        "to rank 1": group.http("PUT", 1, "/assignment", UPDATES[0]),
        "bad json": group.http("PUT", 0, "/assignment", "{not json"),
        "wrong length": group.http("PUT", 0, "/assignment", {"version": 9, "batchSizes": [8]}),
        "changed global batch": group.http("PUT", 0, "/assignment", {"version": 9, "batchSizes": [4, 5]}),
        "stale": group.http("PUT", 0, "/assignment", {"version": 1, "batchSizes": [3, 5]}),
    }
    for update in UPDATES:
        responses[f"v{update['version']}"] = group.http("PUT", 0, "/assignment", update)
        responses[f"v{update['version']} again"] = group.http("PUT", 0, "/assignment", update)
        _wait_for_version(group, update["version"])
        time.sleep(0.3)  # let a few epochs pass under this split
    metrics = [_metric_samples(group.http("GET", rank, "/metrics")[1]) for rank in (0, 1)]
    views = [group.http("GET", rank, "/assignment")[1] for rank in (0, 1)]
    group.signal(0, signal.SIGTERM)
    codes = group.wait()
    return LiveRun(responses, metrics, views, codes, [group.result(0), group.result(1)])


@pytest.mark.integration
def test_put_assignment_status_codes(live_run: LiveRun) -> None:
    status = {name: response[0] for name, response in live_run.responses.items()}
    assert status == {
        "to rank 1": 421,
        "bad json": 400,
        "wrong length": 400,
        "changed global batch": 400,
        "stale": 409,
        "v2": 202,
        "v2 again": 409,
        "v3": 202,
        "v3 again": 409,
        "v4": 202,
        "v4 again": 409,
    }
    assert "rank 0" in live_run.responses["to rank 1"][1]["error"]
    assert "2 worker pods" in live_run.responses["wrong length"][1]["error"]


@pytest.mark.integration
def test_sigterm_to_one_rank_stops_all_ranks_cleanly_at_the_same_step(live_run: LiveRun) -> None:
    assert live_run.exit_codes == [0, 0]
    assert [r["stoppedBySignal"] for r in live_run.results] == [True, True]
    assert live_run.results[0]["finalStep"] == live_run.results[1]["finalStep"] < 3000


@pytest.mark.integration
def test_all_ranks_switch_version_at_the_same_step(live_run: LiveRun) -> None:
    first_step = [
        {r["version"]: r["step"] for r in reversed(result["records"])} for result in live_run.results
    ]
    assert sorted(first_step[0]) == [1, 2, 3, 4]
    assert first_step[0] == first_step[1]
    histories = [[(h["version"], h["step"]) for h in result["history"]] for result in live_run.results]
    assert histories[0] == histories[1] == [(v, first_step[0][v]) for v in (2, 3, 4)]
    received = [h["receivedAt"] for h in live_run.results[0]["history"]]
    assert all(t is not None for t in received), "rank 0 records when each version arrived"
    for rank, result in enumerate(live_run.results):
        sizes = {u["version"]: u["batchSizes"][rank] for u in [START, *UPDATES]}
        for record in result["records"]:
            if record["globalBatchSize"] == GLOBAL_BATCH:
                assert len(record["indices"]) == sizes[record["version"]], record


@pytest.mark.integration
def test_learning_rate_and_momentum_change_in_the_optimizer_at_the_switch(live_run: LiveRun) -> None:
    expected = {1: (0.1, 0.0), 2: (0.05, 0.5), 3: (0.05, 0.9), 4: (0.02, 0.9)}  # null keeps the value
    for result in live_run.results:
        seen = {(r["version"], r["lr"], r["momentum"]) for r in result["records"]}
        assert seen == {(version, lr, momentum) for version, (lr, momentum) in expected.items()}


@pytest.mark.integration
def test_every_sample_exactly_once_per_epoch_across_share_changes(live_run: LiveRun) -> None:
    records = [result["records"] for result in live_run.results]
    last_complete_epoch = records[0][-1]["epoch"] - 1
    assert last_complete_epoch >= 3
    versions_per_epoch: dict[int, set[int]] = defaultdict(set)
    seen: dict[int, list[int]] = defaultdict(list)
    for rank_records in records:
        for record in rank_records:
            seen[record["epoch"]].extend(record["indices"])
            versions_per_epoch[record["epoch"]].add(record["version"])
    for epoch in range(last_complete_epoch + 1):
        assert sorted(seen[epoch]) == list(range(SAMPLES)), f"epoch {epoch}"
    switching_epochs = [e for e in range(last_complete_epoch + 1) if len(versions_per_epoch[e]) > 1]
    assert switching_epochs, "no epoch contained a share change; the check above proved nothing"


@pytest.mark.integration
def test_metrics_are_scraped_over_http(live_run: LiveRun) -> None:
    for rank, samples in enumerate(live_run.metrics):
        labels = {"rank": str(rank), "trainingjob": "itest"}
        assert samples["paceline_worker_assignment_version"] == [(labels, 4.0)]
        assert samples["paceline_worker_batch_size"] == [(labels, float(UPDATES[-1]["batchSizes"][rank]))]
        assert samples["paceline_worker_global_batch_size"] == [(labels, float(GLOBAL_BATCH))]
        ((_, steps),) = samples["paceline_worker_steps_total"]
        ((_, samples_done),) = samples["paceline_worker_samples_total"]
        assert steps > 10 and samples_done > 10
        phases = {lab["phase"] for lab, _ in samples["paceline_worker_phase_seconds_count"]}
        assert phases == {"data", "compute", "communication"}
        assert all(count == steps for _, count in samples["paceline_worker_phase_seconds_count"])
        assert samples["paceline_worker_samples_per_second"][0][1] > 0
        assert samples["paceline_worker_assignment_applied_step"][0][1] == float(
            live_run.results[rank]["history"][-1]["step"]
        )
        assert not [name for name in samples if "gpu" in name], "no GPU here: GPU metrics must be absent"
    view = live_run.assignment_views[0]
    assert view["current"]["version"] == 4 and view["pending"] is None and view["worldSize"] == 2
