"""The per-rank HTTP endpoint on loopback: status codes and bodies of /assignment, and /metrics exposition."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from paceline_worker.assignment_store import AssignmentStore
from paceline_worker.control_auth import ControlAuth
from paceline_worker.http_server import HttpEndpoint, assignment_routes, common_routes
from paceline_worker.wire import Assignment, authorization

TOKEN = "rank-token"


def _request(
    url: str, method: str = "GET", body: bytes | None = None, token: str | None = None
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url, data=body, method=method, headers=authorization(token) if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


def _serve(rank: int) -> Iterator[tuple[str, AssignmentStore]]:
    store = AssignmentStore(Assignment(version=1, batch_sizes=(4, 4)), rank=rank)
    registry = CollectorRegistry()
    Gauge("paceline_worker_example", "x", ["rank"], registry=registry).labels(rank=str(rank)).set(3)
    routes = {**common_routes(registry, lambda: {"step": 5}), **assignment_routes(store, lambda: {"step": 5})}
    server = HttpEndpoint(routes, host="127.0.0.1", port=0, auth=ControlAuth(TOKEN.encode())).start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}", store
    finally:
        server.stop()


@pytest.fixture
def rank0() -> Iterator[tuple[str, AssignmentStore]]:
    yield from _serve(0)


@pytest.fixture
def rank1() -> Iterator[tuple[str, AssignmentStore]]:
    yield from _serve(1)


def _put(base: str, payload: Any) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, kind, raw = _request(base + "/assignment", "PUT", body, token=TOKEN)
    assert kind == "application/json"
    return status, json.loads(raw)


def test_put_on_rank_zero_makes_a_newer_version_pending(rank0: tuple[str, AssignmentStore]) -> None:
    base, store = rank0
    status, body = _put(base, {"version": 2, "batchSizes": [3, 5], "learningRate": 0.01})
    assert status == 202 and body["pending"]["batchSizes"] == [3, 5]
    assert store.pending is not None and store.pending.version == 2
    status, _, raw = _request(base + "/assignment")
    view = json.loads(raw)
    assert status == 200 and view["current"]["version"] == 1 and view["pending"]["version"] == 2
    assert view["step"] == 5


def test_put_errors_are_explained(rank0: tuple[str, AssignmentStore]) -> None:
    base, _ = rank0
    assert _put(base, {"version": 1, "batchSizes": [3, 5]}) == (
        409,
        {
            "result": "stale",
            "message": "version 1 is not newer than version 1",
            "error": "version 1 is not newer than version 1",
        },
    )
    status, body = _put(base, b"{oops")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = _put(base, {"version": 2, "batchSizes": [8]})
    assert status == 400 and "2 worker pods" in body["error"]


def test_put_on_other_ranks_is_misdirected(rank1: tuple[str, AssignmentStore]) -> None:
    base, store = rank1
    status, body = _put(base, {"version": 2, "batchSizes": [3, 5]})
    assert status == 421 and "rank 0" in body["error"]
    assert store.pending is None


def test_metrics_and_unknown_paths(rank0: tuple[str, AssignmentStore]) -> None:
    base, _ = rank0
    status, kind, raw = _request(base + "/metrics")
    assert status == 200 and kind == "text/plain"
    (family,) = [
        f for f in text_string_to_metric_families(raw.decode()) if f.name == "paceline_worker_example"
    ]
    assert family.samples[0].value == 3
    assert _request(base + "/nothing")[0] == 404
    assert _request(base + "/metrics", "PUT", b"{}", token=TOKEN)[0] == 405
    assert _request(base + "/metrics", "PUT", b"{}")[0] == 401  # writes are checked before routing
    assert _request(base + "/healthz")[0] == 200
