"""Launch real multi-process worker groups (gloo on CPU, loopback only) and always stop them by PID."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from paceline_dev.control_token import CONTROL_TOKEN, control_token_file

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("worker_harness.py")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: Mapping[str, Any] | str | None = None, *, token: str | None = CONTROL_TOKEN
) -> tuple[int, dict[str, Any] | str]:
    """(status, decoded JSON or text) of one request (bearing `token`); HTTP errors are returned, not
    raised."""
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


class WorkerGroup:
    """WORLD_SIZE subprocesses running the harness with the operator's env contract."""

    def __init__(self, out: Path, *, assignment: Mapping[str, Any], args: list[str], env: Mapping[str, str]):
        self.out = out
        self.token = CONTROL_TOKEN  # the ranks' control token (PACELINE_TOKEN_FILE)
        self.world_size = len(assignment["batchSizes"])
        out.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("PACELINE_")}
        base.update(
            {
                "PYTHONPATH": os.pathsep.join([str(REPO / "worker-image"), base.get("PYTHONPATH", "")]),
                "MASTER_ADDR": LOOPBACK,
                "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
                "POD_IP": LOOPBACK,
                "PACELINE_JOB": "itest",
                "PACELINE_NAMESPACE": "default",
                "PACELINE_METRICS_PORT": "0",
                "PACELINE_BACKEND": "gloo",
                "PACELINE_PG_TIMEOUT_S": "60",
                "PACELINE_ASSIGNMENT": json.dumps(assignment),
                "PACELINE_TOKEN_FILE": str(control_token_file(out)),
                "OMP_NUM_THREADS": "1",
            }
        )
        base.update(env)
        self.procs: list[subprocess.Popen[bytes]] = []
        for rank in range(self.world_size):
            log = open(out / f"rank{rank}.log", "wb")  # noqa: SIM115  (closed by the child's exit)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(HARNESS), "--out", str(out), *args],
                    env={**base, "RANK": str(rank)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
            log.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- rank {r} ---\n" + (self.out / f"rank{r}.log").read_text(errors="replace")[-4000:]
            for r in range(self.world_size)
        )

    def port(self, rank: int, timeout: float = 40.0) -> int:
        path = self.out / f"rank{rank}.port"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text():
                return int(path.read_text())
            if self.procs[rank].poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"rank {rank} did not start serving\n{self.logs()}")

    def url(self, rank: int, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port(rank)}{path}"

    def http(
        self,
        method: str,
        rank: int,
        path: str,
        body: Mapping[str, Any] | str | None = None,
        *,
        token: str | None = CONTROL_TOKEN,
    ) -> tuple[int, Any]:
        return http(method, self.url(rank, path), body, token=token)

    def signal(self, rank: int, signum: int = signal.SIGTERM) -> None:
        self.procs[rank].send_signal(signum)

    def wait(self, timeout: float = 50.0) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in self.procs]
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"workers did not finish in {timeout}s\n{self.logs()}") from None

    def result(self, rank: int) -> dict[str, Any]:
        path = self.out / f"rank{rank}.json"
        assert path.exists(), f"rank {rank} wrote no result\n{self.logs()}"
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


class Launcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.groups: list[WorkerGroup] = []

    def __call__(
        self,
        name: str,
        *,
        assignment: Mapping[str, Any],
        args: list[str],
        env: Mapping[str, str] | None = None,
    ) -> WorkerGroup:
        group = WorkerGroup(self.root / name, assignment=assignment, args=args, env=env or {})
        self.groups.append(group)
        return group

    def stop_all(self) -> None:
        for group in self.groups:
            group.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def module_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("workers"))
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="session")
def toy_task() -> Any:
    """The harness's model and dataset factories, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("worker_toy_task", HARNESS.with_name("worker_toy_task.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
