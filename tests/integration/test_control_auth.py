"""Authenticated control against live worker processes: a 2-rank job's rank 0 refuses an assignment PUT
without the job's token (401) and with another token (403), counts each refusal on /metrics (which stays
open), and applies the same assignment once it bears the token. A rank started without a token file refuses
every write and says so in its log."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paceline.adapters.workers import put_json

START = {"version": 1, "batchSizes": [3, 5], "learningRate": None, "momentum": None}
NEWER = '{"version": 2, "batchSizes": [6, 2], "learningRate": null, "momentum": null}'
ARGS = ["--samples", "64", "--max-steps", "20000", "--lr", "0.1", "--momentum", "0.0"]
SLOW = {"PACELINE_SIM_SPEED": "1", "PACELINE_SIM_SAMPLE_COST_S": "0.002"}  # steps of ~10-20 ms


def _refused(group: Any) -> dict[str, float]:
    status, text = group.http("GET", 0, "/metrics", token=None)
    assert status == 200
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "paceline_worker_refused_writes"
    ]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def _assignment(group: Any) -> dict[str, Any]:
    status, view = group.http("GET", 0, "/assignment", token=None)  # reads need no token
    assert status == 200
    return dict(view)


@pytest.mark.integration
def test_rank_zero_takes_assignments_only_with_the_jobs_token(launch: Any) -> None:
    group = launch("auth", assignment=START, args=ARGS, env=SLOW)
    url = group.url(0, "/assignment")
    assert _refused(group) == {"missing": 0, "wrong": 0, "unconfigured": 0}

    status, body = group.http("PUT", 0, "/assignment", NEWER, token=None)
    assert status == 401 and body["reason"] == "missing"
    assert put_json(url, NEWER, token="a-guess") == 403
    assert put_json(url, NEWER, token=group.token + "x") == 403
    view = _assignment(group)
    assert view["current"]["version"] == 1 and view["pending"] is None  # nothing refused changed anything
    assert _refused(group) == {"missing": 1, "wrong": 2, "unconfigured": 0}

    assert put_json(url, NEWER, token=group.token) == 202
    deadline = time.monotonic() + 120
    while _assignment(group)["current"]["version"] != 2:
        assert time.monotonic() < deadline, f"version 2 never applied\n{group.logs()}"
        time.sleep(0.1)
    assert _assignment(group)["current"]["batchSizes"] == [6, 2]
    assert _refused(group) == {"missing": 1, "wrong": 2, "unconfigured": 0}


@pytest.mark.integration
def test_a_rank_without_a_token_file_refuses_every_write(launch: Any) -> None:
    group = launch(
        "no-token", assignment=START, args=ARGS, env={**SLOW, "PACELINE_TOKEN_FILE": "/nonexistent"}
    )
    url = group.url(0, "/assignment")
    assert put_json(url, NEWER, token=group.token) == 403
    assert group.http("PUT", 0, "/assignment", NEWER, token=None)[0] == 401
    assert _refused(group) == {"missing": 1, "wrong": 0, "unconfigured": 1}
    assert _assignment(group)["pending"] is None
    assert "has no control token" in group.logs() and "refuses every control write" in group.logs()
