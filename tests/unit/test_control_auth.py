"""Authenticated control on the worker side: the pure check, the token file, and a real endpoint that refuses
writes without the job's token (401), with another token (403) or without a token of its own (403), counts
each refusal, and keeps reads open."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paceline_worker.assignment_store import AssignmentStore
from paceline_worker.control_auth import ControlAuth, Refusal, authorize, bearer_token, read_token
from paceline_worker.http_server import HttpEndpoint, assignment_routes, common_routes
from paceline_worker.metrics import WorkerMetrics
from paceline_worker.wire import Assignment, Env, authorization

TOKEN = b"the-jobs-token"


@pytest.mark.parametrize("method", ["GET", "HEAD", "get"])
def test_reads_need_no_token(method: str) -> None:
    assert authorize(method, None, TOKEN) is None
    assert authorize(method, None, None) is None


@pytest.mark.parametrize(
    ("header", "token", "refusal"),
    [
        (None, TOKEN, Refusal.MISSING),
        ("", TOKEN, Refusal.MISSING),
        ("Bearer", TOKEN, Refusal.MISSING),
        ("Basic dXNlcjpwdw==", TOKEN, Refusal.MISSING),
        ("Bearer the-jobs-toke", TOKEN, Refusal.WRONG),
        ("Bearer the-jobs-token2", TOKEN, Refusal.WRONG),
        ("Bearer the-jobs-token", None, Refusal.UNCONFIGURED),
        ("Bearer the-jobs-token", b"", Refusal.UNCONFIGURED),
        (None, None, Refusal.MISSING),
        ("Bearer the-jobs-token", TOKEN, None),
        ("bearer  the-jobs-token ", TOKEN, None),
    ],
)
def test_writes_need_the_jobs_token(header: str | None, token: bytes | None, refusal: Refusal | None) -> None:
    for method in ("PUT", "POST", "DELETE"):
        assert authorize(method, header, token) is refusal


def test_refusals_map_to_401_and_403() -> None:
    assert [r.status for r in Refusal] == [401, 403, 403]
    assert bearer_token(authorization("abc")["Authorization"]) == "abc"


def test_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    assert read_token(None) is None and read_token(str(path)) is None  # unset, missing
    path.write_text("  \n")
    assert read_token(str(path)) is None  # empty
    path.write_text("abc\n")
    assert read_token(str(path)) == b"abc"


def test_no_token_file_refuses_every_write_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        auth = ControlAuth.from_env({Env.TOKEN_FILE: "/nonexistent/token"}, who="rank 0")
    assert auth.token is None
    assert "rank 0 has no control token" in caplog.text and "refuses every control write" in caplog.text
    assert auth.check("PUT", "Bearer anything") is Refusal.UNCONFIGURED
    assert ControlAuth.from_env({}).check("PUT", "Bearer anything") is Refusal.UNCONFIGURED


def _put(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


@pytest.fixture
def rank0() -> Iterator[tuple[str, AssignmentStore, WorkerMetrics]]:
    metrics = WorkerMetrics(rank=0, job="demo")
    store = AssignmentStore(Assignment(version=1, batch_sizes=(4, 4)), rank=0)
    routes = {**common_routes(metrics.registry, dict), **assignment_routes(store, dict)}
    server = HttpEndpoint(
        routes, host="127.0.0.1", port=0, auth=ControlAuth(TOKEN, on_refused=metrics.refused)
    ).start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}", store, metrics
    finally:
        server.stop()


def _refused(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # open to anyone
        text = response.read().decode()
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "paceline_worker_refused_writes"
    ]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_an_endpoint_refuses_and_counts_writes_without_the_token(
    rank0: tuple[str, AssignmentStore, WorkerMetrics],
) -> None:
    base, store, _ = rank0
    body = Assignment(version=2, batch_sizes=(2, 6)).to_json().encode()
    assert _refused(base) == {"missing": 0, "wrong": 0, "unconfigured": 0}
    status, headers = _put(f"{base}/assignment", body, {})
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert _put(f"{base}/assignment", body, authorization("guess"))[0] == 403
    assert _put(f"{base}/assignment", body, authorization("guess"))[0] == 403
    assert store.pending is None  # nothing it refused changed anything
    assert _refused(base) == {"missing": 1, "wrong": 2, "unconfigured": 0}
    assert _put(f"{base}/assignment", body, authorization(TOKEN.decode()))[0] == 202
    assert store.pending is not None and store.pending.batch_sizes == (2, 6)
    assert _refused(base) == {"missing": 1, "wrong": 2, "unconfigured": 0}


def test_a_refreshed_token_file_is_picked_up(tmp_path: Path) -> None:
    """A kubelet refreshes a mounted Secret: the endpoint compares against the file's new token."""
    path = tmp_path / "token"
    path.write_text("old")
    auth = ControlAuth.from_env({Env.TOKEN_FILE: str(path)})
    assert auth.check("PUT", "Bearer old") is None
    path.write_text("new")
    assert auth.check("PUT", "Bearer new") is None
    assert auth.check("PUT", "Bearer old") is Refusal.WRONG
    path.unlink()
    assert auth.check("PUT", "Bearer new") is None  # a vanished file never opens the door wider
    assert auth.check("PUT", "Bearer old") is Refusal.WRONG
