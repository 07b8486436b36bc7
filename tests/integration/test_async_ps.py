"""A real PS shard process driven by protocol clients: τ measured exactly, live lr/momentum over HTTP,
/metrics parsed with prometheus_client, exit after every worker said goodbye."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paceline_dev.control_token import CONTROL_TOKEN, control_token_file
from paceline_worker.asynchronous import PsAddress, PsError, ShardConnection

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def request(
    method: str, url: str, body: str | None = None, *, token: str | None = CONTROL_TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        url, data=None if body is None else body.encode(), method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


class Processes:
    """Processes a test starts (each logs to `<logs>/<name>.log`); `kill_all` kills those still alive."""

    def __init__(self, logs: Path, base_env: dict[str, str]) -> None:
        self.logs_dir, self.base_env = logs, base_env
        self.procs: list[subprocess.Popen[bytes]] = []
        logs.mkdir()

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logs_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, env={**self.base_env, **env}, stdout=log, stderr=log, cwd=REPO)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs_dir.iterdir()))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


class PsProcess:
    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")}
        full_env.update(
            {
                "PYTHONPATH": str(REPO / "worker-image"),
                "PACELINE_ROLE": "ps",
                "PACELINE_PS_PORT": str(self.port),
                "PACELINE_METRICS_PORT": str(self.http_port),
                "PACELINE_JOB": "itest",
                "PACELINE_TOKEN_FILE": str(control_token_file(log_path.parent)),
                **env,
            }
        )
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paceline_worker.asynchronous.ps"],
                env=full_env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request("GET", self.url("/healthz"))[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"PS did not start\n{log_path.read_text()}")

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.http_port}{path}"

    def client(self, worker: str, shard: int = 0) -> ShardConnection:
        return ShardConnection(
            PsAddress(host=LOOPBACK, port=self.port), shard=shard, worker=worker, connect_timeout_s=10
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = request("GET", self.url("/metrics"))
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def start_ps(tmp_path: Path) -> Iterator[Any]:
    started: list[PsProcess] = []

    def start(**env: str) -> PsProcess:
        ps = PsProcess(tmp_path / f"ps{len(started)}.log", env)
        started.append(ps)
        return ps

    try:
        yield start
    finally:
        for ps in started:
            ps.stop()


def _labels(worker: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"trainingjob": "itest", "shard": "0", "worker": worker, **extra}.items()))


def test_staleness_is_the_version_difference_and_is_exported_per_worker(start_ps: Any) -> None:
    ps = start_ps()
    a, b = ps.client("a"), ps.client("b")
    zeros = np.zeros(4, np.float32)
    read, _ = a.init(fingerprint="toy", values=zeros, learning_rate=0.1, momentum=0.0)
    version, _ = b.init(fingerprint="toy", values=np.ones(4, np.float32), learning_rate=0.1, momentum=0.0)
    assert read == version == 0
    k = 5
    for _ in range(k):  # b keeps writing; each of its updates reads what its last push returned
        result, _ = b.push(read_version=version, gradient=zeros)
        assert result.staleness == 0
        version = result.version
    late, _ = a.push(read_version=read, gradient=zeros)
    assert (late.read_version, late.version, late.staleness) == (read, read + k + 1, k)
    samples = ps.metrics()
    assert samples[("paceline_ps_update_staleness_count", _labels("a"))] == 1
    assert samples[("paceline_ps_update_staleness_sum", _labels("a"))] == k
    assert samples[("paceline_ps_update_staleness_bucket", _labels("a", le=f"{k - 1}.0"))] == 0
    assert samples[("paceline_ps_update_staleness_bucket", _labels("a", le=f"{k}.0"))] == 1
    assert samples[("paceline_ps_update_staleness_count", _labels("b"))] == k
    assert samples[("paceline_ps_update_staleness_sum", _labels("b"))] == 0
    assert samples[("paceline_ps_updates_total", _labels("b"))] == k
    assert samples[("paceline_ps_model_version", (("shard", "0"), ("trainingjob", "itest")))] == k + 1
    status, log = request("GET", ps.url("/staleness?after=4"))
    assert status == 200
    assert [(u["index"], u["worker"], u["staleness"]) for u in log["updates"]] == [(4, "b", 0), (5, "a", k)]
    assert log["next"] == 6


def test_live_momentum_and_learning_rate_change_the_update_rule(start_ps: Any) -> None:
    ps = start_ps()
    assert request("PUT", ps.url("/hyperparameters"), '{"version": 1, "momentum": 0.5}')[0] == 503
    client = ps.client("0")
    version, values = client.init(
        fingerprint="toy", values=np.array([1.0, 2.0], np.float32), learning_rate=0.5, momentum=0.0
    )
    g = np.array([1.0, -1.0], np.float32)
    result, values = client.push(read_version=version, gradient=g)
    np.testing.assert_allclose(values, [0.5, 2.5])
    status, body = request("PUT", ps.url("/hyperparameters"), '{"version": 1, "momentum": 0.5}')
    assert status == 200
    assert body["current"] == {"version": 1, "learningRate": 0.5, "momentum": 0.5}
    assert body["appliedAtModelVersion"] == 1
    result, values = client.push(read_version=result.version, gradient=g)
    assert result.momentum == 0.5
    np.testing.assert_allclose(values, [0.5 - 0.75, 2.5 + 0.75])  # buf = 0.5·g + g, lr 0.5
    assert request("PUT", ps.url("/hyperparameters"), '{"version": 1, "momentum": 0.1}')[0] == 409
    assert request("PUT", ps.url("/hyperparameters"), '{"version": 2, "momentum": 1.5}')[0] == 400
    assert request("PUT", ps.url("/hyperparameters"), '{"version": 2, "learningRate": 0.1}')[0] == 200
    result, values2 = client.push(read_version=result.version, gradient=np.zeros(2, np.float32))
    np.testing.assert_allclose(values2, values - 0.1 * 0.5 * np.array([1.5, -1.5]), rtol=1e-6)
    samples = ps.metrics()
    gauge_labels = (("shard", "0"), ("trainingjob", "itest"))
    assert samples[("paceline_ps_momentum", gauge_labels)] == 0.5
    assert samples[("paceline_ps_learning_rate", gauge_labels)] == 0.1
    assert samples[("paceline_ps_hyperparameters_version", gauge_labels)] == 2
    history = request("GET", ps.url("/hyperparameters"))[1]["applied"]
    assert [(h["version"], h["appliedAtModelVersion"]) for h in history] == [(0, 0), (1, 1), (2, 2)]


def test_environment_hyperparameters_misrouted_workers_and_exit_after_goodbyes(start_ps: Any) -> None:
    ps = start_ps(
        WORLD_SIZE="2",
        PACELINE_PS_LINGER_S="0.2",
        PACELINE_HYPERPARAMETERS='{"version": 3, "momentum": 0.25}',
    )
    with pytest.raises(PsError, match="this is shard 0"):
        ps.client("x", shard=1).init(
            fingerprint="toy", values=np.zeros(1, np.float32), learning_rate=1.0, momentum=0.9
        )
    first, second = ps.client("0"), ps.client("1")
    first.init(fingerprint="toy", values=np.zeros(3, np.float32), learning_rate=0.2, momentum=0.9)
    with pytest.raises(PsError, match="layout"):
        second.init(fingerprint="other", values=np.zeros(3, np.float32), learning_rate=0.2, momentum=0.9)
    assert request("GET", ps.url("/hyperparameters"))[1]["current"] == {
        "version": 3,
        "learningRate": 0.2,
        "momentum": 0.25,
    }
    first.bye()
    time.sleep(0.5)
    assert ps.proc.poll() is None  # one of two workers finished: keep serving
    second.bye()
    assert ps.proc.wait(timeout=15) == 0


def test_max_staleness_drops_stale_updates_and_counts_them_in_metrics_and_status(start_ps: Any) -> None:
    ps = start_ps(PACELINE_MAX_STALENESS="1")
    fast, slow = ps.client("fast"), ps.client("slow")
    start = np.array([1.0, 1.0], np.float32)
    read, _ = slow.init(fingerprint="toy", values=start, learning_rate=1.0, momentum=0.0)
    version, _ = fast.init(fingerprint="toy", values=start, learning_rate=1.0, momentum=0.0)
    for _ in range(2):
        result, values = fast.push(read_version=version, gradient=np.ones(2, np.float32))
        version = result.version
    late, returned = slow.push(read_version=read, gradient=np.full(2, 50.0, np.float32))
    assert (late.staleness, late.dropped, late.version) == (2, True, 2)
    np.testing.assert_allclose(returned, values)  # not applied; the worker gets the current model back
    fresh, _ = slow.push(read_version=late.version, gradient=np.zeros(2, np.float32))
    assert (fresh.staleness, fresh.dropped, fresh.version) == (0, False, 3)
    samples = ps.metrics()
    assert samples[("paceline_ps_dropped_updates_total", _labels("slow"))] == 1
    assert samples[("paceline_ps_update_staleness_count", _labels("slow"))] == 1  # the applied one only
    status = request("GET", ps.url("/status"))[1]
    assert (status["maxStaleness"], status["droppedUpdates"], status["version"]) == (1, 1, 3)
    page = request("GET", ps.url("/staleness?after=0"))[1]
    assert [u["worker"] for u in page["updates"]] == ["fast", "fast", "slow"]
