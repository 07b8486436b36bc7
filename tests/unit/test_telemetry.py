"""Telemetry: parse real worker exposition text; scrape and push against a real worker endpoint (loopback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from paceline.adapters.workers import put_json, scrape, scrape_all
from paceline.controller.samples import parse_worker_metrics
from paceline_worker.assignment_store import AssignmentStore
from paceline_worker.control_auth import ControlAuth
from paceline_worker.http_server import HttpEndpoint, assignment_routes, common_routes
from paceline_worker.metrics import StepTiming, WorkerMetrics
from paceline_worker.wire import Assignment


def _worker_metrics(rank: int, *, steps: int, batch: int = 6, version: int = 4) -> WorkerMetrics:
    metrics = WorkerMetrics(rank=rank, job="demo")
    metrics.observe_assignment(
        version=version, batch_size=batch, global_batch_size=20, step=3, applied_at=1e9
    )
    for i in range(steps):
        timing = StepTiming(data=0.01, compute=0.2 + 0.1 * i, communication=0.05)
        metrics.observe_step(timing=timing, samples=batch, loss=0.5, epoch=1)
    return metrics


def _text(metrics: WorkerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_parses_a_real_worker_registry() -> None:
    sample = parse_worker_metrics(_text(_worker_metrics(2, steps=3)), timestamp=123.5)
    assert (sample.rank, sample.job, sample.timestamp) == (2, "demo", 123.5)
    assert (sample.steps_total, sample.samples_total) == (3, 18)
    assert (sample.batch_size, sample.global_batch_size, sample.assignment_version) == (6, 20, 4)
    assert sample.compute_seconds == pytest.approx(0.2 + 0.3 + 0.4)
    assert sample.data_seconds == pytest.approx(0.03)
    assert sample.communication_seconds == pytest.approx(0.15)
    assert sample.step_seconds == pytest.approx(0.9 + 0.03 + 0.15)
    assert sample.last_compute_seconds == pytest.approx(0.4)
    assert sample.samples_per_second == pytest.approx(6 / 0.46)
    assert sample.compute_samples_per_second == pytest.approx(6 / 0.4)
    assert sample.simulated_slowdown_factor is None


def test_simulated_slowdown_factor_when_exported() -> None:
    metrics = _worker_metrics(0, steps=1)
    metrics.observe_simulation(3.0)
    assert parse_worker_metrics(_text(metrics), timestamp=0.0).simulated_slowdown_factor == 3.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "steps_total missing"),
        ("# TYPE other_total counter\nother_total 3\n", "steps_total missing"),
        ('paceline_worker_steps_total{rank="0"} 3\n', "samples_total.* missing"),
        ('paceline_worker_steps_total{rank="x"} 3\n', "rank label"),
        ("paceline_worker_steps_total{rank= 3 garbage\n", "malformed"),
    ],
)
def test_incomplete_or_malformed_text_is_rejected(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_worker_metrics(text, timestamp=0.0)


TOKEN = "job-token"


class _Endpoint:
    def __init__(self, rank: int, metrics: WorkerMetrics) -> None:
        self.store = AssignmentStore(Assignment(version=4, batch_sizes=(6, 14)), rank=rank)
        status = lambda: {"step": 3}  # noqa: E731
        routes = {**common_routes(metrics.registry, status), **assignment_routes(self.store, status)}
        auth = ControlAuth(TOKEN.encode())
        self.server = HttpEndpoint(routes, host="127.0.0.1", port=0, auth=auth).start()
        host, port = self.server.address
        self.base = f"http://{host}:{port}"


@pytest.fixture
def endpoints() -> Iterator[list[_Endpoint]]:
    started = [_Endpoint(rank, _worker_metrics(rank, steps=rank + 1)) for rank in (0, 1)]
    try:
        yield started
    finally:
        for endpoint in started:
            endpoint.server.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_scrape_all_over_http_keeps_reachable_ranks(endpoints: list[_Endpoint]) -> None:
    urls = {rank: f"{e.base}/metrics" for rank, e in enumerate(endpoints)}
    urls[2] = f"http://127.0.0.1:{_closed_port()}/metrics"
    urls[3] = f"{endpoints[0].base}/metrics"  # rank 0's endpoint listed as rank 3: dropped
    samples = scrape_all(urls, clock=lambda: 77.0)
    assert sorted(samples) == [0, 1]
    assert [samples[r].steps_total for r in (0, 1)] == [1, 2]
    assert samples[1].timestamp == 77.0
    assert scrape(f"{endpoints[0].base}/healthz") is None  # "ok", not metrics
    assert scrape(urls[2]) is None


def test_put_json_to_rank_zero(endpoints: list[_Endpoint]) -> None:
    url = f"{endpoints[0].base}/assignment"
    newer = Assignment(version=5, batch_sizes=(8, 12), learning_rate=0.1, momentum=0.9)
    assert put_json(url, newer.to_json(), token=TOKEN) == 202
    pending = endpoints[0].store.pending
    assert pending is not None and (pending.version, pending.batch_sizes) == (5, (8, 12))
    assert put_json(url, newer.to_json(), token=TOKEN) == 409
    changed_total = Assignment(version=6, batch_sizes=(8, 13), learning_rate=0.1, momentum=0.9)
    assert put_json(url, changed_total.to_json(), token=TOKEN) == 400
    assert put_json(f"{endpoints[1].base}/assignment", newer.to_json(), token=TOKEN) == 421
    newest = Assignment(version=7, batch_sizes=(10, 10))
    assert put_json(url, newest.to_json(), token="not-the-token") == 403
    assert endpoints[0].store.pending == pending  # refused: nothing changed
    with pytest.raises(OSError):
        put_json(f"http://127.0.0.1:{_closed_port()}/assignment", newer.to_json(), token=TOKEN)


def test_gpu_memory_reaches_the_sample_when_nvml_reports_it() -> None:
    """The worker's NVML collector and the operator's parser agree on the family (NVML itself stood in for:
    no GPU here)."""
    from types import SimpleNamespace

    from paceline_worker.gpu_metrics import NvmlCollector

    nvml = SimpleNamespace(
        nvmlDeviceGetUtilizationRates=lambda handle: SimpleNamespace(gpu=50),
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=1.0e9, total=4.0e10),
    )
    metrics = _worker_metrics(0, steps=1)
    assert parse_worker_metrics(_text(metrics), timestamp=0.0).gpu_memory_bytes is None
    metrics.registry.register(NvmlCollector(nvml, handle=None, labels={"rank": "0", "trainingjob": "demo"}))
    assert parse_worker_metrics(_text(metrics), timestamp=0.0).gpu_memory_bytes == 4.0e10
